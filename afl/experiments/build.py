"""What a run is built from, before anything is written: data, validation split, partition, initial model,
client runtime and delay model (:func:`build`); the executor and the federated loop on it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from afl.client.device import Placement, resolve
from afl.client.runtime import ClientRuntime, ClientShards
from afl.config import to_dict
from afl.data.datasets import ArrayData, DatasetSplits, load_dataset
from afl.data.partition import class_counts, partition, stratified_split
from afl.errors import ConfigError
from afl.experiments.components import build_components
from afl.experiments.evaluation import evaluate, gradient_statistics
from afl.messages import State
from afl.models import build_model, count_parameters
from afl.rng import derive_rng, derive_seed
from afl.sim.delays import DelayModel
from afl.sim.executors import EXECUTORS, Executor, TrainFn
from afl.sim.faults import FaultModel
from afl.sim.loop import FederatedLoop, LoopConfig

#: Evaluation batch sizes: (on an accelerator, on the CPU).
EVAL_BATCH = (8192, 1024)


@dataclass
class Setup:
    """What a run is built from, ready before anything is written: data, partition, model, client runtime,
    delay model and server components."""

    cfg: DictConfig
    data: DatasetSplits
    train: ArrayData
    val: ArrayData | None
    parts: list[np.ndarray]
    model_factory: Callable[[], torch.nn.Module]
    global_state: State
    num_parameters: int
    runtime: ClientRuntime
    delay: DelayModel
    components: dict[str, Any]
    placement: Placement  # where the server's model, its aggregation and evaluation live (trainer.*)

    def evaluate(self) -> Callable[[State], dict[str, float]]:
        """Global state → test (and validation) loss and accuracy, and with ``theory.enabled`` the
        gradient quantities on :meth:`theory_sample`, on one reused model."""
        device = self.placement.device
        model = self.model_factory().to(device)
        batches, weights = self.theory_sample() if self.cfg.theory.enabled else ([], [])
        batches = [(x.to(device), y.to(device)) for x, y in batches]
        test = (self.data.test.x.to(device), self.data.test.y.to(device))  # once per run
        val = None if self.val is None else (self.val.x.to(device), self.val.y.to(device))
        size = EVAL_BATCH[device.type == "cpu"]

        def evaluate_state(state: State) -> dict[str, float]:
            model.load_state_dict(state)
            metrics = evaluate(model, *test, batch_size=size)
            if val is not None:
                metrics.update(evaluate(model, *val, batch_size=size, prefix="val"))
            if batches:
                metrics.update(gradient_statistics(model, batches, weights))
            return metrics

        return evaluate_state

    def theory_sample(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[float]]:
        """The fixed sample the theory's quantities are measured on: ``theory.max_clients`` clients (all
        if null or more), ``theory.samples_per_client`` of each one's training samples, all drawn from
        the seed; and the clients' weights ``n_c`` (their shares of the training data)."""
        t, clients = self.cfg.theory, len(self.parts)
        chosen: Sequence[int] = range(clients)
        if t.max_clients is not None and t.max_clients < clients:
            chosen = sorted(derive_rng(self.cfg.seed, "theory-clients").choice(clients, t.max_clients, False))
        batches, weights = [], []
        for c in chosen:
            x, y = self.runtime.client_data[c]
            n = len(y)
            take = np.arange(n)
            if n > t.samples_per_client:
                take = np.sort(
                    derive_rng(self.cfg.seed, "theory", int(c)).choice(n, t.samples_per_client, False)
                )
            index = torch.as_tensor(take)
            batches.append((x[index], y[index]))
            weights.append(float(n))
        return batches, weights


