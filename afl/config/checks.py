"""The checks of a composed config: every value a type cannot check (choices, ranges, relations between
keys) and the pluggable components' names and options, checked against their constructors' signatures.
They build nothing: a component's own checks of its values run when the run builds it, once
(:func:`afl.experiments.components.build_components`)."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from afl.errors import ConfigError


def _choice(cfg: DictConfig, key: str, allowed: Sequence[str]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; allowed: {', '.join(allowed)}")


def _at_least(cfg: DictConfig, key: str, low: float, strict: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None:
        return
    if not math.isfinite(value):  # nan passes every comparison; inf is no setting
        raise ConfigError(key, f"must be a finite number, got {value}")
    if value < low or (strict and value == low):
        raise ConfigError(key, f"must be {'>' if strict else '>='} {low}, got {value}")


def _within(cfg: DictConfig, key: str, low: float, high: float, high_open: bool = False) -> None:
    _at_least(cfg, key, low)
    value = OmegaConf.select(cfg, key)
    if value is not None and (value > high or (high_open and value == high)):
        raise ConfigError(key, f"must be in [{low}, {high}{')' if high_open else ']'}, got {value}")


def to_dict(node: Any) -> dict[str, Any]:
    """A config node (a mapping) as a plain dict with string keys, interpolations resolved."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def check(cfg: DictConfig) -> None:
    """Check every value that a type cannot: choices, ranges, relations, and the components' names and
    options (against their signatures). Builds nothing; imports the config's ``plugins`` first (they
    register the components the checks look up).

    Raises:
        ConfigError: the first mistake, naming its key.
    """
    from afl import plugins

    plugins.load(list(cfg.plugins))
    _check_no_missing(cfg)
    _check_choices(cfg)
    _check_ranges(cfg)
    if cfg.federation.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("federation.executor", 'ray needs the optional extra: pip install -e ".[ray]"')
    _check_limits(cfg)
    _check_fault_kinds(cfg)
    check_relations(cfg)
    _check_components(cfg)


#: The config nodes that name a pluggable component built by every run: the component's name in the run
#: (:func:`afl.experiments.components.build_components`) and its registry ("module:attribute", imported when
#: checked, so that a config error answers without importing torch).
COMPONENTS = {
    "server.aggregator": ("aggregator", "afl.server.aggregators:AGGREGATORS"),
    "server.lr_schedule": ("lr_schedule", "afl.server.lr_schedules:LR_SCHEDULES"),
    "delay.speed": ("speed", "afl.sim.delays:SPEEDS"),
    "delay.comm": ("comm", "afl.sim.delays:COMM_DELAYS"),
    "federation.sampling": ("sampler", "afl.sim.sampling:SAMPLERS"),
    "availability": ("availability", "afl.sim.availability:AVAILABILITY"),
}


def registry_of(key: str) -> Any:
    """The registry of the component node ``key`` (one of :data:`COMPONENTS`)."""
    module, _, attr = COMPONENTS[key][1].partition(":")
    return getattr(importlib.import_module(module), attr)


def _check_components(cfg: DictConfig) -> None:
    """Each component node names a registered component and only its options, of their types."""
    for key in COMPONENTS:
        registry_of(key).check(to_dict(OmegaConf.select(cfg, key)), key)
    _client_callbacks(cfg)


