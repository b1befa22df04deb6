"""``run(cfg)``: one federated training run from a validated config, with its outputs.

A plain function (the script's ``main()`` only parses the command line), so tests, notebooks and sweeps
call it directly. Everything that can be wrong with the input is checked before anything is written.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from afl import checkpoint
from afl.client import ClientRuntime, ClientShards
from afl.config import load_config, to_yaml, validate
from afl.data.datasets import ArrayData, DatasetSplits, load_dataset
from afl.data.partition import class_counts, partition, stratified_split
from afl.errors import ConfigError
from afl.evaluation import evaluate, gradient_statistics
from afl.models import build_model, count_parameters
from afl.rng import derive_rng, derive_seed
from afl.server.aggregators import State
from afl.sim.delays import DelayModel
from afl.sim.executors import EXECUTORS, Executor, TrainFn
from afl.sim.faults import REJECT_REASONS, FaultModel
from afl.sim.loop import FederatedLoop, LoopConfig, LoopState
from afl.tracking import WandbTracker

METRIC_COLUMNS = (
    "client_updates",
    "version",
    "round",
    "sim_time",
    "wall_time",
    "test_loss",
    "test_accuracy",
    "val_loss",
    "val_accuracy",
    "mean_staleness",
    "max_staleness",
    "train_loss",
    "train_accuracy",
    "dropped_updates",
    "rejected_updates",
    *(f"rejected_{reason}" for reason in REJECT_REASONS),
    "grad_norm_sq",
    "heterogeneity",
    "mean_drift",
    "max_drift",
    "server_lr",
)
# metrics.csv column -> W&B key (W&B groups charts by the prefix before "/")
WANDB_KEYS = {
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "mean_staleness": "staleness/mean",
    "max_staleness": "staleness/max",
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "staleness": "staleness/histogram",
    "grad_norm_sq": "theory/grad_norm_sq",
    "heterogeneity": "theory/heterogeneity",
    "mean_drift": "theory/mean_drift",
    "max_drift": "theory/max_drift",
    "server_lr": "server/lr",
}
VOLATILE_SUMMARY_KEYS = ("wall_time_s", "output_dir")
FAILED = "FAILED"  # written in the run folder, with the error, when a started run raises


@dataclass
class RunResult:
    """What :func:`run` returns: the summary, the evaluation rows (metrics.csv), one row per client
    update (updates.csv), where it wrote, and the final global model."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    output_dir: Path
    final_state: State
    config: DictConfig


def algorithm_name(cfg: DictConfig) -> str:
    """The label of a run's algorithm (its aggregator), e.g. ``afl`` or ``fedavg``."""
    return str(cfg.server.aggregator.name)


