"""``afl-bench`` key ``ray``: the demo on Ray actors against threads (skipped without Ray)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from afl.benchmarks.overhead import SETTINGS
from afl.benchmarks.timing import BenchmarkFailed, RunArm, budget, interleaved, median, timed

EXECUTORS = ("thread", "ray")


def bench_ray(updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """The demo with 2 workers: Ray actors on a local cluster against threads (same jobs, same model).

    Each executor runs ``updates`` and ``3 × updates`` client updates; the difference between the two
    budgets is the cost of ``2 × updates`` jobs, free of what a run pays once (for Ray: starting its actors,
    whose processes import torch and Lightning). Ray's own start (``ray.init``, once per process) is
    measured apart.

    Raises:
        BenchmarkFailed: a run failed, or Ray and threads gave different models.
    """
    if importlib.util.find_spec("ray") is None:
        return {"skipped": 'ray is not installed (pip install -e ".[ray]")'}
    import ray

    budgets = (updates, 3 * updates)
    arms = {
        f"{executor}_{n}_s": RunArm(
            [*budget(SETTINGS["demo"], n), "federation.workers=2", f"federation.executor={executor}"], tmp
        )
        for executor in EXECUTORS
        for n in budgets
    }
    init_s, _ = timed(
        lambda: ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR), "ray.init"
    )
    try:
        arms[f"ray_{updates}_s"]()  # warm-up
        times = {k: median(v) for k, v in interleaved(dict(arms), repeat).items()}
    finally:
        ray.shutdown()
    if any(len(arms[f"thread_{n}_s"].finals | arms[f"ray_{n}_s"].finals) != 1 for n in budgets):
        raise BenchmarkFailed("ray and thread executors must give the same model")
    return {"ray_init_s": init_s, **times, **_per_job(times, updates)}


def _per_job(times: dict[str, float], updates: int) -> dict[str, float]:
    """The cost of a job on each executor (the two budgets' difference), and what a Ray run pays once."""
    per_job = {
        executor: (times[f"{executor}_{3 * updates}_s"] - times[f"{executor}_{updates}_s"]) / (2 * updates)
        for executor in EXECUTORS
    }
    return {
        "thread_per_job_ms": per_job["thread"] * 1e3,
        "ray_per_job_ms": per_job["ray"] * 1e3,
        "per_job_ratio": per_job["ray"] / per_job["thread"],
        "per_job_extra_ms": (per_job["ray"] - per_job["thread"]) * 1e3,
        "ray_run_start_s": (times[f"ray_{updates}_s"] - times[f"thread_{updates}_s"])
        - (per_job["ray"] - per_job["thread"]) * updates,
    }
