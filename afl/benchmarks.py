"""The benchmarks behind ``afl-bench`` (torch and Lightning imported here, not by ``afl.cli.bench``).

Everything is measured side by side in one process, interleaved (A, B, A, B, ...; the order alternating
between repeats) and summarised by medians: this machine is shared and noisy, so ratios mean more than
seconds. The scale points and the start-up times run in fresh interpreters, for their peak memory and
import costs.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from afl.client.compiled import BACKEND_ENV
from afl.client.runtime import ClientRuntime, batch_loader
from afl.config import load_config
from afl.data.datasets import load_dataset
from afl.experiments.build import build, make_loop
from afl.experiments.run import run
from afl.messages import ClientJob, ClientResult
from afl.models import build_model
from afl.sim.executors import SerialExecutor

QUIET = ["logging.wandb.mode=disabled", "logging.progress=false"]

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


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _interleaved(fns: dict[str, Callable[[], float]], repeat: int) -> dict[str, list[float]]:
    """Each function ``repeat`` times, A B C, C B A, A B C, ...; each returns the seconds it measured."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeat):
        for name in list(fns) if rep % 2 == 0 else list(fns)[::-1]:
            times[name].append(fns[name]())
    return times


# ----------------------------------------------------------------------------------------------- overhead
def _plain_loop(cfg: Any, jobs: list[dict[str, Any]]) -> Callable[[], float]:
    """The same local steps as the federated run of ``cfg`` (its jobs: client, shuffle seed, LR, in
    arrival order) by a plain PyTorch loop: the same shards, model, batch size, Adam, epochs and torch
    threads; each job starts from the model the previous one ended with; one final evaluation, like the
    run's. Returns a function timing one pass."""
    setup = build(cfg)
    device = setup.placement.device  # the data is there already (the run's own shards); so is the model
    data, initial = setup.runtime.client_data, setup.model_factory().to(device)
    evaluate = setup.evaluate()
    from afl.rng import derive_seed

    def once() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(cfg.federation.torch_threads)
        start = time.perf_counter()
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
        _synchronize(device)
        elapsed = time.perf_counter() - start
        torch.set_num_threads(threads)
        return elapsed

    return once