def _output_dir(cfg: DictConfig) -> Path:
    """The run's folder, created: ``output_dir`` (new or empty), or a fresh auto-named one claimed
    atomically (two runs started in the same second never share it)."""
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError("output_dir", f"{blocking} is a file, not a folder: choose another output_dir")
        if out.exists() and any(out.iterdir()):
            hint = (
                f"; to continue the run in it: resume={out}" if (out / checkpoint.CHECKPOINT).exists() else ""
            )
            raise ConfigError(
                "output_dir",
                f"{out} already exists and is not empty; runs are never "
                f"overwritten: choose another folder (or leave output_dir unset){hint}",
            )
        _mkdir(out, exist_ok=True)
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / cfg.experiment / f"{algorithm_name(cfg)}-seed{cfg.seed}-{stamp}"
    for n in range(1, 10_000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            _mkdir(out, exist_ok=False)  # the claim: mkdir fails if another run made it first
            return out
        except FileExistsError:
            continue
    raise ConfigError("output_dir", f"no free folder name next to {base}")


def _mkdir(out: Path, exist_ok: bool) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir(exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as err:
        raise ConfigError("output_dir", f"cannot create {out}: {err.strerror or err}") from None


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def run(cfg: DictConfig | None = None, overrides: Sequence[str] = ()) -> RunResult:
    """Train one federated run and write its outputs (DESIGN §5).

    Args:
        cfg: a config from :func:`afl.config.load_config`; if omitted, one is composed from ``overrides``.
        overrides: ``key=value`` strings (including ``experiment=NAME``), used when ``cfg`` is None.

    Returns:
        The :class:`RunResult`.

    Raises:
        ConfigError: bad input; nothing has been written.
    """
    if cfg is None:
        cfg = load_config(overrides)
    components = validate(cfg)
    resumed = _resume_point(cfg)  # the checkpoint to continue from, checked before anything is written
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.federation.torch_threads)  # process-wide: restored when the run ends
    try:
        setup = build(cfg, components)  # everything that can fail on bad input fails here
        out = Path(cfg.resume) if resumed is not None else _output_dir(cfg)
        wandb_id = None if resumed is None else resumed["wandb_run_id"]
        history_so_far = [] if resumed is None else resumed["loop"]["history"]
        # the W&B run finishes as failed, and metrics.csv is closed, if anything below raises
        with (
            RunWriter(out, cfg, setup, history_so_far) as writer,
            _tracker(cfg, out, wandb_id) as tracker,
        ):
            tracker.note_best([r["test_accuracy"] for r in history_so_far])
            if resumed is None:
                columns, rows = partition_table(setup)
                tracker.log_table("partition", columns, rows)

            def on_eval(row: dict[str, Any]) -> None:
                writer.write_row(row)
                tracker.log({WANDB_KEYS.get(k, k): v for k, v in row.items() if _finite(v)})

            def on_checkpoint(state: dict[str, Any]) -> None:
                payload = {
                    "format": checkpoint.FORMAT,
                    "config": checkpoint.fingerprint(cfg),
                    "wandb_run_id": tracker.run_id,
                    "loop": state,
                }
                checkpoint.save(out / checkpoint.CHECKPOINT, payload)

            with make_executor(cfg, setup.runtime) as executor:
                loop = make_loop(setup, executor, on_eval, on_checkpoint)
                if resumed is not None:
                    loop.load_state_dict(resumed["loop"])
                history = loop.run()
            summary = run_summary(setup, loop.state, history, loop.history[-1]["wall_time"], out)
            writer.finish(summary, loop.state)
            tracker.set_summary({k: v for k, v in summary.items() if k != "output_dir"})
    finally:
        torch.set_num_threads(threads)
    return RunResult(
        summary=summary,
        history=history,
        updates=loop.state.arrivals,
        output_dir=out,
        final_state=loop.state.global_state,
        config=cfg,
    )


def _resume_point(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``resume=FOLDER``: that run's checkpoint, checked against the config; else None."""
    if cfg.resume is None:
        return None
    folder = Path(cfg.resume)
    if (folder / "summary.json").exists():
        raise ConfigError(
            "resume", f"the run in {folder} is complete (it has summary.json): nothing to resume"
        )
    return checkpoint.load(folder / checkpoint.CHECKPOINT, cfg)


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

    def evaluate(self) -> Callable[[State], dict[str, float]]:
        """Global state → test (and validation) loss and accuracy, and with ``theory.enabled`` the
        gradient quantities on :meth:`theory_sample`, on one reused model."""
        model = self.model_factory()
        batches, weights = self.theory_sample() if self.cfg.theory.enabled else ([], [])

        def evaluate_state(state: State) -> dict[str, float]:
            model.load_state_dict(state)
            metrics = evaluate(model, self.data.test.x, self.data.test.y)
            if self.val is not None:
                metrics.update(evaluate(model, self.val.x, self.val.y, prefix="val"))
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


def build(cfg: DictConfig, components: dict[str, Any]) -> Setup:
    """Load the data, hold out the validation split, partition, build the initial model, the clients and
    the delay model. Raises :class:`ConfigError` on bad input; writes nothing."""
    ds = cfg.dataset
    data = load_dataset(
        ds.name,
        root=ds.root,
        download=ds.download,
        train_subset=ds.train_subset,
        test_subset=ds.test_subset,
        synthetic=_plain(ds.synthetic),
        normalize=ds.normalize,
    )
    train, val = data.train, None
    if ds.val_fraction > 0:  # held out of the training data before partitioning; never the test set
        kept, held = stratified_split(train.y.numpy(), ds.val_fraction, derive_rng(cfg.seed, "val-split"))
        train, val = train.subset(kept), train.subset(held)
    p = cfg.partition
    parts = partition(
        train.y.numpy(),
        p.num_clients,
        p.scheme,
        rng=derive_rng(cfg.seed, "partition"),
        alpha=p.alpha,
        min_samples=p.min_samples,
        shards_per_client=p.shards_per_client,
    )
    channels, height, _ = train.input_shape

    try:
        with torch.random.fork_rng():  # the initial weights, from the run's seed alone
            torch.manual_seed(derive_seed(cfg.seed, "init"))
            model = build_model(
                cfg.model.name, in_channels=channels, num_classes=data.num_classes, image_size=height
            )
    except ValueError as err:
        raise ConfigError(
            "model.name", f"{err} (dataset {ds.name} has {channels}×{height}×{height})"
        ) from None

    def model_factory() -> torch.nn.Module:
        # copies of the (never trained) initial model: no random init, so client jobs in worker threads
        # never draw from torch's global generator
        return copy.deepcopy(model)

    runtime = ClientRuntime(
        ClientShards(train.x, train.y, parts),
        model_factory,
        num_classes=data.num_classes,
        local_epochs=cfg.client.local_epochs,
        batch_size=cfg.client.batch_size,
        optimizer=cfg.client.optimizer,
        momentum=cfg.client.momentum,
        weight_decay=cfg.client.weight_decay,
        optimizer_reset=cfg.client.optimizer_reset,
        callbacks=components["client_callbacks"],
    )
    delay = DelayModel(
        speed=components["speed"],
        comm=components["comm"],
        time_per_sample=cfg.delay.time_per_sample,
        num_clients=p.num_clients,
        seed=cfg.seed,
    )
    return Setup(
        cfg=cfg,
        data=data,
        train=train,
        val=val,
        parts=parts,
        model_factory=model_factory,
        global_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        num_parameters=count_parameters(model),
        runtime=runtime,
        delay=delay,
        components=components,
    )


def make_executor(cfg: DictConfig, train: TrainFn) -> Executor:
    """The run's executor (``federation.executor``); Ray's takes the ``ray.*`` options."""
    options: dict[str, Any] = {}
    if cfg.federation.executor == "ray":
        options = {key: cfg.ray[key] for key in cfg.ray}
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
    )


def partition_table(setup: Setup) -> tuple[list[str], list[list[int]]]:
    """The partition as a table: per client, its samples and its count of every class."""
    counts = class_counts(setup.train.y.numpy(), setup.parts, setup.data.num_classes)
    columns = ["client", "samples", *(f"class_{k}" for k in range(setup.data.num_classes))]
    return columns, [[c, int(len(ix)), *counts[c]] for c, ix in enumerate(setup.parts)]


def run_summary(
    setup: Setup, state: LoopState, history: list[dict[str, Any]], wall_time_s: float, out: Path
) -> dict[str, Any]:
    """summary.json of a finished run."""
    from afl.compare import time_to_accuracy

    cfg, final = setup.cfg, history[-1]
    target = cfg.logging.target_accuracy
    return {
        "experiment": cfg.experiment,
        "algorithm": algorithm_name(cfg),
        "mode": cfg.federation.mode,
        "seed": cfg.seed,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "num_parameters": setup.num_parameters,
        "final_test_accuracy": final["test_accuracy"],
        "final_test_loss": final["test_loss"],
        "best_test_accuracy": max(r["test_accuracy"] for r in history),
        "final_val_accuracy": final.get("val_accuracy"),
        "best_val_accuracy": max(r["val_accuracy"] for r in history) if setup.val is not None else None,
        "val_samples": 0 if setup.val is None else len(setup.val),
        "client_updates": state.client_updates,
        "version": state.version,
        "rounds": final["round"],
        "sim_time": state.clock,
        "mean_staleness": sum(a["staleness"] for a in state.arrivals) / max(len(state.arrivals), 1),
        "dropped_updates": state.dropped_updates,
        "stale_updates": state.stale_updates,
        "rejected_updates": sum(state.rejected.values()),
        "rejected_by_reason": dict(state.rejected),
        "target_accuracy": target,  # logging.target_accuracy; the first evaluation that reached it:
        "time_to_target": None if target is None else time_to_accuracy(history, target),
        "updates_to_target": None if target is None else time_to_accuracy(history, target, "client_updates"),
        "wall_time_s": wall_time_s,
        "output_dir": str(out),
    }


class RunWriter:
    """Owns a run folder's files. On entry: the folder, ``config.yaml``, ``partition.json`` and the header
    of ``metrics.csv`` (one row per evaluation, flushed as it comes); :meth:`finish` adds
    ``summary.json``, ``updates.csv`` and ``final_model.pt`` and removes the checkpoint. If the run
    raises, the folder gets a ``FAILED`` file with the error and no ``summary.json``.

    Resuming (``history`` = the checkpoint's evaluation rows): ``config.yaml`` and ``partition.json`` stay
    as the run wrote them, ``FAILED`` goes, and ``metrics.csv`` is rewritten with the checkpoint's rows
    (rows written after the checkpoint, before the crash, are dropped: the run computes them again).
    """

    def __init__(
        self, out: Path, cfg: DictConfig, setup: Setup, history: Sequence[dict[str, Any]] = ()
    ) -> None:
        self.out, self.cfg, self.setup, self.history = out, cfg, setup, history
        self._csv: Any = None
        self._rows: csv.DictWriter[str] | None = None

    def __enter__(self) -> RunWriter:
        out, setup, p = self.out, self.setup, self.cfg.partition  # out: claimed by _output_dir
        if self.cfg.resume is None:
            (out / "config.yaml").write_text(to_yaml(self.cfg))
            labels = setup.train.y.numpy()
            (out / "partition.json").write_text(
                json.dumps(
                    {
                        "scheme": p.scheme,
                        "num_clients": p.num_clients,
                        "alpha": p.alpha,
                        "samples": [int(len(ix)) for ix in setup.parts],
                        "class_counts": class_counts(labels, setup.parts, setup.data.num_classes),
                    },
                    indent=1,
                )
            )
        (out / FAILED).unlink(missing_ok=True)
        self._csv = (out / "metrics.csv").open("w", newline="")
        self._rows = csv.DictWriter(self._csv, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        self._rows.writeheader()
        self._rows.writerows(self.history)
        self._csv.flush()
        return self

    def write_row(self, row: dict[str, Any]) -> None:
        assert self._rows is not None, "use RunWriter as a context manager"
        self._rows.writerow(row)
        self._csv.flush()

    def finish(self, summary: dict[str, Any], state: LoopState) -> None:
        with (self.out / "updates.csv").open("w", newline="") as f:
            # every key of any row: a rejected update has no callback metrics (its cells stay empty)
            updates = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for a in state.arrivals for k in a)))
            updates.writeheader()
            updates.writerows(state.arrivals)
        torch.save(state.global_state, self.out / "final_model.pt")
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))  # last: marks the run complete
        for name in (checkpoint.CHECKPOINT, checkpoint.CHECKPOINT + ".tmp"):  # nothing left to resume
            (self.out / name).unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._csv is not None:
            self._csv.close()
        if exc is not None:  # a run that raised is marked failed, never looking complete
            (self.out / "summary.json").unlink(missing_ok=True)
            (self.out / FAILED).write_text(f"{type(exc).__name__}: {exc}\n")


def _tracker(cfg: DictConfig, out: Path, run_id: str | None = None) -> WandbTracker:
    algorithm = algorithm_name(cfg)
    return WandbTracker(
        mode=cfg.logging.wandb.mode,
        project=cfg.logging.wandb.project,
        entity=cfg.logging.wandb.entity,
        group=cfg.experiment,
        job_type=algorithm,
        name=f"{algorithm}-{cfg.federation.mode}-seed{cfg.seed}",
        config=_plain(cfg),
        dir=out,
        tags=list(cfg.logging.wandb.tags),
        run_id=run_id,
    )
