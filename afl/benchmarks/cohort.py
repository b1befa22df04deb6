"""``afl-bench`` keys ``cohort`` (whole runs, ``federation.executor=cohort`` against threads),
``cohort_steps`` (the stacked step alone, by cohort size) and ``cohort_profile`` (where a cohort step's
time goes)."""

from __future__ import annotations

import csv
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afl.benchmarks.device import DEVICE_SETTINGS
from afl.benchmarks.overhead import SETTINGS
from afl.benchmarks.timing import RunArm, budget, interleaved, median, synchronize, timed, timed_run
from afl.client.runtime import ClientRuntime, ClientShards
from afl.messages import ClientJob
from afl.models import build_model

#: ``afl-bench`` key ``cohort``: whole runs, the cohort executor against threads, per setting and device.
#: Each is ``(overrides, the thread executor's, the cohort's)``: the same cores for both (on the CPU, the
#: threads' workers are the cohort's torch threads).
COHORT_SETTINGS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "demo": (
        ["experiment=demo"],
        ["federation.workers=2", "federation.torch_threads=1"],
        ["federation.workers=1", "federation.torch_threads=2"],
    ),
    "paper_cifar10_async": (DEVICE_SETTINGS["resnet20"], ["federation.workers=5"], []),
    "paper_cifar10_sync": (
        [*DEVICE_SETTINGS["resnet20"], "federation.mode=sync", "server.aggregator={name: fedavg}"],
        ["federation.workers=5"],
        [],
    ),
    # cross-device: 100 of 200 clients in flight, 20 samples each (one step of a job)
    "lenet_100_in_flight": (
        [
            *SETTINGS["lenet28_600"],
            "dataset.synthetic.train_size=4000",
            "partition.num_clients=200",
            "federation.concurrency=100",
        ],
        ["federation.workers=5"],
        [],
    ),
}


#: Settings that need more client updates than the others (``bench_cohort``'s ``updates`` times this).
COHORT_UPDATES = {"lenet_100_in_flight": 25}


def _arrivals(folder: Path) -> list[tuple[str, ...]]:
    """A run's arrivals as the schedule decides them: job, client, staleness, times, rejection."""
    with open(folder / "updates.csv") as f:
        keys = ("job_id", "client_id", "staleness", "dispatch_time", "arrival_time", "rejected")
        return [tuple(row[k] for k in keys) for row in csv.DictReader(f)]


def bench_cohort(device: str, names: Sequence[str], updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """Per setting (:data:`COHORT_SETTINGS`): whole runs with ``federation.executor=cohort`` against the
    thread executor, interleaved; their wall-time ratio, whether the runs' arrivals are identical, and
    each one's final accuracy."""
    out: dict[str, Any] = {}
    for name in names:
        common, threads, cohort = COHORT_SETTINGS[name]
        overrides = budget(common, updates * COHORT_UPDATES.get(name, 1), device)
        arms = {
            "thread": RunArm([*overrides, *threads], tmp / name, device),
            "cohort": RunArm([*overrides, "federation.executor=cohort", *cohort], tmp / name, device),
        }
        # warm-up, and the arrivals to compare
        warm = {arm: timed_run(a.overrides, tmp / name).result.output_dir for arm, a in arms.items()}
        same = _arrivals(warm["thread"]) == _arrivals(warm["cohort"])
        times = {arm: median(v) for arm, v in interleaved(dict(arms), repeat).items()}
        out[name] = {
            "thread_s": times["thread"],
            "cohort_s": times["cohort"],
            "cohort_vs_thread": times["cohort"] / times["thread"],
            "same_arrivals": same,
            "thread_final_accuracy": min(arms["thread"].finals),
            "cohort_final_accuracy": min(arms["cohort"].finals),
        }
    return out


def bench_cohort_steps(
    device: str, models: Sequence[str], sizes: Sequence[int], steps: int = 30
) -> dict[str, Any]:
    """Cohort training alone (:func:`~afl.client.cohort.train_cohort`, a Lightning fit of the stacked
    model): ms per step for cohorts of ``sizes`` clients, each with ``steps`` batches of 64 (one local
    epoch), with cuDNN's autotuner off and on: where a cohort size is slow."""
    from afl.client.cohort import train_cohort

    out: dict[str, Any] = {}
    saved = torch.backends.cudnn.benchmark
    try:
        for name in models:
            row: dict[str, float] = {}
            for size in sizes:
                runtime, jobs = _cohort_of(device, name, size, steps)
                for autotune in (False, True):
                    torch.backends.cudnn.benchmark = autotune
                    train_cohort(runtime, jobs)  # warm-up (and the autotuner's trials)
                    key = f"J{size}{'_autotune' if autotune else ''}_ms"
                    once = functools.partial(train_cohort, runtime, jobs)
                    seconds, _ = timed(once, f"cohort steps {name} {key}", runtime.placement.device)
                    row[key] = seconds / steps * 1e3
            out[name] = row
    finally:
        torch.backends.cudnn.benchmark = saved
    return out


def profile_cohort_step(
    device: str, model: str = "resnet20", size: int = 5, steps: int = 10
) -> dict[str, Any]:
    """Where a cohort step's time goes (``torch.profiler``, a cohort of ``size`` clients, ``steps``
    batches of 64 each): the operators with the most self time on the host and on the device, ms per
    step."""
    from torch.profiler import ProfilerActivity, profile

    from afl.client.cohort import train_cohort

    runtime, jobs = _cohort_of(device, model, size, steps)
    train_cohort(runtime, jobs)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        train_cohort(runtime, jobs)
        synchronize(torch.device(device))
    events = prof.key_averages()
    out: dict[str, Any] = {}
    for where, attr in (("host", "self_cpu_time_total"), ("device", "self_device_time_total")):
        ranked = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:12]
        out[f"{where}_ms_per_step"] = {
            e.key: round(getattr(e, attr, 0) / 1e3 / steps, 3) for e in ranked if getattr(e, attr, 0) > 0
        }
    return out


def _cohort_of(device: str, model: str, size: int, steps: int) -> tuple[ClientRuntime, list[ClientJob]]:
    """A runtime on ``device`` and ``size`` jobs of ``steps`` batches of 64 random images each."""
    from afl.client.device import Placement

    channels, side = {"resnet20": (3, 32), "cnn": (1, 28), "lenet": (1, 28)}[model]
    n = steps * 64
    x = torch.randn(size * n, channels, side, side)
    y = torch.randint(0, 10, (size * n,))
    shards = ClientShards(x, y, [np.arange(i * n, (i + 1) * n) for i in range(size)])
    factory = functools.partial(build_model, model, in_channels=channels, num_classes=10, image_size=side)
    runtime = ClientRuntime(
        shards, factory, num_classes=10, local_epochs=1, batch_size=64, placement=Placement(kind=device)
    ).on_device()
    state = factory().state_dict()
    return runtime, [ClientJob(job_id=i, client_id=i, state=state, lr=1e-3, seed=i) for i in range(size)]
