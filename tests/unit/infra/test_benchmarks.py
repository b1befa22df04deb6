"""afl-bench times what it says it times: a command that fails makes the benchmark fail, never a figure."""

from __future__ import annotations

import pytest

from afl.benchmarks import STARTUP, BenchmarkFailed, bench_startup


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