def build(cfg: DictConfig, components: dict[str, Any] | None = None) -> Setup:
    """Build the pluggable components (unless given), load the data, hold out the validation split,
    partition, build the initial model, the clients and the delay model. Raises :class:`ConfigError` on
    bad input; writes nothing."""
    if components is None:
        components = build_components(cfg)
    data, train, val = _load_splits(cfg)
    parts = _partition_train(cfg, train)
    placement = _placement(cfg)
    model = _initial_model(cfg, data, train)

    def model_factory() -> torch.nn.Module:
        # copies of the (never trained) initial model: no random init, so client jobs in worker threads
        # never draw from torch's global generator
        return copy.deepcopy(model)

    runtime = _client_runtime(cfg, components, train, parts, model_factory, placement, data.num_classes)
    global_state = {k: v.detach().to(placement.device, copy=True) for k, v in model.state_dict().items()}
    components["aggregator"].prepare(num_clients=cfg.partition.num_clients, global_state=global_state)
    delay = DelayModel(
        speed=components["speed"],
        comm=components["comm"],
        time_per_sample=cfg.delay.time_per_sample,
        num_clients=cfg.partition.num_clients,
        seed=cfg.seed,
    )
    return Setup(
        cfg=cfg,
        data=data,
        train=train,
        val=val,
        parts=parts,
        model_factory=model_factory,
        global_state=global_state,
        num_parameters=count_parameters(model),
        runtime=runtime,
        delay=delay,
        components=components,
        placement=placement,
    )


def _load_splits(cfg: DictConfig) -> tuple[DatasetSplits, ArrayData, ArrayData | None]:
    """The dataset of ``cfg.dataset``, its training data and its validation split (None without
    ``dataset.val_fraction``), held out of the training data before partitioning; never the test set."""
    ds = cfg.dataset
    data = load_dataset(
        ds.name,
        root=ds.root,
        download=ds.download,
        train_subset=ds.train_subset,
        test_subset=ds.test_subset,
        synthetic=to_dict(ds.synthetic),
        normalize=ds.normalize,
        options=to_dict(ds.options),
    )
    train, val = data.train, None
    if ds.val_fraction > 0:  # held out of the training data before partitioning; never the test set
        kept, held = stratified_split(train.y.numpy(), ds.val_fraction, derive_rng(cfg.seed, "val-split"))
        train, val = train.subset(kept), train.subset(held)
    return data, train, val


def _partition_train(cfg: DictConfig, train: ArrayData) -> list[np.ndarray]:
    """The training data's indices, split among the clients as ``cfg.partition`` says."""
    p = cfg.partition
    return partition(
        train.y.numpy(),
        p.num_clients,
        p.scheme,
        rng=derive_rng(cfg.seed, "partition"),
        alpha=p.alpha,
        min_samples=p.min_samples,
        shards_per_client=p.shards_per_client,
    )


def _initial_model(cfg: DictConfig, data: DatasetSplits, train: ArrayData) -> torch.nn.Module:
    """The model of ``cfg.model`` with its initial weights, drawn from the run's seed alone (torch's global
    generator is left as it was). Raises :class:`ConfigError` when the model does not fit the data."""
    channels, height, width = train.input_shape
    try:
        with torch.random.fork_rng():  # the initial weights, from the run's seed alone
            torch.manual_seed(derive_seed(cfg.seed, "init"))
            return build_model(
                to_dict(cfg.model),
                in_channels=channels,
                num_classes=data.num_classes,
                image_size=height,
                input_shape=train.input_shape,
            )
    except ValueError as err:
        raise ConfigError(
            "model.name", f"{err} (dataset {cfg.dataset.name} has {channels}×{height}×{width})"
        ) from None


def _client_runtime(
    cfg: DictConfig,
    components: dict[str, Any],
    train: ArrayData,
    parts: list[np.ndarray],
    model_factory: Callable[[], torch.nn.Module],
    placement: Placement,
    num_classes: int,
) -> ClientRuntime:
    """What the clients train with, as ``cfg.client`` says; already on the device unless Ray's workers
    each take theirs to their own."""
    runtime = ClientRuntime(
        ClientShards(train.x, train.y, parts),
        model_factory,
        num_classes=num_classes,
        local_epochs=cfg.client.local_epochs,
        batch_size=cfg.client.batch_size,
        optimizer=cfg.client.optimizer,
        momentum=cfg.client.momentum,
        weight_decay=cfg.client.weight_decay,
        optimizer_reset=cfg.client.optimizer_reset,
        callbacks=components["client_callbacks"],
        placement=_worker_placement(cfg, placement),
        compile_mode=cfg.trainer.compile,
    )
    if cfg.federation.executor != "ray":  # in this process: the data and models go to the device now
        runtime = runtime.on_device()  # (Ray's workers each take theirs to their own device)
    return runtime


