"""afl-bench times what it says it times: a command that fails makes the benchmark fail, never a figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.configs import TINY

from afl.benchmarks import STARTUP, BenchmarkFailed, bench_startup, timed, timed_run


def test_the_startup_benchmark_times_commands_that_do_what_they_are_timed_for() -> None:
    """Each of afl-bench's start-up commands exits as expected here (the config error with 2), so its
    figure times that, and the figures are the medians of real interpreter starts."""
    times = bench_startup(1)
    assert set(times) == set(STARTUP)
    assert all(0.01 < t < 120 for t in times.values())


def test_a_failing_command_fails_the_benchmark() -> None:
    """A planted command that cannot run (a script that is not there: exit 2 from Python itself where
    0 is expected), and one that succeeds where a failure is expected: both stop the benchmark."""
    with pytest.raises(BenchmarkFailed, match=r"startup gone: exit 2, expected 0: .*can't open file"):
        bench_startup(1, {"gone": (["no/such/script.py"], 0)})
    with pytest.raises(BenchmarkFailed, match="startup ok: exit 0, expected 2"):
        bench_startup(1, {"ok": (["-c", "pass"], 2)})


def test_the_timing_helper_fails_the_benchmark_where_what_it_times_fails(tmp_path: Path) -> None:
    """The one timing helper every benchmark times through: a function that raises, a result its check
    rejects, and real runs that fail (every update rejected: the run raises) or finish without doing the
    work asked (rejected updates) each raise BenchmarkFailed; a run that does its work is timed."""
    with pytest.raises(BenchmarkFailed, match="planted: ZeroDivisionError"):
        timed(lambda: 1 / 0, "planted")
    with pytest.raises(BenchmarkFailed, match="planted: not 2"):
        timed(lambda: 1, "planted", check=lambda value: None if value == 2 else "not 2")
    with pytest.raises(BenchmarkFailed, match="AllUpdatesRejected: every one of the 12 client updates"):
        timed_run([*TINY, "faults.rate=1.0", "faults.kinds=[raise]"], tmp_path)
    with pytest.raises(
        BenchmarkFailed, match=r"3 of the run's 12 client updates were rejected \(\{'error': 3"
    ):
        timed_run([*TINY, "faults.rate=0.3", "faults.kinds=[raise]"], tmp_path)
    done = timed_run(TINY, tmp_path)
    assert done.seconds > 0 and done.peak_mib is None
    assert done.result.summary["client_updates"] == 12 and (done.result.output_dir / "summary.json").is_file()