def bench_overhead(name: str, updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """A federated run (1 and 2 worker threads) against the plain loop doing its local steps."""
    overrides = [
        *SETTINGS[name],
        *QUIET,
        f"federation.max_updates={updates}",
        f"federation.eval_every={updates}",
    ]
    counter = iter(range(10**6))

    def federated(workers: int) -> Callable[[], float]:
        def once() -> float:
            cfg = load_config(
                [*overrides, f"federation.workers={workers}", f"output_dir={tmp / str(next(counter))}"]
            )
            start = time.perf_counter()
            result = run(cfg)
            elapsed = time.perf_counter() - start
            finals.add(result.summary["final_test_accuracy"])
            return elapsed

        return once

    finals: set[float] = set()
    warm = run(load_config([*overrides, f"output_dir={tmp / 'warm-up'}"]))  # and the jobs to replay
    jobs = sorted(warm.updates, key=lambda u: u["client_updates"])
    steps = sum(u["steps"] for u in jobs)
    times = _interleaved(
        {
            "run_1_worker_s": federated(1),
            "plain_loop_s": _plain_loop(warm.config, jobs),
            "run_2_workers_s": federated(2),
        },
        repeat,
    )
    assert len(finals) == 1, f"{name}: runs with 1 and 2 workers must give the same model"
    run1, plain, run2 = (_median(times[k]) for k in ("run_1_worker_s", "plain_loop_s", "run_2_workers_s"))
    return {
        "jobs": len(jobs),
        "local_steps": steps,
        **{k: _median(v) for k, v in times.items()},
        "overhead_ratio": run1 / plain,
        "per_job_overhead_ms": (run1 - plain) / len(jobs) * 1e3,
        "worker_speedup": run1 / run2,
    }


# ----------------------------------------------------------------------------------------------- device
#: ``afl-bench --device``: the models of the paper's experiments on synthetic data of their shapes, one
#: local epoch per job (as the first GPU measurements: ``paper_cifar10``, 20,000 images of 3×32×32).
DEVICE_SETTINGS: dict[str, list[str]] = {
    "resnet20": [
        "experiment=paper_cifar10",
        "dataset.name=synthetic",
        "dataset.synthetic.channels=3",
        "dataset.synthetic.image_size=32",
        "dataset.synthetic.train_size=20000",
        "dataset.synthetic.test_size=2000",
        "client.local_epochs=1",
        "theory.enabled=false",
    ],
    "cnn": [
        "experiment=paper_mnist",
        "dataset.name=synthetic",
        "dataset.synthetic.image_size=28",
        "dataset.synthetic.train_size=20000",
        "dataset.synthetic.test_size=2000",
        "client.local_epochs=1",
        "theory.enabled=false",
    ],
    "lenet": SETTINGS["lenet28_600"],
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_run(
    overrides: list[str], device: str, folder: Path, counter: Any, finals: set[float], peaks: list[float]
) -> Callable[[], float]:
    """A function timing one run of ``overrides``, noting its final accuracy and peak device memory."""

    def once() -> float:
        cfg = load_config([*overrides, f"output_dir={folder / str(next(counter))}"])
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = run(cfg)
        elapsed = time.perf_counter() - start
        if device == "cuda":
            peaks.append(torch.cuda.max_memory_allocated() / 2**20)
        finals.add(result.summary["final_test_accuracy"])
        return elapsed

    return once


def _device_overrides(name: str, device: str, updates: int) -> list[str]:
    """The overrides of a model's whole run on ``device`` (:data:`DEVICE_SETTINGS`), quiet, evaluated once."""
    return [
        *DEVICE_SETTINGS[name],
        *QUIET,
        f"trainer.accelerator={device}",
        f"federation.max_updates={updates}",
        f"federation.eval_every={updates}",
    ]


def bench_device(
    device: str, models: Sequence[str], updates: int, repeat: int, tmp: Path, workers: int = 5
) -> dict[str, Any]:
    """Per model (:data:`DEVICE_SETTINGS`): whole runs on ``device`` (``trainer.accelerator``) with 1 and
    ``workers`` threads against a plain PyTorch loop doing the same local steps there (data and model on
    the device), in ms per local step; the peak device memory of a run; with Ray installed and CUDA, the
    run on ``workers`` Ray actors sharing the GPU (``ray.num_gpus`` = 1 / workers)."""
    out: dict[str, Any] = {}
    for name in models:
        overrides = _device_overrides(name, device, updates)
        finals: set[float] = set()
        peaks: list[float] = []
        counter = iter(range(10**6))
        timed: tuple[Any, ...] = (device, tmp / name, counter, finals, peaks)
        warm = run(load_config([*overrides, f"output_dir={tmp / name / 'warm-up'}"]))
        jobs = sorted(warm.updates, key=lambda u: u["client_updates"])
        steps = sum(u["steps"] for u in jobs)
        arms = {
            "run_1_worker": _device_run([*overrides, "federation.workers=1"], *timed),
            "plain_loop": _plain_loop(warm.config, jobs),
            f"run_{workers}_workers": _device_run([*overrides, f"federation.workers={workers}"], *timed),
        }
        if device == "cuda" and importlib.util.find_spec("ray") is not None:
            share = f"ray.num_gpus={1 / workers:.4g}"
            ray = [*overrides, "federation.executor=ray", f"federation.workers={workers}", share]
            arms[f"ray_{workers}_actors"] = _device_run(ray, *timed)
        times = _interleaved(arms, repeat)
        ms = {f"{k}_ms_per_step": _median(v) / steps * 1e3 for k, v in times.items()}
        out[name] = {
            "jobs": len(jobs),
            "local_steps": steps,
            **ms,
            "run_vs_plain": ms["run_1_worker_ms_per_step"] / ms["plain_loop_ms_per_step"],
            "same_results_for_any_workers": len(finals) == 1,
            **({"peak_device_mib": max(peaks)} if peaks else {}),
        }
    return out


#: ``trainer.compile``'s mode the device benchmark measures: CUDA graphs on a GPU; on a CPU (where inductor
#: captures no CUDA graph) its default.
COMPILE_MODE = {"cuda": "reduce-overhead", "cpu": "default"}


def bench_compiled(
    device: str,
    models: Sequence[str],
    updates: int,
    repeat: int,
    tmp: Path,
    mode: str | None = None,
    workers: int = 5,
) -> dict[str, Any]:
    """Per model (:data:`DEVICE_SETTINGS`): whole runs on ``device`` with the client's training step
    compiled (``trainer.compile=mode``, default :data:`COMPILE_MODE`'s) beside the same runs eager, in ms
    per local step: 1 worker eager, 1 worker and ``workers`` threads compiled, interleaved, medians of
    ``repeat``. Measured after one compiled run that compiles (``first_run_s``, beside the model's first
    eager run's); the runs after it reuse the compiled code (:mod:`afl.client.compiled`), and ``compile_s``
    is what the first compiled run took more than the later ones (the compilation, and under
    ``reduce-overhead`` the CUDA graphs' first recording). The compiled runs' accuracies are not the eager
    runs' to the bit (inductor reorders float operations), so none is compared here (tests do:
    tests/integration/test_compile.py)."""
    mode = mode or COMPILE_MODE[device]
    out: dict[str, Any] = {}
    for name in models:
        overrides = _device_overrides(name, device, updates)
        compiled = [*overrides, f"trainer.compile={mode}"]
        counter = iter(range(10**6))
        timed: tuple[Any, ...] = (device, tmp / f"{name}-compiled", counter, set(), [])
        first: dict[str, float] = {}
        for kind, first_overrides in (("eager", overrides), ("compiled", compiled)):
            start = time.perf_counter()
            result = run(load_config([*first_overrides, f"output_dir={tmp / name / f'first-{kind}'}"]))
            first[kind] = time.perf_counter() - start
            if kind == "eager":
                jobs, steps = len(result.updates), sum(u["steps"] for u in result.updates)
        times = _interleaved(
            {
                "run_1_worker": _device_run([*overrides, "federation.workers=1"], *timed),
                "run_1_worker_compiled": _device_run([*compiled, "federation.workers=1"], *timed),
                f"run_{workers}_workers_compiled": _device_run(
                    [*compiled, f"federation.workers={workers}"], *timed
                ),
            },
            repeat,
        )
        ms = {f"{k}_ms_per_step": _median(v) / steps * 1e3 for k, v in times.items()}
        out[name] = {
            "mode": mode,
            "backend": os.environ.get(BACKEND_ENV) or "inductor",
            "jobs": jobs,
            "local_steps": steps,
            **ms,
            "compiled_vs_eager": ms["run_1_worker_compiled_ms_per_step"] / ms["run_1_worker_ms_per_step"],
            "first_run_s": first,
            "compile_s": first["compiled"] - _median(times["run_1_worker_compiled"]),
        }
    return out


# ----------------------------------------------------------------------------------------------- cohort
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
    import csv

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
        budget = updates * COHORT_UPDATES.get(name, 1)
        overrides = [
            *common,
            *QUIET,
            f"trainer.accelerator={device}",
            f"federation.max_updates={budget}",
            f"federation.eval_every={budget}",
        ]
        arms = {
            "thread": [*overrides, *threads],
            "cohort": [*overrides, "federation.executor=cohort", *cohort],
        }
        finals: dict[str, set[float]] = {arm: set() for arm in arms}
        counter = iter(range(10**6))
        for arm, arm_overrides in arms.items():  # warm-up, and the arrivals to compare
            run(load_config([*arm_overrides, f"output_dir={tmp / name / arm}"]))
        same = _arrivals(tmp / name / "thread") == _arrivals(tmp / name / "cohort")
        timed = {
            arm: _device_run(arm_overrides, device, tmp / name, counter, finals[arm], [])
            for arm, arm_overrides in arms.items()
        }
        times = {arm: _median(v) for arm, v in _interleaved(timed, repeat).items()}
        out[name] = {
            "thread_s": times["thread"],
            "cohort_s": times["cohort"],
            "cohort_vs_thread": times["cohort"] / times["thread"],
            "same_arrivals": same,
            "thread_final_accuracy": min(finals["thread"]),
            "cohort_final_accuracy": min(finals["cohort"]),
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
                    _synchronize(runtime.placement.device)
                    start = time.perf_counter()
                    train_cohort(runtime, jobs)
                    _synchronize(runtime.placement.device)
                    key = f"J{size}{'_autotune' if autotune else ''}_ms"
                    row[key] = (time.perf_counter() - start) / steps * 1e3
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
        _synchronize(torch.device(device))
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
    import numpy as np

    from afl.client.device import Placement
    from afl.client.runtime import ClientShards

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


# ----------------------------------------------------------------------------------------------- scale
def scale_point(clients: int, in_flight: int, arrivals: int, samples_per_client: int = 4) -> dict[str, Any]:
    """The loop at scale, server side only: ``clients`` registered with tiny synthetic shards (8×8, iid),
    ``in_flight`` jobs at once, ``arrivals`` client updates; the run built as ``run`` builds it (data,
    partition, client shards, delay model) and driven by :func:`afl.experiments.build.make_loop`.

    The jobs train zero local steps (each returns its dispatched model, as a client with nothing to do
    would): the time they take is measured inside them and subtracted, so ``server_ms_per_arrival`` is
    the loop's own work per arrival (dispatch, event queue, checks, staleness, aggregation, bookkeeping).
    Run it in a fresh interpreter: ``peak_rss_mib`` is the process's peak resident memory.
    """
    cfg = load_config(
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
    torch.set_num_threads(cfg.federation.torch_threads)
    rss_start = _rss_mib()
    start = time.perf_counter()
    setup = build(cfg)
    build_s = time.perf_counter() - start
    rss_built = _rss_mib()
    job_seconds = [0.0]

    def zero_steps(job: ClientJob) -> ClientResult:
        t = time.perf_counter()
        state = {k: v.clone() for k, v in job.state.items()}
        result = ClientResult(
            job.job_id, job.client_id, state, setup.parts[job.client_id].size, 0, math.nan, math.nan
        )
        job_seconds[0] += time.perf_counter() - t
        return result

    with SerialExecutor(zero_steps) as executor:
        loop = make_loop(setup, executor)
        start = time.perf_counter()
        loop.run()
        loop_s = time.perf_counter() - start
    return {
        "clients": clients,
        "in_flight": in_flight,
        "arrivals": arrivals,
        "build_s": build_s,
        "server_ms_per_arrival": (loop_s - job_seconds[0]) / arrivals * 1e3,  # with 1 evaluation: µs
        "zero_step_job_ms": job_seconds[0] / arrivals * 1e3,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_imports_mib": rss_start,
        "rss_after_build_mib": rss_built,
    }


def _peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ``getrusage``'s ru_maxrss: Linux carries that over
    an exec from the forking parent, so a fresh interpreter started by a big process reports its size."""
    return _proc_status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    """This process's resident memory now."""
    return _proc_status_mib("VmRSS")


def _proc_status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:  # not Linux
        pass
    return 0.0


def bench_scale(points: Sequence[int], in_flight: int, arrivals: int) -> dict[str, Any]:
    """:func:`scale_point` at each number of clients, each in a fresh interpreter."""
    results = []
    for clients in points:
        code = (
            "import json\nfrom afl.benchmarks import scale_point\n"
            f"print(json.dumps(scale_point({clients}, {in_flight}, {arrivals})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  scale {clients:>7,} clients: {_format(results[-1])}", flush=True)
    return {"in_flight": in_flight, "arrivals": arrivals, "points": results}


# ----------------------------------------------------------------------------------------------- startup
#: Fresh interpreters timed by :func:`bench_startup`: their arguments and the exit status that means
#: they did what they are timed for (a config error exits 2).
STARTUP: dict[str, tuple[list[str], int]] = {
    "help": (["-m", "afl.cli.train", "--help"], 0),
    "config_error": (["-m", "afl.cli.train", "client.lr=-1"], 2),
    # what a run imports before it starts (torch, Lightning, ...)
    "import_run": (["-c", "import afl.experiments.run"], 0),
}


class BenchmarkFailed(RuntimeError):
    """What a benchmark timed did not do what it is timed for: its figure would time a failure."""


def bench_startup(repeat: int, commands: dict[str, tuple[list[str], int]] | None = None) -> dict[str, float]:
    """Wall seconds of fresh interpreters: ``--help``, a config error, importing the run machinery.

    Raises:
        BenchmarkFailed: a command exited with another status than the one it is timed for.
    """
    commands = STARTUP if commands is None else commands
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (args, expected) in commands.items():
            start = time.perf_counter()
            done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
            times[name].append(time.perf_counter() - start)
            if done.returncode != expected:
                last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
                raise BenchmarkFailed(f"startup {name}: exit {done.returncode}, expected {expected}: {last}")
    return {name: _median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------------------------- one job
def bench_client(model: str, side: int, samples: int, epochs: int, repeat: int) -> dict[str, Any]:
    """One client job: a Lightning Trainer (:class:`ClientRuntime`) against a plain loop, same steps."""
    data = load_dataset(
        "synthetic", root="data", synthetic={"train_size": samples, "test_size": 10, "image_size": side}
    )
    x, y = data.train.x, data.train.y

    def factory() -> torch.nn.Module:
        return build_model(model, in_channels=1, num_classes=10, image_size=side)

    state = factory().state_dict()
    runtime = ClientRuntime([(x, y)], factory, num_classes=10, local_epochs=epochs, batch_size=32)

    def lightning_job() -> float:
        start = time.perf_counter()
        runtime(ClientJob(0, 0, state, 1e-3, 0))
        return time.perf_counter() - start

    def plain_job() -> float:
        start = time.perf_counter()
        m = factory()
        m.load_state_dict(state)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        batches = batch_loader(x, y, 32, 0)
        for _ in range(epochs):
            for xb, yb in batches:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                opt.step()
        {k: v.detach().clone() for k, v in m.state_dict().items()}
        return time.perf_counter() - start

    lightning_job(), plain_job()  # warm-up
    times = _interleaved({"lightning_ms": lightning_job, "plain_ms": plain_job}, repeat)
    lt, pt = _median(times["lightning_ms"]), _median(times["plain_ms"])
    return {"lightning_ms": lt * 1e3, "plain_ms": pt * 1e3, "ratio": lt / pt, "extra_ms": (lt - pt) * 1e3}


def bench_ray(updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """The demo with 2 workers: Ray actors on a local cluster against threads (same jobs, same model).

    Each executor runs ``updates`` and ``3 × updates`` client updates; the difference between the two
    budgets is the cost of ``2 × updates`` jobs, free of what a run pays once (for Ray: starting its actors,
    whose processes import torch and Lightning). Ray's own start (``ray.init``, once per process) is
    measured apart.
    """
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return {"skipped": 'ray is not installed (pip install -e ".[ray]")'}
    import ray

    counter = iter(range(10**6))
    finals: dict[int, set[float]] = {updates: set(), 3 * updates: set()}

    def federated(executor: str, budget: int) -> Callable[[], float]:
        def once() -> float:
            cfg = load_config(
                [
                    *SETTINGS["demo"],
                    *QUIET,
                    f"federation.max_updates={budget}",
                    f"federation.eval_every={budget}",
                    "federation.workers=2",
                    f"federation.executor={executor}",
                    f"output_dir={tmp / str(next(counter))}",
                ]
            )
            start = time.perf_counter()
            finals[budget].add(run(cfg).summary["final_test_accuracy"])
            return time.perf_counter() - start

        return once

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    init_s = time.perf_counter() - start
    try:
        federated("ray", updates)()  # warm-up
        runs = {f"{executor}_{n}_s": federated(executor, n) for executor in ("thread", "ray") for n in finals}
        times = {k: _median(v) for k, v in _interleaved(runs, repeat).items()}
    finally:
        ray.shutdown()
    assert all(len(f) == 1 for f in finals.values()), "ray and thread executors must give the same model"
    per_job = {
        executor: (times[f"{executor}_{3 * updates}_s"] - times[f"{executor}_{updates}_s"]) / (2 * updates)
        for executor in ("thread", "ray")
    }
    return {
        "ray_init_s": init_s,
        **times,
        "thread_per_job_ms": per_job["thread"] * 1e3,
        "ray_per_job_ms": per_job["ray"] * 1e3,
        "per_job_ratio": per_job["ray"] / per_job["thread"],
        "per_job_extra_ms": (per_job["ray"] - per_job["thread"]) * 1e3,
        "ray_run_start_s": (times[f"ray_{updates}_s"] - times[f"thread_{updates}_s"])
        - (per_job["ray"] - per_job["thread"]) * updates,
    }


# ----------------------------------------------------------------------------------------------- all
def _format(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


def run_device(device: str, quick: bool, only_cohort: bool = False) -> dict[str, Any]:
    """``afl-bench --device cuda``: the device benchmarks alone (the CPU's keys come from ``afl-bench``);
    ``only_cohort``: the cohort executor's alone (``--cohort``)."""
    repeat = 2 if quick else 3
    out: dict[str, Any] = {"quick": quick, "torch": torch.__version__, "device": device, "repeats": repeat}
    if device == "cuda":
        out["card"] = torch.cuda.get_device_name()
    if not only_cohort:
        print(f"runs on {device} vs a plain loop there ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out["device_runs"] = bench_device(
                device, ("resnet20", "cnn", "lenet"), 10 if quick else 20, repeat, Path(tmp)
            )
        for name, values in out["device_runs"].items():
            print(f"  {name}: {_format(values)}", flush=True)
        print(
            f"runs on {device} with the client step compiled ({COMPILE_MODE[device]}) vs eager ...",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            out["compiled_runs"] = bench_compiled(
                device, ("resnet20", "cnn"), 10 if quick else 20, repeat, Path(tmp)
            )
        for name, values in out["compiled_runs"].items():
            print(f"  {name}: {_format(values)}", flush=True)
    print(f"the cohort executor vs threads on {device} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        names = ("paper_cifar10_async", "paper_cifar10_sync", "lenet_100_in_flight")
        out["cohort"] = bench_cohort(device, names, 10 if quick else 20, repeat - 1, Path(tmp))
    for name, values in out["cohort"].items():
        print(f"  {name}: {_format(values)}", flush=True)
    print("the stacked step alone, by cohort size ...", flush=True)
    out["cohort_steps"] = bench_cohort_steps(device, ("resnet20", "cnn"), (1, 4, 5, 8, 10, 16, 20))
    for name, values in out["cohort_steps"].items():
        print(f"  {name}: {_format(values)}", flush=True)
    print("where a cohort step's time goes (ResNet-20, 5 clients) ...", flush=True)
    out["cohort_profile"] = profile_cohort_step(device)
    for name, values in out["cohort_profile"].items():
        print(f"  {name}: {_format(values)}", flush=True)
    return out


def bench_jobs(updates: int, repeat: int, tmp: Path) -> dict[str, Any]:
    """A comparison of 8 short runs (the demo, afl and sync × 4 seeds) with ``--jobs 2`` against
    ``--jobs 1``, interleaved; wall seconds (medians) and their ratio, after checking that both wrote the
    same results.

    Raises:
        BenchmarkFailed: the two wrote different results.
    """
    from afl.experiments.compare import compare
    from afl.experiments.outputs import VOLATILE_SUMMARY_KEYS

    overrides = ["experiment=demo", f"federation.max_updates={updates}", "logging.wandb.mode=disabled"]
    times: dict[int, list[float]] = {1: [], 2: []}
    tables: dict[int, Any] = {}
    for i in range(repeat):
        for jobs in (1, 2):
            start = time.perf_counter()
            result, _ = compare(
                [*overrides, "logging.progress=false", f"output_dir={tmp / f'{jobs}-{i}'}"],
                ["afl", "sync"],
                [0, 1, 2, 3],
                jobs=jobs,
            )
            times[jobs].append(time.perf_counter() - start)
            tables[jobs] = [
                {k: v for k, v in r["summary"].items() if k not in VOLATILE_SUMMARY_KEYS}
                for per_seed in result.runs.values()
                for r in per_seed.values()
            ]
    if tables[1] != tables[2]:
        raise BenchmarkFailed("jobs: --jobs 2 wrote other results than --jobs 1")
    one, two = _median(times[1]), _median(times[2])
    return {"runs": 8, "jobs_1_s": one, "jobs_2_s": two, "ratio_2_over_1": two / one, "same_results": True}


def run_all(quick: bool) -> dict[str, Any]:
    """Every benchmark; the JSON document ``afl-bench --json`` writes."""
    repeat = 3 if quick else 5
    torch.set_num_threads(1)
    out: dict[str, Any] = {
        "quick": quick,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "repeats": repeat,
    }
    print("start-up (fresh interpreters) ...", flush=True)
    out["startup_s"] = bench_startup(repeat)
    print(f"  {_format(out['startup_s'])}", flush=True)
    settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, updates in (("lenet28_600", 20 if quick else 60), ("demo", 60 if quick else 300)):
            print(f"{name}: a federated run vs a plain loop, {updates} client updates ...", flush=True)
            settings[name] = bench_overhead(name, updates, repeat, Path(tmp) / name)
            print(f"  {_format(settings[name])}", flush=True)
        print("the cohort executor vs threads, the demo on 2 cores ...", flush=True)
        out["cohort"] = bench_cohort("cpu", ("demo",), 60 if quick else 300, repeat, Path(tmp) / "cohort")
        print(f"  demo: {_format(out['cohort']['demo'])}", flush=True)
        print("a comparison of 8 runs, --jobs 2 vs --jobs 1 ...", flush=True)
        out["jobs"] = bench_jobs(30 if quick else 60, 2 if quick else 3, Path(tmp) / "jobs")
        print(f"  {_format(out['jobs'])}", flush=True)
        print("Ray actors vs threads, the demo with 2 workers ...", flush=True)
        out["ray"] = bench_ray(60 if quick else 300, repeat, Path(tmp) / "ray")
        print(f"  {_format(out['ray'])}", flush=True)
    out["settings"] = settings
    for key in ("overhead_ratio", "per_job_overhead_ms", "worker_speedup"):
        out[key] = {name: values[key] for name, values in settings.items()}
    print("one client job: Lightning vs plain ...", flush=True)
    out["client_job"] = {
        "lenet28_600": bench_client("lenet", 28, 600, 1, 2 * repeat + 1),
        "cnn8_120x2": bench_client("cnn", 8, 120, 2, 2 * repeat + 1),
    }
    for name, values in out["client_job"].items():
        print(f"  {name}: {_format(values)}", flush=True)
    print("scale: server-side cost per arrival and peak memory (fresh interpreters) ...", flush=True)
    out["scale"] = bench_scale((1_000, 10_000, 100_000), in_flight=1_000, arrivals=2_000 if quick else 10_000)
    return out
