"""Configuration: a typed schema, YAML defaults and presets, OmegaConf dotlist overrides, strict checks.

Values come from ``configs/defaults.yaml``, then ``configs/experiment/<name>.yaml`` (only the
differences), then ``key=value`` overrides. Every mistake is one :class:`~afl.errors.ConfigError`
naming the key: unknown keys, wrong types, impossible values, unknown component names or options.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from afl.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class SyntheticConfig:
    """Options of the ``synthetic`` data set; ``null`` keeps the data set's own default (its loader
    checks the ranges, for callers of :func:`afl.data.datasets.load_dataset` too)."""

    train_size: int | None = None
    test_size: int | None = None
    num_classes: int | None = None
    image_size: int | None = None
    channels: int | None = None
    noise: float | None = None
    seed: int | None = None


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING
    download: bool = MISSING
    train_subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = MISSING
    normalize: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)  # the data set loader's own options
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class PartitionConfig:
    scheme: str = MISSING
    num_clients: int = MISSING
    alpha: float = MISSING
    min_samples: int = MISSING
    shards_per_client: int = MISSING


@dataclass
class ClientConfig:
    local_epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    optimizer: str = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    timeout_s: float | None = None
    callbacks: list[Any] = field(default_factory=list)  # names or {name: ..., options}: afl.client.callbacks
    prox_mu: float = MISSING
    optimizer_reset: str = MISSING


@dataclass
class FaultsConfig:
    rate: float = MISSING
    kinds: list[str] = field(default_factory=list)
    slow_factor: float = MISSING


@dataclass
class FederationConfig:
    mode: str = MISSING
    concurrency: int = MISSING
    max_updates: int = MISSING
    eval_every: int = MISSING
    executor: str = MISSING
    workers: int = MISSING
    torch_threads: int = MISSING
    sampling: dict[str, Any] = field(default_factory=dict)  # name, and the policy's own options


@dataclass
class TrainerConfig:
    """Lightning's device settings of client training and evaluation (:mod:`afl.client.device`)."""

    accelerator: str = MISSING
    devices: Any = MISSING  # 1 | auto | [k]
    precision: str = MISSING
    deterministic: Any = MISSING  # true | false | warn
    compile: str = MISSING  # none | torch.compile's mode for the client's training step


@dataclass
class ServerConfig:
    aggregator: dict[str, Any] = field(default_factory=dict)
    lr_schedule: dict[str, Any] = field(default_factory=dict)
    max_delta_norm: float | None = None


@dataclass
class DelayConfig:
    time_per_sample: float = MISSING
    speed: dict[str, Any] = field(default_factory=dict)
    comm: dict[str, Any] = field(default_factory=dict)
    max_staleness: int | None = None
    staleness_policy: str = MISSING


@dataclass
class WandbConfig:
    mode: str = MISSING
    project: str = MISSING
    entity: str | None = None
    group: str | None = None  # None: the experiment (afl-compare and afl-sweep give each their own)
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = MISSING
    target_accuracy: float | None = None
    final_window: int = MISSING  # evaluations averaged for the headline accuracy


@dataclass
class TheoryConfig:
    enabled: bool = MISSING
    samples_per_client: int = MISSING
    max_clients: int | None = None


@dataclass
class CheckpointConfig:
    every: int | None = None  # client updates between checkpoints; None: by wall time (every_s); 0: never
    every_s: float = MISSING


@dataclass
class RayConfig:
    """Read only with ``federation.executor=ray`` (:mod:`afl.sim.ray_executor`)."""

    address: str | None = None
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    max_retries: int = MISSING


@dataclass
class CohortConfig:
    """Read only with ``federation.executor=cohort`` (:mod:`afl.client.cohort`)."""

    max_clients: int | None = None


@dataclass
class CompareConfig:
    """Per arm, the overrides a preset records for it (:func:`afl.arms.rule_overrides`): the step sizes
    selected on validation data for a built-in arm, or the whole definition of an arm of the preset's own.
    Applied to every run of that arm, single runs and comparisons alike."""

    arms: dict[str, list[str]] = field(default_factory=dict)  # arm -> its selected overrides


