"""What every benchmark shares: the one timing helper (:func:`timed`, and :func:`timed_run` for a whole
federated run), :class:`BenchmarkFailed`, medians, interleaving, and the process's resident memory.

A benchmark times nothing but through :func:`timed`: ``time.perf_counter`` around the call, the device
synchronised before and after (CUDA), and a failure of what it times (an exception, or a result its check
rejects) raised as :class:`BenchmarkFailed`, never returned as a figure.
"""

from __future__ import annotations

import itertools
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from afl.config import load_config
from afl.experiments.run import RunResult, run

T = TypeVar("T")

#: Overrides that make a timed run quiet: no W&B, no progress bar.
QUIET = ["logging.wandb.mode=disabled", "logging.progress=false"]

#: Numbers the output folders of :func:`timed_run` (fresh ones: a run never overwrites a folder).
_FOLDERS = itertools.count()


class BenchmarkFailed(RuntimeError):
    """What a benchmark timed did not do what it is timed for: its figure would time a failure."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleaved(fns: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Each function ``repeat`` times, A B C, C B A, A B C, ...; each returns the seconds it measured."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeat):
        for name in list(fns) if rep % 2 == 0 else list(fns)[::-1]:
            times[name].append(fns[name]())
    return times


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (CUDA; nothing to wait for elsewhere)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], T],
    what: str,
    device: torch.device | str | None = None,
    check: Callable[[T], str | None] | None = None,
) -> tuple[float, T]:
    """The wall seconds of ``fn()`` and what it returned: ``device`` synchronised before the clock starts
    and before it stops (its queued work counts), so that a GPU's asynchronous work is timed whole.

    Args:
        fn: what is timed.
        what: its name in the error.
        device: the device ``fn`` works on; CUDA is synchronised.
        check: the result → None if ``fn`` did what it is timed for, else why not.

    Raises:
        BenchmarkFailed: ``fn`` raised (chained), or ``check`` found what it returned wrong.
    """
    synchronize(device)
    start = time.perf_counter()
    try:
        value = fn()
        synchronize(device)
    except Exception as err:
        raise BenchmarkFailed(f"{what}: {type(err).__name__}: {err}") from err
    seconds = time.perf_counter() - start
    problem = None if check is None else check(value)
    if problem:
        raise BenchmarkFailed(f"{what}: {problem}")
    return seconds, value


def budget(settings: Sequence[str], updates: int, device: str | None = None) -> list[str]:
    """The overrides of a timed run: ``settings``, quiet, on ``device`` (``trainer.accelerator``, if
    given), ``updates`` client updates, evaluated once (at the end: the run and a plain loop do the same
    work but the machinery)."""
    on = [f"trainer.accelerator={device}"] if device is not None else []
    return [*settings, *QUIET, *on, f"federation.max_updates={updates}", f"federation.eval_every={updates}"]


def run_problem(result: RunResult) -> str | None:
    """Why a finished run is no run to time (None if it is one): no ``summary.json``, fewer client updates
    than ``federation.max_updates``, or rejected updates (failed jobs: work not done)."""
    asked, summary = result.config.federation.max_updates, result.summary
    if not (result.output_dir / "summary.json").is_file():
        return f"the run wrote no summary.json in {result.output_dir}"
    if summary["client_updates"] < asked:
        return f"the run ended at {summary['client_updates']} of {asked} client updates"
    if summary["rejected_updates"]:
        return (
            f"{summary['rejected_updates']} of the run's {summary['client_updates']} client updates were "
            f"rejected ({summary['rejected_by_reason']})"
        )
    return None


@dataclass(frozen=True)
class TimedRun:
    """A run :func:`timed_run` timed: its wall ``seconds``, its result, and (CUDA) its peak device memory."""

    seconds: float
    result: RunResult
    peak_mib: float | None


def timed_run(overrides: Sequence[str], parent: Path, device: str | None = None) -> TimedRun:
    """One federated run of ``overrides`` (:func:`afl.experiments.run.run`, writing to a fresh folder under
    ``parent``) timed by :func:`timed`; on CUDA, with its peak device memory.

    Raises:
        BenchmarkFailed: the config is wrong, the run raised, or it did not finish (:func:`run_problem`).
    """
    what = f"run {' '.join(overrides)}"
    try:
        cfg = load_config([*overrides, f"output_dir={parent / str(next(_FOLDERS))}"])
    except Exception as err:
        raise BenchmarkFailed(f"{what}: {type(err).__name__}: {err}") from err
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds, result = timed(lambda: run(cfg), what, device, run_problem)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return TimedRun(seconds, result, peak)


@dataclass
class RunArm:
    """An arm of :func:`interleaved` that times a fresh run of ``overrides`` at each call
    (:func:`timed_run`), keeping the runs' final test accuracies and (CUDA) peak device memory."""

    overrides: list[str]
    parent: Path
    device: str | None = None
    finals: set[float] = field(default_factory=set)
    peaks: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        timing = timed_run(self.overrides, self.parent, self.device)
        self.finals.add(timing.result.summary["final_test_accuracy"])
        if timing.peak_mib is not None:
            self.peaks.append(timing.peak_mib)
        return timing.seconds


def format_values(values: dict[str, Any]) -> str:
    """A benchmark's figures on one line, for its progress output."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ``getrusage``'s ru_maxrss: Linux carries that over
    an exec from the forking parent, so a fresh interpreter started by a big process reports its size."""
    return _proc_status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's resident memory now."""
    return _proc_status_mib("VmRSS")


def _proc_status_mib(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:  # not Linux
        pass
    return 0.0
