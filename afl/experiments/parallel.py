"""Many runs at once (``--jobs N`` of afl-compare and afl-sweep): worker processes that stay alive across
runs, so each pays torch's and Lightning's imports once, not once per run.

A run is a plain function of its config (:func:`afl.experiments.run.run`), so where it runs never changes
its results: ``--jobs N`` writes the same files as ``--jobs 1`` (wall times aside; in ``config.yaml``
``federation.workers``, which :func:`fit_threads` sets so that N runs × their threads fit the cores, and
``logging.progress``: the executors give the same run for any number of workers). Every run's outcome is
read back from its folder (:func:`~afl.experiments.metrics.load_run`), whichever way it ran.

A worker that dies (killed, out of memory) fails the run it held, with its exit code, and is replaced;
the other runs go on. A run that raises fails with its error (its folder says so in ``FAILED``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class Outcome:
    """How one run ended: its folder, or the error that stopped it (``error_type``: the exception's class
    name, or ``WorkerDied``)."""

    output_dir: str
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_threads(cfg: DictConfig, jobs: int) -> None:
    """With ``jobs`` runs at once, each run's client-training threads (``federation.workers``) so that
    ``jobs × workers × torch_threads`` stays within the cores (never more than the run asked for)."""
    if jobs > 1:
        share = max(1, cores() // (jobs * cfg.federation.torch_threads))
        cfg.federation.workers = min(cfg.federation.workers, share)


def _run_here(cfg: DictConfig) -> Outcome:
    """One run in this process, its error caught."""
    from afl.experiments.run import run

    try:
        return Outcome(str(run(cfg).output_dir))
    except Exception as err:  # noqa: BLE001 - a failed run is a result; the others go on
        return Outcome(str(cfg.output_dir), f"{type(err).__name__}: {err}", type(err).__name__)


def _worker(conn: Connection) -> None:
    """A worker process: runs the configs it is sent, one at a time, until it is sent None."""
    while True:
        task = conn.recv()
        if task is None:
            return
        index, container = task
        try:
            outcome = _run_here(OmegaConf.create(container))
        except BaseException:  # noqa: BLE001 - report it, and take the next
            outcome = Outcome("", traceback.format_exc(limit=3), "WorkerError")
        conn.send((index, outcome))


def _progress(done: int, total: int, label: str, outcome: Outcome, started: float) -> str:
    elapsed = time.monotonic() - started
    left = elapsed / done * (total - done)
    status = "done" if outcome.ok else f"FAILED ({outcome.error_type})"
    return f"[{done}/{total}] {label}: {status} · {elapsed / 60:.1f} min, about {left / 60:.1f} min left"


@dataclass(frozen=True)
class RayLauncher:
    """``--launcher ray``: each run a Ray task on a cluster, with a CPU and GPU share each (``gpus=0.25``:
    four runs per GPU), retried ``retries`` times on a lost worker. A run writes its folder where its
    ``output_dir`` says, on the machine that runs it: on a cluster of several machines that must be a
    path they share (a network file system); the comparison then reads the runs back from there."""

    address: str | None = None  # None: RAY_ADDRESS, else a local cluster of this machine's cores
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 1


def _ray_task(container: dict[str, Any]) -> Outcome:
    return _run_here(OmegaConf.create(container))


def _run_on_ray(
    tasks: Sequence[tuple[Hashable, str, DictConfig]],
    launcher: RayLauncher,
    finish: Callable[[int, Outcome], None],
) -> None:
    import ray

    if not ray.is_initialized():
        address = launcher.address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, num_cpus=None if address else cores(), include_dashboard=False)
    from afl import plugins

    for module in plugins.loaded():  # the user's components travel by value, as with the Ray executor
        ray.cloudpickle.register_pickle_by_value(module)
    remote = ray.remote(_ray_task).options(
        num_cpus=launcher.cpus, num_gpus=launcher.gpus, max_retries=launcher.retries
    )
    refs = {}
    for index, (_, _, cfg) in enumerate(tasks):
        cfg.federation.workers = max(1, min(cfg.federation.workers, int(launcher.cpus)))
        cfg.logging.progress = False
        refs[remote.remote(OmegaConf.to_container(cfg, resolve=True))] = index  # type: ignore[arg-type]
    waiting = list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        index = refs[done[0]]
        try:
            outcome = ray.get(done[0])
        except ray.exceptions.RayError as err:  # its worker died, more often than the retries allow
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            outcome = Outcome(str(tasks[index][2].output_dir), f"its Ray worker died: {first}", "WorkerDied")
        finish(index, outcome)


def run_all(
    tasks: Sequence[tuple[Hashable, str, DictConfig]],
    jobs: int = 1,
    *,
    log: Callable[[str], None] = print,
    launcher: RayLauncher | None = None,
) -> dict[Hashable, Outcome]:
    """Run every ``(key, label, config)``, ``jobs`` at a time; their outcomes by key. ``jobs = 1`` runs
    them here, one after another; more start that many worker processes, which stay alive across runs;
    a ``launcher`` runs each as a Ray task on a cluster instead (``jobs`` is then the cluster's to decide).
    A progress line per finished run: runs done / total and an estimate of the time left."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    outcomes: dict[Hashable, Outcome] = {}
    started = time.monotonic()

    def finish(index: int, outcome: Outcome) -> None:
        key, label, _ = tasks[index]
        outcomes[key] = outcome
        log(_progress(len(outcomes), len(tasks), label, outcome, started))

    if launcher is not None:
        _run_on_ray(tasks, launcher, finish)
        return outcomes
    if jobs == 1:
        for index, (_, _, cfg) in enumerate(tasks):
            finish(index, _run_here(cfg))
        return outcomes
    _run_in_workers(tasks, jobs, finish)
    return outcomes


def _run_in_workers(
    tasks: Sequence[tuple[Hashable, str, DictConfig]], jobs: int, finish: Callable[[int, Outcome], None]
) -> None:
    """Run every task in ``jobs`` worker processes, calling ``finish(index, outcome)`` as each ends. Each
    run's threads are fitted to its share of the cores, and its progress bar is turned off."""
    for _, _, cfg in tasks:
        fit_threads(cfg, jobs)
        cfg.logging.progress = False  # N progress bars would interleave: a line per finished run instead
    _WorkerPool(tasks, finish).run(jobs)


class _WorkerPool:
    """Worker processes, spawned, each running one task at a time; the tasks are handed out in order, and a
    worker that dies is replaced while tasks are pending (its task, if it held one, ends as WorkerDied)."""

    def __init__(
        self, tasks: Sequence[tuple[Hashable, str, DictConfig]], finish: Callable[[int, Outcome], None]
    ) -> None:
        self.tasks = tasks
        self.finish = finish
        self.context = multiprocessing.get_context("spawn")  # torch and threads: never fork a running process
        self.pending = list(range(len(tasks)))[::-1]  # popped from the end: in order
        self.workers: dict[Connection, tuple[Any, int | None]] = {}  # connection -> (process, task it holds)

    def start(self) -> Connection:
        """Start one worker process; its connection."""
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        self.workers[parent] = (process, None)
        return parent

    def give(self, conn: Connection) -> None:
        """Send the next pending task, if any, to the worker at ``conn``."""
        if self.pending:
            index = self.pending.pop()
            conn.send((index, OmegaConf.to_container(self.tasks[index][2], resolve=True)))
            self.workers[conn] = (self.workers[conn][0], index)

    def run(self, jobs: int) -> None:
        """Start up to ``jobs`` workers and serve them until no task is held; then stop them all."""
        try:
            for _ in range(min(jobs, len(self.tasks))):
                self.give(self.start())
            while any(held is not None for _, held in self.workers.values()):
                sentinels = {process.sentinel: conn for conn, (process, _) in self.workers.items()}
                for ready in wait([*self.workers, *sentinels]):
                    conn = sentinels.get(ready, ready)  # type: ignore[call-overload]
                    if conn in self.workers:
                        self.serve(conn)
        finally:
            self.stop()

    def serve(self, conn: Connection) -> None:
        """Handle a worker that is ready: take its finished run and give it the next, or, if it died, finish
        the run it held as WorkerDied and start another worker while tasks are pending."""
        process, held = self.workers[conn]
        try:
            message = conn.recv() if conn.poll() else None
        except (EOFError, OSError):
            message = None
        if message is not None:
            self.finish(*message)
            self.workers[conn] = (process, None)
            self.give(conn)
        elif not process.is_alive():  # the worker died, with a run in hand or not
            process.join()
            del self.workers[conn]
            if held is not None:
                died = f"its worker died (exit code {process.exitcode})"
                self.finish(held, Outcome(str(self.tasks[held][2].output_dir), died, "WorkerDied"))
            if self.pending:
                self.give(self.start())

    def stop(self) -> None:
        """Tell each worker to stop, then wait for it (and kill it if it does not)."""
        for conn in self.workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for process, _ in self.workers.values():
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def run_pending(
    runs: Sequence[tuple[Hashable, str, Path, Callable[[], DictConfig]]],
    jobs: int = 1,
    *,
    log: Callable[[str], None] = print,
    launcher: RayLauncher | None = None,
) -> dict[Hashable, Outcome]:
    """Finish every ``(key, label, folder, make_config)``: a folder with ``summary.json`` is complete and
    skipped (its outcome read from it), one with a checkpoint is resumed from it, any other is removed and
    run again from ``make_config()`` (whose ``output_dir`` must be the folder); the rest as
    :func:`run_all`. So an interrupted comparison or sweep, or one whose finished runs' small files were
    kept (``summary.json``, ``metrics.csv``, ``config.yaml``), continues where it stopped."""
    from afl import checkpoint

    outcomes: dict[Hashable, Outcome] = {}
    tasks: list[tuple[Hashable, str, DictConfig]] = []
    for key, label, out, make_config in runs:
        if (out / "summary.json").exists():
            log(f"{label}: complete, skipped")
            outcomes[key] = Outcome(str(out))
        elif (out / checkpoint.CHECKPOINT).exists():
            from afl.config import load_config

            tasks.append((key, f"{label} (resumed from its checkpoint)", load_config([f"resume={out}"])))
        else:
            if out.exists():
                shutil.rmtree(out)  # stopped before its first checkpoint (or failed): start it again
            tasks.append((key, label, make_config()))
    if outcomes and tasks:
        log(f"{len(outcomes)} of {len(runs)} runs complete; running the other {len(tasks)}")
    return {**outcomes, **run_all(tasks, jobs, log=log, launcher=launcher)}
