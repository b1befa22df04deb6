"""``afl-bench`` key ``scale``: the loop's server-side cost per arrival and the peak memory, at up to
100,000 clients, each point in a fresh interpreter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch

from afl.benchmarks.timing import QUIET, format_values, peak_rss_mib, rss_mib, timed
from afl.config import load_config
from afl.experiments.build import build, make_loop
from afl.messages import ClientJob, ClientResult
from afl.sim.executors import SerialExecutor


def _scale_config(clients: int, in_flight: int, arrivals: int, samples_per_client: int) -> Any:
    """:func:`scale_point`'s run: tiny synthetic shards (8×8, iid), theory off, one evaluation."""
    return load_config(
        [
            "dataset.name=synthetic",
            f"dataset.synthetic.train_size={clients * samples_per_client}",
            "dataset.synthetic.test_size=100",
            "partition.scheme=iid",
            f"partition.num_clients={clients}",
            "partition.min_samples=1",
            f"federation.concurrency={in_flight}",
            f"federation.max_updates={arrivals}",
            f"federation.eval_every={arrivals}",
            "theory.enabled=false",
            *QUIET,
        ]
    )


def scale_point(clients: int, in_flight: int, arrivals: int, samples_per_client: int = 4) -> dict[str, Any]:
    """The loop at scale, server side only: ``clients`` registered with tiny synthetic shards (8×8, iid),
    ``in_flight`` jobs at once, ``arrivals`` client updates; the run built as ``run`` builds it (data,
    partition, client shards, delay model) and driven by :func:`afl.experiments.build.make_loop`.

    The jobs train zero local steps (each returns its dispatched model, as a client with nothing to do
    would): the time they take is measured inside them and subtracted, so ``server_ms_per_arrival`` is
    the loop's own work per arrival (dispatch, event queue, checks, staleness, aggregation, bookkeeping).
    Run it in a fresh interpreter: ``peak_rss_mib`` is the process's peak resident memory.
    """
    cfg = _scale_config(clients, in_flight, arrivals, samples_per_client)
    torch.set_num_threads(cfg.federation.torch_threads)
    rss_start = rss_mib()
    build_s, setup = timed(lambda: build(cfg), "scale: building the run")
    rss_built = rss_mib()
    job_seconds = [0.0]

    def zero_steps(job: ClientJob) -> ClientResult:
        def result() -> ClientResult:
            state = {k: v.clone() for k, v in job.state.items()}
            size = setup.parts[job.client_id].size
            return ClientResult(job.job_id, job.client_id, state, size, 0, math.nan, math.nan)

        seconds, done = timed(result, "scale: a zero-step job")
        job_seconds[0] += seconds
        return done

    with SerialExecutor(zero_steps) as executor:
        loop = make_loop(setup, executor)
        loop_s, _ = timed(loop.run, "scale: the loop")
    return {
        "clients": clients,
        "in_flight": in_flight,
        "arrivals": arrivals,
        "build_s": build_s,
        "server_ms_per_arrival": (loop_s - job_seconds[0]) / arrivals * 1e3,  # with 1 evaluation: µs
        "zero_step_job_ms": job_seconds[0] / arrivals * 1e3,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": rss_start,
        "rss_after_build_mib": rss_built,
    }


def bench_scale(points: Sequence[int], in_flight: int, arrivals: int) -> dict[str, Any]:
    """:func:`scale_point` at each number of clients, each in a fresh interpreter."""
    results = []
    for clients in points:
        code = (
            "import json\nfrom afl.benchmarks.scale import scale_point\n"
            f"print(json.dumps(scale_point({clients}, {in_flight}, {arrivals})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  scale {clients:>7,} clients: {format_values(results[-1])}", flush=True)
    return {"in_flight": in_flight, "arrivals": arrivals, "points": results}
