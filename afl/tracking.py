"""Experiment tracking with Weights & Biases.

:class:`WandbTracker` makes one W&B run per training run. It works without an account or a network:
``mode="offline"`` writes the run to ``<dir>/wandb/offline-run-<time>-<id>/``; ``mode="disabled"``
logs to a stand-in that keeps nothing, without importing wandb. ``mode="online"`` is passed to W&B
untouched.

An offline run is read back with wandb's own reader, ``wandb leet inspect --json <run folder>``
(one JSON record per line), and uploaded with ``wandb sync <run folder>``.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ALLOWED_MODES", "WandbTracker"]

ALLOWED_MODES: tuple[str, ...] = ("offline", "online", "disabled")
"""The values :class:`WandbTracker` accepts for ``mode``."""

# Settings that keep W&B quiet and fast. Keys missing from the installed ``wandb.Settings`` are dropped
# (see ``_quiet_settings``) so that older or newer wandb releases still start.
_QUIET_SETTINGS: dict[str, Any] = {
    "console": "off",  # no stdout/stderr capture (no output.log, no wrapped streams)
    "save_code": False,  # no copy of the main script
    "disable_code": True,
    "disable_git": True,  # no `git` subprocesses, no diff.patch
    "x_disable_stats": True,  # no system metrics sampling (CPU/GPU/memory)
    "x_disable_meta": True,  # no wandb-metadata.json (host, args, python, ...)
    "x_disable_machine_info": True,
    "x_save_requirements": False,  # no `pip freeze` into requirements.txt
}

# Which metrics are x-axes, which follow `client_updates`, and which get aggregated summaries. Every key
# a run logs sits in one of these sections (afl.experiments.outputs.WANDB_KEYS) or is an x-axis, so every
# one is defined against `client_updates` (`sim_time` is logged on every row too: any panel can use it).
_X_AXES = ("client_updates", "sim_time")
_STEP_METRIC = "client_updates"
_STEPPED_GLOBS = (
    "test/*",
    "val/*",
    "train/*",
    "staleness/*",
    "theory/*",
    "server/*",
    "updates/*",
    "progress/*",
)
_SUMMARIES = {"test/accuracy": "max,last", "test/loss": "min,last"}
_BEST_KEY = "test/accuracy"
_BEST_CONTEXT = ("client_updates", "sim_time")  # recorded next to the best accuracy

# Trackers created and not yet finished (main thread only, so no lock).
_OPEN_TRACKERS: weakref.WeakSet[WandbTracker] = weakref.WeakSet()


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what} must be called from the main thread (WandbTracker is main-thread only)")


def _plain(value: Any) -> Any:
    """Turns numpy / torch scalars into Python numbers; leaves everything else alone."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):  # not a one-element array / tensor
            return value
    return value