def _check_no_missing(cfg: DictConfig) -> None:
    """Every key has a value: the first one (in sorted order) that lacks one is named."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], "has no value (set it in configs/defaults.yaml or on the command line)")


def _check_choices(cfg: DictConfig) -> None:
    """Each key that names one of a set of choices names one of them; the model's and the dataset's
    options fit their signatures; ``trainer.deterministic`` and ``trainer.devices`` are allowed values."""
    # light modules only: a config error answers without importing torch or Lightning
    # (tests/integration/test_cli.py)
    from afl.client import ACCELERATORS, COMPILE_MODES, OPTIMIZER_RESETS, OPTIMIZERS, PRECISIONS
    from afl.data import DATASET_LOADERS as DATASETS
    from afl.data import NORMALIZATIONS
    from afl.data import SCHEMES as PARTITIONERS
    from afl.models import MODELS
    from afl.sim.executors import EXECUTORS
    from afl.sim.modes import MODES, STALENESS_POLICIES

    _choice(cfg, "dataset.name", DATASETS.names())
    _choice(cfg, "partition.scheme", PARTITIONERS.names())
    _choice(cfg, "model.name", MODELS.names())
    if len(cfg.model) > 1:  # options: checked against the model's signature (imports its module)
        from afl.models import MODEL_INPUTS

        MODELS.check(to_dict(cfg.model), "model", given=MODEL_INPUTS)
    if cfg.dataset.options:
        options = {"name": cfg.dataset.name, **to_dict(cfg.dataset.options)}
        DATASETS.check(options, "dataset.options", given=("root", "download"))
    _choice(cfg, "client.optimizer", OPTIMIZERS.names())
    _choice(cfg, "client.optimizer_reset", OPTIMIZER_RESETS)
    _choice(cfg, "dataset.normalize", NORMALIZATIONS)
    _choice(cfg, "federation.mode", MODES)
    _choice(cfg, "federation.executor", EXECUTORS.names())
    _choice(cfg, "delay.staleness_policy", STALENESS_POLICIES)
    _choice(cfg, "logging.wandb.mode", ("offline", "online", "disabled"))
    _choice(cfg, "trainer.accelerator", ACCELERATORS)
    _choice(cfg, "trainer.precision", PRECISIONS)
    _choice(cfg, "trainer.compile", COMPILE_MODES)
    deterministic = cfg.trainer.deterministic
    if type(deterministic) is not bool and deterministic != "warn":
        raise ConfigError("trainer.deterministic", f"got {deterministic!r}; allowed: true, false, warn")
    _check_devices(cfg.trainer.devices)


def _check_ranges(cfg: DictConfig) -> None:
    """The counts, rates, fractions and Ray's resources lie in their ranges."""
    for key in (
        "seed",
        "client.momentum",
        "client.weight_decay",
        "delay.time_per_sample",
        "delay.max_staleness",
        "client.prox_mu",
    ):
        _at_least(cfg, key, 0)
    for key in (
        "partition.num_clients",
        "partition.min_samples",  # an empty client has nothing to train on
        "partition.shards_per_client",
        "client.local_epochs",
        "client.batch_size",
        "federation.concurrency",
        "federation.max_updates",
        "federation.eval_every",
        "federation.workers",
        "federation.torch_threads",
        "dataset.train_subset",
        "dataset.test_subset",
        "theory.samples_per_client",
        "theory.max_clients",
        "cohort.max_clients",
        "logging.final_window",
    ):
        _at_least(cfg, key, 1)
    for key in ("client.lr", "partition.alpha"):
        _at_least(cfg, key, 0, strict=True)
    _within(cfg, "dataset.val_fraction", 0, 1, high_open=True)
    _within(cfg, "faults.rate", 0, 1)
    _within(cfg, "logging.target_accuracy", 0, 1)
    _at_least(cfg, "checkpoint.every", 0)
    _at_least(cfg, "ray.num_cpus", 0, strict=True)
    _at_least(cfg, "ray.max_retries", 0)
    _at_least(cfg, "ray.num_gpus", 0)


def _check_limits(cfg: DictConfig) -> None:
    """The time limits and the norm bound are positive; a slow fault slows by a factor of at least 1."""
    _at_least(cfg, "checkpoint.every_s", 0, strict=True)
    for key in ("client.timeout_s", "server.max_delta_norm"):
        _at_least(cfg, key, 0, strict=True)
    _at_least(cfg, "faults.slow_factor", 1)


def _check_fault_kinds(cfg: DictConfig) -> None:
    """``faults.kinds`` names one or more known kinds of fault."""
    from afl.sim.faults import FAULT_KINDS

    if not cfg.faults.kinds or any(k not in FAULT_KINDS for k in cfg.faults.kinds):
        raise ConfigError(
            "faults.kinds", f"got {list(cfg.faults.kinds)}; give one or more of {', '.join(FAULT_KINDS)}"
        )


def _check_devices(devices: Any) -> None:
    """``trainer.devices``: 1, auto, or one CUDA device index [k] (a client trains on one device)."""
    if isinstance(devices, ListConfig) and len(devices) == 1 and type(devices[0]) is int and devices[0] >= 0:
        return
    if devices in (1, "auto") and type(devices) is not bool:
        return
    shown = list(devices) if isinstance(devices, ListConfig) else repr(devices)
    raise ConfigError(
        "trainer.devices",
        f"got {shown}; a client trains on one device: 1, auto or [k] (many GPUs: federation.executor=ray "
        "with ray.num_gpus)",
    )


