"""``afl-bench`` keys ``overhead_ratio``, ``per_job_overhead_ms`` and ``worker_speedup``: a federated run
against a plain PyTorch loop doing the same local steps (:func:`plain_loop`, which the device benchmarks
use too)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from afl.benchmarks.timing import BenchmarkFailed, RunArm, budget, interleaved, median, timed, timed_run
from afl.client.runtime import batch_loader
from afl.experiments.build import build
from afl.rng import derive_seed

#: The settings of ``overhead_ratio``: a preset and overrides; each is run with its final evaluation only
#: (``eval_every`` = the budget), so the federated run and the plain loop do the same work but the machinery.
SETTINGS: dict[str, list[str]] = {
    # LeNet-5 on 28×28 inputs, 10 clients of exactly 600 samples (iid), one epoch of Adam per job
    "lenet28_600": [
        "dataset.name=synthetic",
        "dataset.synthetic.image_size=28",
        "dataset.synthetic.train_size=6000",
        "dataset.synthetic.test_size=1000",
        "partition.scheme=iid",
        "partition.num_clients=10",
        "model.name=lenet",
        "theory.enabled=false",
    ],
    # the demo preset as it is (digits, the paper's CNN, 2 local epochs, validation split, theory on)
    "demo": ["experiment=demo"],
}


def plain_loop(cfg: Any, jobs: list[dict[str, Any]]) -> Callable[[], float]:
    """The same local steps as the federated run of ``cfg`` (its jobs: client, shuffle seed, LR, in
    arrival order) by a plain PyTorch loop: the same shards, model, batch size, Adam, epochs and torch
    threads; each job starts from the model the previous one ended with; one final evaluation, like the
    run's. Returns a function timing one pass (:func:`~afl.benchmarks.timing.timed`)."""
    setup = build(cfg)
    device = setup.placement.device  # the data is there already (the run's own shards); so is the model
    data, initial = setup.runtime.client_data, setup.model_factory().to(device)
    evaluate = setup.evaluate()

    def steps() -> None:
        state = setup.global_state
        for job in jobs:
            x, y = data[job["client_id"]]
            model = copy.deepcopy(initial)
            model.load_state_dict(state)
            optimizer = torch.optim.Adam(model.parameters(), lr=job["lr"])
            batches = batch_loader(
                x, y, cfg.client.batch_size, derive_seed(cfg.seed, "shuffle", job["client_id"], job["job_id"])
            )
            for _ in range(cfg.client.local_epochs):
                for xb, yb in batches:
                    optimizer.zero_grad()
                    torch.nn.functional.cross_entropy(model(xb), yb).backward()
                    optimizer.step()
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        evaluate(state)

    def once() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.federation.torch_threads)
        try:
            return timed(steps, "the plain loop", device)[0]
        finally:
            torch.set_num_threads(threads)

    return once


def bench_overhead(name: str, updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """A federated run (1 and 2 worker threads) against the plain loop doing its local steps.

    Raises:
        BenchmarkFailed: a run failed, or the runs with 1 and 2 workers gave different models.
    """
    overrides = budget(SETTINGS[name], updates)
    warm = timed_run(overrides, tmp).result  # and the jobs to replay
    jobs = sorted(warm.updates, key=lambda u: u["client_updates"])
    steps = sum(u["steps"] for u in jobs)
    one = RunArm([*overrides, "federation.workers=1"], tmp)
    two = RunArm([*overrides, "federation.workers=2"], tmp)
    times = interleaved(
        {"run_1_worker_s": one, "plain_loop_s": plain_loop(warm.config, jobs), "run_2_workers_s": two}, repeat
    )
    if len(one.finals | two.finals) != 1:
        raise BenchmarkFailed(f"{name}: runs with 1 and 2 workers must give the same model")
    run1, plain, run2 = (median(times[k]) for k in ("run_1_worker_s", "plain_loop_s", "run_2_workers_s"))
    return {
        "jobs": len(jobs),
        "local_steps": steps,
        **{k: median(v) for k, v in times.items()},
        "overhead_ratio": run1 / plain,
        "per_job_overhead_ms": (run1 - plain) / len(jobs) * 1e3,
        "worker_speedup": run1 / run2,
    }