class WandbTracker:
    """One W&B run per training run.

    Creating the tracker starts the run (``wandb.init``; in disabled mode a stand-in, ``_NullRun``, that
    logs nothing, and wandb is not imported); :meth:`log` adds one evaluation row; :meth:`finish` closes
    it. Several trackers can be made one after another in one process (the
    comparison script trains AFL, then the synchronous baseline). A tracker still open when the
    next one is created (for example after an exception that skipped :meth:`finish`) is finished
    first, with exit code 0; ``wandb.init`` is called with ``reinit="finish_previous"``, so any other
    W&B run open in the process (one not made by this class) is finished too rather than reused.
    Likewise :meth:`finish` of an offline or online run calls ``wandb.teardown()``, which finishes
    every W&B run still open in the process and stops W&B's service until the next ``wandb.init``.

    Metrics: ``client_updates`` and ``sim_time`` are x-axes; ``test/*``, ``val/*``, ``train/*``,
    ``staleness/*`` and ``theory/*`` are plotted against ``client_updates``. The summary keeps ``max``
    and ``last`` of ``test/accuracy``, ``min`` and ``last`` of ``test/loss`` (W&B writes these as
    ``{"max": ..., "last": ...}``), and the tracker adds ``best/test_accuracy`` with the
    ``best/client_updates`` and ``best/sim_time`` of the row where it was reached.

    The tracker must be used from the main thread only (creating it, :meth:`log`,
    :meth:`set_summary`, :meth:`finish`); calls from other threads raise ``RuntimeError``. W&B
    installs process-wide state (the global run, atexit hooks) on ``wandb.init``.

    It is also a context manager: leaving the ``with`` block finishes the run, with exit code 1 if
    an exception is propagating.

    Args:
        mode: ``"offline"`` (write to disk only), ``"online"`` (passed to W&B untouched; needs an
            account) or ``"disabled"`` (nothing is logged or written, and wandb is not imported).
        project: W&B project.
        group: run group; use the experiment name, so the AFL and synchronous runs of one
            experiment sit side by side.
        job_type: the algorithm label, e.g. ``"afl"`` or ``"sync"``.
        name: display name of the run.
        config: the full resolved config, stored as the run's config.
        dir: the training run's output folder. W&B writes ``<dir>/wandb/...``; the folder is created
            if missing (in disabled mode too, but left empty).
        tags: run tags.
        entity: W&B entity (user or team); ``None`` uses W&B's default.
        run_id: continue the W&B run with this id (a resumed training run) instead of starting a new
            one. Offline, the earlier ``offline-run-*-<id>`` folder is replaced by a new one with the
            same id (a killed process may have left it without its last rows), and :attr:`rows_kept`
            is 0: the caller logs the whole history again. Online, the caller logs the rows after
            :attr:`rows_kept`. Disabled: only the id is kept.

    Raises:
        ValueError: ``mode`` is not one of :data:`ALLOWED_MODES`.
        RuntimeError: called from a thread other than the main thread.
    """

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        group: str,
        job_type: str,
        name: str,
        config: dict,
        dir: str | os.PathLike,
        tags: Sequence[str] = (),
        entity: str | None = None,
        run_id: str | None = None,
    ) -> None:
        if mode not in ALLOWED_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, ALLOWED_MODES))}; got {mode!r}")
        _require_main_thread("WandbTracker()")
        # Finish our own runs still open (through finish(), which waits for their logs) before
        # wandb.init(reinit="finish_previous") would finish them without waiting.
        for tracker in list(_OPEN_TRACKERS):
            tracker.finish()

        out_dir = Path(dir).absolute()
        out_dir.mkdir(parents=True, exist_ok=True)  # as wandb.init would; in disabled mode too (left empty)
        self._finished = False
        self._best: float | None = None
        self._pending: dict[str, Any] = {}
        arguments = dict(
            project=project,
            group=group,
            job_type=job_type,
            name=name,
            config=dict(config),
            dir=os.fspath(out_dir),
            tags=list(tags),
            entity=entity,
            reinit="finish_previous",
        )
        if run_id is not None:
            arguments.update(id=run_id, resume="allow")
            if mode == "offline":  # the caller logs the whole history again (see rows_kept)
                for old in (out_dir / "wandb").glob(f"offline-run-*-{run_id}"):
                    shutil.rmtree(old, ignore_errors=True)
        if mode == "disabled":  # W&B does nothing, and is not even imported (an image without it runs)
            self._run: Any = _NullRun(run_id)
            self._mode = mode
            self._run_dir: Path | None = None
            _OPEN_TRACKERS.add(self)
            return
        self._start(mode, arguments)

    def _start(self, mode: str, arguments: dict[str, Any]) -> None:
        """Start the W&B run (``mode`` offline or online; online falls back to offline, with a warning,
        when W&B cannot be reached), register the tracker as open, and define the run's metrics."""
        import wandb

        try:
            self._run = wandb.init(mode=mode, settings=_quiet_settings(wandb, mode), **arguments)  # type: ignore[arg-type]
        except wandb.Error as err:
            if mode != "online":
                raise
            # no key, no network, a server that does not answer: the run goes on, logged offline
            mode = "offline"
            self._run = wandb.init(mode=mode, settings=_quiet_settings(wandb, mode), **arguments)  # type: ignore[arg-type]
            warnings.warn(
                f"W&B online failed ({type(err).__name__}: {str(err).splitlines()[0]}); logging offline "
                f"instead. Upload later with: wandb sync {self._run.settings.sync_dir}",
                RuntimeWarning,
                stacklevel=3,  # the caller of WandbTracker(), past __init__
            )
        self._mode = mode
        self._run_dir = Path(self._run.settings.sync_dir)
        _OPEN_TRACKERS.add(self)
        self._define_metrics()

    def _define_metrics(self) -> None:
        """Plot every logged metric against the step metric, with the summaries of :data:`_SUMMARIES`."""
        self._run.define_metric(_STEP_METRIC)
        for axis in _X_AXES[1:]:
            self._run.define_metric(axis, step_metric=_STEP_METRIC)
        for glob in _STEPPED_GLOBS:
            self._run.define_metric(glob, step_metric=_STEP_METRIC)
        for key, summary in _SUMMARIES.items():
            self._run.define_metric(key, step_metric=_STEP_METRIC, summary=summary)

    @property
    def run_dir(self) -> Path | None:
        """The run's folder (``<dir>/wandb/offline-run-*/`` offline), or ``None`` when disabled."""
        return self._run_dir

    @property
    def run_id(self) -> str:
        """The W&B run id (also the ``<id>`` of ``run-<id>.wandb``)."""
        return str(self._run.id)

    @property
    def rows_kept(self) -> int:
        """History rows the run already holds: 0 for a new run, and for a continued offline one (its
        earlier folder is replaced, since a killed process may have left it without its last rows, or any);
        a continued online run: the rows W&B's server has. A caller continuing a run logs the rows after
        these again, so that its history is whole and ``_step`` never restarts."""
        return int(getattr(self._run, "step", 0) or 0) if self._mode == "online" else 0

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._finished

    def log(self, row: Mapping[str, float | int]) -> None:
        """Logs one evaluation row as one W&B history row.

        No ``step=`` is passed: W&B numbers rows itself (``_step``), and the x-axis is the
        ``client_updates`` value in the row, so rows never clash on a non-monotonic step. Numpy
        and torch scalars are turned into Python numbers; a list or tuple of numbers is logged as a
        ``wandb.Histogram`` (integers get one bin per value, up to 64 bins); an empty one is left out.

        Args:
            row: metric name to value, e.g. ``{"client_updates": 40, "sim_time": 123.4,
                "test/accuracy": 0.81, "staleness/histogram": [0, 2, 1, 4], ...}``.

        Raises:
            TypeError: a key is not a string.
            RuntimeError: the run is finished, or not called from the main thread.
        """
        self._check_open("log")
        values: dict[str, Any] = {}
        for key, value in row.items():
            if not isinstance(key, str):
                raise TypeError(f"metric names must be strings, got {key!r}")
            if isinstance(value, (list, tuple)):
                if value and self._mode != "disabled":
                    values[key] = _histogram(value)
                continue
            values[key] = _plain(value)
        self._run.log({**self._pending, **values})
        self._pending.clear()
        accuracy = values.get(_BEST_KEY)
        if (
            isinstance(accuracy, (int, float))
            and not math.isnan(accuracy)
            and (self._best is None or accuracy > self._best)
        ):
            self._best = float(accuracy)
            best = {"best/test_accuracy": self._best}
            best.update({f"best/{k}": values[k] for k in _BEST_CONTEXT if k in values})
            self._run.summary.update(best)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Adds a ``wandb.Table`` (e.g. the partition: one row per client) under ``key`` to the next
        :meth:`log` row, so that every history row is an evaluation."""
        self._check_open("log_table")
        if self._mode == "disabled":
            return
        import wandb

        self._pending[key] = wandb.Table(columns=list(columns), data=[[_plain(v) for v in r] for r in rows])

    def log_image(self, key: str, path: str | os.PathLike) -> None:
        """Adds an image file (a figure) under ``key`` to the next :meth:`log` row."""
        self._check_open("log_image")
        if self._mode == "disabled":
            return
        import wandb

        self._pending[key] = wandb.Image(os.fspath(path))

    def note_best(self, values: Sequence[float]) -> None:
        """Tells the tracker the ``test/accuracy`` values logged before (by the run this one continues),
        so that ``best/*`` is only replaced by a better value."""
        seen = [float(v) for v in values if not math.isnan(float(v))]
        if seen and (self._best is None or max(seen) > self._best):
            self._best = max(seen)

    def set_summary(self, values: Mapping[str, Any]) -> None:
        """Sets (overwrites) run summary values, e.g. final results or wall-clock totals.

        Args:
            values: summary key to value.

        Raises:
            RuntimeError: the run is finished, or not called from the main thread.
        """
        self._check_open("set_summary")
        self._run.summary.update({k: _plain(v) for k, v in values.items()})

    def finish(self, exit_code: int = 0) -> None:
        """Finishes the run and waits until W&B has written it; later calls do nothing.

        wandb-core writes the run's log file asynchronously: ``wandb.Run.finish()`` (wandb 0.31)
        can return before ``run-<id>.wandb`` holds the run's exit record. So, when there is a run
        folder, this also calls ``wandb.teardown()``, which shuts down W&B's service process and
        waits for it to exit, i.e. until every run it wrote is on disk (online: uploaded). The
        next :class:`WandbTracker` (or ``wandb.init``) starts a new service. If the service exits
        with an error, this warns instead of exiting the process as ``wandb.teardown()`` would.

        Args:
            exit_code: 0 for success; anything else marks the run as failed.

        Raises:
            RuntimeError: not called from the main thread.
        """
        if self._finished:
            return
        _require_main_thread("WandbTracker.finish()")
        self._finished = True
        _OPEN_TRACKERS.discard(self)
        self._run.finish(exit_code=exit_code)
        if self._run_dir is not None:
            _teardown()

    def __enter__(self) -> WandbTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def _check_open(self, what: str) -> None:
        _require_main_thread(f"WandbTracker.{what}()")
        if self._finished:
            raise RuntimeError(f"WandbTracker.{what}() called after finish()")


class _NullRun:
    """What ``logging.wandb.mode=disabled`` logs to: nothing, without importing W&B."""

    def __init__(self, run_id: str | None) -> None:
        import uuid

        self.id = run_id or uuid.uuid4().hex[:8]
        self.summary: dict[str, Any] = {}

    def log(self, row: Mapping[str, Any]) -> None:
        pass

    def define_metric(self, *args: Any, **kwargs: Any) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _histogram(values: Sequence[Any]) -> Any:
    """A ``wandb.Histogram``; integers (staleness 0, 1, 2, ...) get bins centred on each value, up to 64."""
    import numpy as np
    import wandb

    numbers = np.asarray([_plain(v) for v in values])
    low, high = float(numbers.min()), float(numbers.max())
    if np.issubdtype(numbers.dtype, np.integer) and high - low < 64:
        return wandb.Histogram(np_histogram=np.histogram(numbers, bins=np.arange(low - 0.5, high + 1.5)))
    return wandb.Histogram(numbers.tolist(), num_bins=64)


def _teardown() -> None:
    """``wandb.teardown()``: waits for W&B's service to write everything and exit."""
    import wandb

    try:
        wandb.teardown()
    except SystemExit as error:  # raised when the service process exits with an error
        warnings.warn(
            f"W&B's service exited with code {error.code} on teardown; the run's files may be incomplete",
            RuntimeWarning,
            stacklevel=3,
        )


def _quiet_settings(wandb: Any, mode: str) -> Any:
    """Builds the ``wandb.Settings`` for :class:`WandbTracker`, keeping only fields wandb knows."""
    wanted = dict(_QUIET_SETTINGS)
    # Offline: say nothing at all. Online: keep W&B's warnings and the run's URL. (Disabled: no wandb.)
    wanted["silent" if mode != "online" else "quiet"] = True
    known = getattr(wandb.Settings, "model_fields", None)
    if known is not None:
        wanted = {k: v for k, v in wanted.items() if k in known}
    return wandb.Settings(**wanted)