@dataclass
class Config:
    """The schema: every key a user may set, with its type. Values live in ``configs/``."""

    experiment: str = MISSING
    arm: str = MISSING  # the rule (afl.arms): its overrides, then the preset's selected step sizes
    seed: int = MISSING
    output_dir: str | None = None
    resume: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: dict[str, Any] = field(default_factory=dict)  # name, and the model's own options
    plugins: list[str] = field(default_factory=list)  # modules to import first (afl.plugins)
    client: ClientConfig = field(default_factory=ClientConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    delay: DelayConfig = field(default_factory=DelayConfig)
    availability: dict[str, Any] = field(default_factory=dict)  # name, and the model's own options
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    cohort: CohortConfig = field(default_factory=CohortConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)


#: Keys that may differ between the run that wrote a checkpoint and the run that resumes it: they change
#: how or where the run is computed, or how it is reported (``logging.*``), not what it computes. Its
#: models and evaluations are identical, except equal to float rounding where the arithmetic changes:
#: ``trainer.accelerator`` (GPU or CPU), ``trainer.compile``, ``cohort.max_clients``, and
#: ``federation.executor`` to or from ``cohort`` (the in-flight jobs train again in other cohorts;
#: docs/cohort.md).
RESUMABLE_KEYS = (
    "resume",
    "output_dir",
    "federation.workers",
    "federation.executor",  # (to or from cohort: floats differ in the last bits)
    "trainer.accelerator",  # a run started on a GPU may go on on a CPU (floats differ in the last bits)
    "trainer.devices",
    "trainer.compile",  # compiled or not: floats differ in the last bits
    "logging.progress",
    "logging.wandb.mode",
    "logging.wandb.group",
    "logging.final_window",
    "checkpoint.every",
    "checkpoint.every_s",
    "ray.address",
    "ray.num_cpus",
    "ray.num_gpus",
    "ray.max_retries",
    "cohort.max_clients",  # (cohorts of other sizes: floats differ in the last bits)
)


def experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the presets in ``configs/experiment/``."""
    return sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))


def _omegaconf_error(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = str(getattr(err, "full_key", "") or "") or "config"
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return ConfigError(
            key,
            f"unknown key (from {source}); see the keys under "
            f"{parent or 'the top level'} in configs/defaults.yaml",
        )
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(key, f"wrong type (from {source}): {msg}")
    return ConfigError(key, f"{str(err).splitlines()[0]} (from {source})")


# Config nodes that name a pluggable component: picking another ``name`` in a later layer (preset or
# command line) starts that node afresh, so options of the old component do not leak into the new one.
COMPONENT_KEYS = (
    "model",
    "server.aggregator",
    "server.aggregator.staleness",
    "server.lr_schedule",
    "delay.speed",
    "delay.comm",
)


def _merge(cfg: DictConfig, other: Any, source: str) -> DictConfig:
    for key in COMPONENT_KEYS:
        new = OmegaConf.select(other, f"{key}.name", default=None)
        old = OmegaConf.select(cfg, f"{key}.name", default=None)
        if new is not None and old is not None and new != old:
            OmegaConf.update(cfg, key, {}, merge=False)
    try:
        merged = OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err, source) from None
    assert isinstance(merged, DictConfig)
    return merged


EMPTY = {
    "output_dir": "is empty: give a folder (output_dir=runs/mine), or leave it out for a new auto-named one",
    "experiment": "is empty: give a preset's name (see --help) or a file path/to/preset.yaml",
    "resume": "is empty: give the folder of the run to continue",
    "arm": "is empty: give an arm's name (afl-compare --help lists them)",
}


def _parse_overrides(overrides: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """``(experiment, resume, the other overrides)``."""
    experiment, resume, rest = None, None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "expected key=value (e.g. federation.concurrency=8)")
        if key.lstrip("+") in ("output_dir", "experiment", "resume", "arm") and not value.strip():
            raise ConfigError(key.lstrip("+"), EMPTY[key.lstrip("+")])
        if key.lstrip("+") == "experiment":
            experiment = value
        elif key.lstrip("+") == "resume":
            resume = value
        else:
            rest.append(item)
    return experiment, resume, rest


def preset_path(experiment: str, config_dir: Path = CONFIG_DIR) -> tuple[Path, str]:
    """The file of ``experiment=...`` and the experiment's name: a preset's name (``configs/experiment/``),
    or a YAML file of one's own (``experiment=path/to/mine.yaml``, named after the file: ``mine``)."""
    if experiment.endswith((".yaml", ".yml")):
        path = Path(experiment).expanduser()
        if not path.is_file():
            raise ConfigError("experiment", f"no file {experiment} (a preset of one's own: a YAML file)")
        return path, path.stem
    if experiment not in experiments(config_dir):  # a name, never a path (../defaults)
        raise ConfigError(
            "experiment",
            f"unknown experiment {experiment!r}; available: {', '.join(experiments(config_dir))}, "
            "or a file path/to/preset.yaml",
        )
    return config_dir / "experiment" / f"{experiment}.yaml", experiment


def _load_yaml(path: Path, key: str) -> Any:
    try:
        return OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as err:  # unreadable or not YAML
        raise ConfigError(key, f"cannot read {path}: {str(err).splitlines()[0]}") from None


def load_config(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose the config: schema ← defaults ← ``experiment=NAME`` preset (or ``experiment=FILE.yaml``)
    ← dotlist overrides; then import its ``plugins`` and check it (:func:`validate`).

    Example:
        >>> cfg = load_config(["experiment=demo", "federation.concurrency=3"])
        >>> cfg.dataset.name, cfg.federation.concurrency
        ('digits', 3)
    """
    experiment, resume, dotlist = _parse_overrides(overrides)
    cfg = OmegaConf.structured(Config)
    cfg = _merge(cfg, OmegaConf.load(config_dir / "defaults.yaml"), "configs/defaults.yaml")
    if resume is not None:
        return _resume_config(cfg, resume, experiment, dotlist)
    if experiment is not None:
        path, name = preset_path(experiment, config_dir)
        preset = _load_yaml(path, "experiment")
        cfg = _merge(cfg, preset, str(path))
        cfg.experiment = name
        if OmegaConf.select(preset, "compare.arms") is not None:  # a preset's arms replace the defaults'
            cfg.compare.arms = preset.compare.arms
    cfg = _with_arm(cfg, dotlist)
    cfg = _merge_dotlist(cfg, dotlist)
    validate(cfg)
    return cfg


def _with_arm(cfg: DictConfig, dotlist: Sequence[str]) -> DictConfig:
    """The preset ``cfg`` with its arm's rule and selected step sizes merged in (:mod:`afl.arms`): the
    arm the command line names (``arm=``), else the one its rule implies, else the preset's. Arms of the
    preset's own (``compare.arms``, the command line's too) count, and so does every aggregator by its
    name (a plug-in's: an arm of its name, on the defaults' other settings)."""
    from afl import plugins
    from afl.arms import IDENTITY_KEYS, implied_arm, rule_overrides

    given = {k.lstrip("+"): v for k, _, v in (item.partition("=") for item in dotlist)}
    explicit = given.get("arm")
    implied = None if explicit is not None else implied_arm(given)
    arm = explicit or implied or str(cfg.arm)
    probe = _merge_dotlist(
        cfg.copy(), [i for i in dotlist if i.lstrip("+").startswith(("compare.", "plugins"))]
    )
    own = {str(k): [str(o) for o in v] for k, v in probe.compare.arms.items()}
    rule = rule_overrides(arm, own)
    if rule is None and arm == implied:
        rule = []  # an aggregator without an arm of its own (a plug-in): an arm of its name
    if rule is None:
        from afl.server.aggregators import AGGREGATORS

        plugins.load(list(probe.plugins))
        if arm in AGGREGATORS.names():
            rule = [f"server.aggregator.name={arm}"]
    if rule is None:
        from afl.arms import ARMS

        allowed = ", ".join([*ARMS, *(n for n in own if n not in ARMS)])
        raise ConfigError("arm", f"unknown arm {arm!r}; allowed: {allowed} (or define one in compare.arms)")
    if explicit is not None:
        sets = {k: v for k, _, v in (item.partition("=") for item in rule)}
        for key in IDENTITY_KEYS:
            if key in given and key in sets and given[key] != sets[key]:
                raise ConfigError(
                    key,
                    f"arm {arm} runs {key}={sets[key]}, not {given[key]}: leave out arm= to run the "
                    f"arm of {given[key]}, or leave out {key}",
                )
    try:
        layer = OmegaConf.from_dotlist(rule)
    except OmegaConfBaseException as err:
        raise ConfigError(f"compare.arms.{arm}", str(err).splitlines()[0]) from None
    cfg = _merge(cfg, layer, f"arm {arm}")
    cfg.arm = arm
    return cfg


def _merge_dotlist(cfg: DictConfig, dotlist: list[str]) -> DictConfig:
    """The command line's ``key=value`` overrides on top of ``cfg``."""
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as err:
        raise ConfigError(str(getattr(err, "full_key", "") or dotlist), str(err).splitlines()[0]) from None
    return _merge(cfg, cli, "the command line")


def _resume_config(cfg: DictConfig, folder: str, experiment: str | None, dotlist: list[str]) -> DictConfig:
    """``resume=FOLDER``: the run's own ``config.yaml`` on top of the defaults; on the command line only
    the :data:`RESUMABLE_KEYS` (models and evaluations identical, or equal to float rounding: see there)
    may be given."""
    saved = Path(folder) / "config.yaml"
    if not saved.is_file():
        raise ConfigError("resume", f"{folder} is not a run folder (it has no config.yaml)")
    try:
        cfg = _merge(cfg, OmegaConf.load(saved), str(saved))
    except (OSError, OmegaConfBaseException, ValueError) as err:  # unreadable or not YAML
        raise ConfigError("resume", f"cannot read {saved}: {str(err).splitlines()[0]}") from None
    if experiment is not None and experiment != cfg.experiment:
        raise ConfigError("experiment", f"the run in {folder} is of experiment {cfg.experiment!r}")
    changeable = ", ".join(k for k in RESUMABLE_KEYS if k not in ("resume", "output_dir"))
    for item in dotlist:
        key = item.partition("=")[0].lstrip("+")
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                key,
                "cannot be changed when resuming: a run continues with the settings it started with "
                f"(only {changeable} may be given)",
            )
    if OmegaConf.select(OmegaConf.load(saved), "arm") is None:  # a run from before arms: its rule's arm
        from afl.arms import ARM_OF_AGGREGATOR

        name = str(cfg.server.aggregator.get("name"))
        cfg.arm = ARM_OF_AGGREGATOR.get(name, name)
    cfg = _merge_dotlist(cfg, dotlist)
    cfg.resume = folder
    cfg.output_dir = folder
    validate(cfg)
    return cfg


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


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check every value that a type cannot: choices, ranges, relations, and the components' options.

    Returns:
        The pluggable components, built (see :func:`build_components`).
    """
    from afl import plugins

    plugins.load(list(cfg.plugins))  # first: they register the components the checks below look up
    _check_no_missing(cfg)
    _check_choices(cfg)
    _check_ranges(cfg)
    if cfg.federation.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("federation.executor", 'ray needs the optional extra: pip install -e ".[ray]"')
    _check_limits(cfg)
    _check_fault_kinds(cfg)
    check_relations(cfg)
    return build_components(cfg)


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
    names = [c if isinstance(c, str) else c.get("name") for c in cfg.client.callbacks]
    for i, spec in enumerate(_client_callbacks(cfg)):
        if not spec.in_cohort:
            key = f"client.callbacks[{i}]" if i < len(names) else "client.prox_mu"
            what = names[i] if i < len(names) else "the proximal term"
            raise ConfigError(
                key,
                f"{what} cannot run in a cohort (federation.executor=cohort): use federation.executor=thread",
            )


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


def build_components(cfg: DictConfig) -> dict[str, Any]:
    """Build (and so validate) the pluggable server and delay components named in the config.

    Only client callbacks need a heavy import to be checked (Lightning: their own argument checks run in
    their constructors), and only when ``client.callbacks`` or ``client.prox_mu`` asks for some."""
    from afl.server.aggregators import AGGREGATORS
    from afl.server.lr_schedules import LR_SCHEDULES
    from afl.sim.availability import AVAILABILITY
    from afl.sim.delays import COMM_DELAYS, SPEEDS
    from afl.sim.sampling import SAMPLERS

    def plain(key: str) -> dict[str, Any]:
        return to_dict(OmegaConf.select(cfg, key))

    return {
        "aggregator": AGGREGATORS.build(plain("server.aggregator"), "server.aggregator"),
        "lr_schedule": LR_SCHEDULES.build(plain("server.lr_schedule"), "server.lr_schedule"),
        "speed": SPEEDS.build(plain("delay.speed"), "delay.speed"),
        "comm": COMM_DELAYS.build(plain("delay.comm"), "delay.comm"),
        "sampler": SAMPLERS.build(plain("federation.sampling"), "federation.sampling"),
        "availability": AVAILABILITY.build(plain("availability"), "availability"),
        "client_callbacks": _client_callbacks(cfg),
    }


def _client_callbacks(cfg: DictConfig) -> list[Any]:
    if not cfg.client.callbacks and cfg.client.prox_mu <= 0:
        return []  # what build_client_callbacks gives, without importing Lightning
    from afl.client.callbacks import build_client_callbacks

    return build_client_callbacks(cfg)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