def _placement(cfg: DictConfig) -> Placement:
    """``trainer.*`` resolved on this machine (raises :class:`ConfigError` for a device it lacks)."""
    t = cfg.trainer
    devices = OmegaConf.to_container(t.devices) if isinstance(t.devices, ListConfig) else t.devices
    return resolve(t.accelerator, devices, t.precision, t.deterministic)


def _worker_placement(cfg: DictConfig, driver: Placement) -> Placement:
    """Where client jobs train: this process's device, or with Ray the device each worker sees (a GPU
    when ``ray.num_gpus`` reserves one, else its CPU)."""
    if cfg.federation.executor != "ray":
        return driver
    kind = "cuda" if cfg.ray.num_gpus else "cpu"
    if kind == "cpu" and driver.precision == "16-mixed":
        raise ConfigError(
            "trainer.precision",
            "16-mixed does not run on the CPU, where Ray workers without ray.num_gpus train",
        )
    return Placement(kind=kind, precision=driver.precision, deterministic=driver.deterministic)


def make_executor(cfg: DictConfig, train: TrainFn) -> Executor:
    """The run's executor (``federation.executor``); Ray's takes the ``ray.*`` options, the cohort's the
    ``cohort.*`` ones."""
    options: dict[str, Any] = {}
    if cfg.federation.executor in ("ray", "cohort"):
        options = dict(to_dict(cfg[cfg.federation.executor]))
    return EXECUTORS.get(cfg.federation.executor)(train, cfg.federation.workers, **options)


def make_loop(
    setup: Setup,
    executor: Executor,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> FederatedLoop:
    """The federated loop of a built run, on ``executor``."""
    cfg, fed = setup.cfg, setup.cfg.federation
    loop_cfg = LoopConfig(
        mode=fed.mode,
        concurrency=fed.concurrency,
        max_updates=fed.max_updates,
        eval_every=fed.eval_every,
        base_lr=cfg.client.lr,
        local_epochs=cfg.client.local_epochs,
        seed=cfg.seed,
        max_staleness=cfg.delay.max_staleness,
        staleness_policy=cfg.delay.staleness_policy,
        timeout_s=cfg.client.timeout_s,
        max_delta_norm=cfg.server.max_delta_norm,
        checkpoint_every=cfg.checkpoint.every,
        checkpoint_every_s=cfg.checkpoint.every_s,
        progress=cfg.logging.progress,
    )
    f = cfg.faults
    faults = FaultModel(rate=f.rate, kinds=tuple(f.kinds), slow_factor=f.slow_factor, seed=cfg.seed)
    return FederatedLoop(
        loop_cfg,
        global_state=setup.global_state,
        num_samples=[len(ix) for ix in setup.parts],
        aggregator=setup.components["aggregator"],
        lr_schedule=setup.components["lr_schedule"],
        delay=setup.delay,
        executor=executor,
        evaluate=setup.evaluate(),
        on_eval=on_eval,
        faults=faults if f.rate > 0 else None,
        on_checkpoint=on_checkpoint,
        sampler=setup.components["sampler"],
        availability=setup.components["availability"],
    )


def partition_table(setup: Setup) -> tuple[list[str], list[list[int]]]:
    """The partition as a table: per client, its samples and its count of every class."""
    counts = class_counts(setup.train.y.numpy(), setup.parts, setup.data.num_classes)
    columns = ["client", "samples", *(f"class_{k}" for k in range(setup.data.num_classes))]
    return columns, [[c, int(len(ix)), *counts[c]] for c, ix in enumerate(setup.parts)]
