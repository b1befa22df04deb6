"""``afl-bench`` key ``jobs``: a comparison of 8 short runs with ``--jobs 2`` against ``--jobs 1``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from afl.benchmarks.timing import BenchmarkFailed, median, timed


def bench_jobs(updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """A comparison of 8 short runs (the demo, afl and sync × 4 seeds) with ``--jobs 2`` against
    ``--jobs 1``, interleaved; wall seconds (medians) and their ratio, after checking that both wrote the
    same results.

    Raises:
        BenchmarkFailed: a comparison failed, or the two wrote different results.
    """
    from afl.experiments.compare import compare
    from afl.experiments.outputs import VOLATILE_SUMMARY_KEYS

    overrides = ["experiment=demo", f"federation.max_updates={updates}", "logging.wandb.mode=disabled"]
    times: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, Any] = {}
    for i in range(repeat):
        for jobs in (1, 2):
            once = functools.partial(
                compare,
                [*overrides, "logging.progress=false", f"output_dir={tmp / f'{jobs}-{i}'}"],
                ["afl", "sync"],
                [0, 1, 2, 3],
                jobs=jobs,
            )
            seconds, (result, _) = timed(once, f"jobs: a comparison with --jobs {jobs}")
            times[jobs].append(seconds)
            tables[jobs] = [
                {k: v for k, v in r["summary"].items() if k not in VOLATILE_SUMMARY_KEYS}
                for per_seed in result.runs.values()
                for r in per_seed.values()
            ]
    if tables[1] != tables[2]:
        raise BenchmarkFailed("jobs: --jobs 2 wrote other results than --jobs 1")
    one, two = median(times[1]), median(times[2])
    return {"runs": 8, "jobs_1_s": one, "jobs_2_s": two, "ratio_2_over_1": two / one, "same_results": True}