def _check_cohort(cfg: DictConfig) -> None:
    """What ``federation.executor=cohort`` cannot train (:mod:`afl.client.cohort`), named."""
    from afl.client import COHORT_OPTIMIZERS

    if cfg.client.optimizer not in COHORT_OPTIMIZERS:
        raise ConfigError(
            "client.optimizer",
            f"{cfg.client.optimizer} cannot train in a cohort (federation.executor=cohort trains "
            f"{', '.join(COHORT_OPTIMIZERS)}): use federation.executor=thread",
        )
    if cfg.trainer.compile != "none":
        raise ConfigError(
            "trainer.compile",
            f"{cfg.trainer.compile} cannot compile a cohort's vectorized step (federation.executor=cohort): "
            "use trainer.compile=none, or federation.executor=thread",
        )
    if cfg.trainer.precision == "16-mixed":
        raise ConfigError(
            "trainer.precision",
            "16-mixed cannot train in a cohort (one loss scale would skip every client's step when one "
            "overflows): use bf16-mixed, or federation.executor=thread",
        )
    for entry in _client_callbacks(cfg):
        if not entry.cls.in_cohort:
            what = "the proximal term" if entry.key == "client.prox_mu" else entry.name
            raise ConfigError(
                entry.key,
                f"{what} cannot run in a cohort (federation.executor=cohort): use federation.executor=thread",
            )


def _client_callbacks(cfg: DictConfig) -> list[Any]:
    """The client callbacks the config asks for, checked
    (:func:`afl.client.callbacks.check_client_callbacks`); none asked for, none checked (without
    importing Lightning)."""
    if not cfg.client.callbacks and cfg.client.prox_mu <= 0:
        return []
    from afl.client.callbacks import check_client_callbacks

    return check_client_callbacks(cfg)


def check_relations(cfg: DictConfig) -> None:
    """Checks between keys, all in one place (only those that need the data, such as
    ``partition.min_samples`` against the number of samples, wait until the data is loaded)."""
    if cfg.federation.concurrency > cfg.partition.num_clients:
        raise ConfigError(
            "federation.concurrency",
            f"J={cfg.federation.concurrency} clients in flight cannot "
            f"exceed partition.num_clients={cfg.partition.num_clients}",
        )
    if cfg.server.aggregator.get("name") == "fedavg" and "buffer_size" in cfg.server.aggregator:
        raise ConfigError(
            "server.aggregator.buffer_size",
            "fedavg aggregates whole barrier rounds of J = federation.concurrency clients and takes no "
            "buffer_size; for buffered asynchronous aggregation use fedbuff, or afl with buffer_size",
        )
    if cfg.federation.executor == "ray":
        accelerator, gpus = cfg.trainer.accelerator, cfg.ray.num_gpus
        if gpus and accelerator == "cpu":
            raise ConfigError(
                "ray.num_gpus",
                f"{gpus:g} GPUs reserved for actors that train on the CPU (trainer.accelerator=cpu)",
            )
        if not gpus and accelerator in ("gpu", "cuda"):
            raise ConfigError(
                "ray.num_gpus",
                "is 0, and Ray hides the GPUs from actors that reserve none: give each actor a share "
                "(0.2: five actors on one GPU)",
            )
    if cfg.federation.executor == "cohort":
        _check_cohort(cfg)
    # each aggregator names the federation modes its rule is for: sync ⇒ fedavg, fedavg ⇒ sync
    from afl.server.aggregators import AGGREGATORS

    mode, name = cfg.federation.mode, str(cfg.server.aggregator.get("name"))
    if mode in AGGREGATORS.get(name, "server.aggregator.name").modes:  # type: ignore[attr-defined]
        return
    fitting = [n for n in AGGREGATORS.names() if mode in AGGREGATORS.get(n).modes]  # type: ignore[attr-defined]
    if mode == "sync":
        raise ConfigError(
            "federation.mode",
            f"sync runs synchronous FedAvg: also set server.aggregator.name={' or '.join(fitting)} "
            f"(got {name!r})",
        )
    raise ConfigError(
        "server.aggregator.name",
        f"{name} is the synchronous barrier rule: set federation.mode=sync, or pick an aggregator for "
        f"{mode} mode: {', '.join(fitting)}",
    )
