"""The benchmarks behind ``afl-bench`` (torch and Lightning imported here, not by ``afl.cli.bench``).

Everything is measured side by side in one process, interleaved (A, B, A, B, ...; the order alternating
between repeats) and summarised by medians: this machine is shared and noisy, so ratios mean more than
seconds. The scale points and the start-up times run in fresh interpreters, for their peak memory and
import costs. One module per subject; every one times through :func:`afl.benchmarks.timing.timed` (a
whole run: :func:`afl.benchmarks.timing.timed_run`), which raises :class:`BenchmarkFailed` where what it
timed failed. :func:`run_all` and :func:`run_device` are the JSON documents ``afl-bench`` writes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from afl.benchmarks.client import bench_client
from afl.benchmarks.cohort import (
    COHORT_SETTINGS,
    COHORT_UPDATES,
    bench_cohort,
    bench_cohort_steps,
    profile_cohort_step,
)
from afl.benchmarks.device import COMPILE_MODE, DEVICE_SETTINGS, bench_compiled, bench_device
from afl.benchmarks.jobs import bench_jobs
from afl.benchmarks.overhead import SETTINGS, bench_overhead
from afl.benchmarks.ray import bench_ray
from afl.benchmarks.scale import bench_scale, scale_point
from afl.benchmarks.startup import STARTUP, bench_startup
from afl.benchmarks.timing import QUIET, BenchmarkFailed, format_values, timed, timed_run

__all__ = [
    "COHORT_SETTINGS",
    "COHORT_UPDATES",
    "COMPILE_MODE",
    "DEVICE_SETTINGS",
    "QUIET",
    "SETTINGS",
    "STARTUP",
    "BenchmarkFailed",
    "bench_client",
    "bench_cohort",
    "bench_cohort_steps",
    "bench_compiled",
    "bench_device",
    "bench_jobs",
    "bench_overhead",
    "bench_ray",
    "bench_scale",
    "bench_startup",
    "profile_cohort_step",
    "run_all",
    "run_device",
    "scale_point",
    "timed",
    "timed_run",
]


def _print_rows(rows: dict[str, Any]) -> None:
    for name, values in rows.items():
        print(f"  {name}: {format_values(values)}", flush=True)


def run_device(device: str, quick: bool, only_cohort: bool = False) -> dict[str, Any]:
    """``afl-bench --device cuda``: the device benchmarks alone (the CPU's keys come from ``afl-bench``);
    ``only_cohort``: the cohort executor's alone (``--cohort``)."""
    repeat = 2 if quick else 3
    updates = 10 if quick else 20
    out: dict[str, Any] = {"quick": quick, "torch": torch.__version__, "device": device, "repeats": repeat}
    if device == "cuda":
        out["card"] = torch.cuda.get_device_name()
    if not only_cohort:
        print(f"runs on {device} vs a plain loop there ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out["device_runs"] = bench_device(
                device, ("resnet20", "cnn", "lenet"), updates, repeat, Path(tmp)
            )
        _print_rows(out["device_runs"])
        print(
            f"runs on {device} with the client step compiled ({COMPILE_MODE[device]}) vs eager ...",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            out["compiled_runs"] = bench_compiled(device, ("resnet20", "cnn"), updates, repeat, Path(tmp))
        _print_rows(out["compiled_runs"])
    print(f"the cohort executor vs threads on {device} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        names = ("paper_cifar10_async", "paper_cifar10_sync", "lenet_100_in_flight")
        out["cohort"] = bench_cohort(device, names, updates, repeat - 1, Path(tmp))
    _print_rows(out["cohort"])
    print("the stacked step alone, by cohort size ...", flush=True)
    out["cohort_steps"] = bench_cohort_steps(device, ("resnet20", "cnn"), (1, 4, 5, 8, 10, 16, 20))
    _print_rows(out["cohort_steps"])
    print("where a cohort step's time goes (ResNet-20, 5 clients) ...", flush=True)
    out["cohort_profile"] = profile_cohort_step(device)
    _print_rows(out["cohort_profile"])
    return out


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
    print(f"  {format_values(out['startup_s'])}", flush=True)
    settings: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, updates in (("lenet28_600", 20 if quick else 60), ("demo", 60 if quick else 300)):
            print(f"{name}: a federated run vs a plain loop, {updates} client updates ...", flush=True)
            settings[name] = bench_overhead(name, updates, repeat, Path(tmp) / name)
            print(f"  {format_values(settings[name])}", flush=True)
        print("the cohort executor vs threads, the demo on 2 cores ...", flush=True)
        out["cohort"] = bench_cohort("cpu", ("demo",), 60 if quick else 300, repeat, Path(tmp) / "cohort")
        print(f"  demo: {format_values(out['cohort']['demo'])}", flush=True)
        print("a comparison of 8 runs, --jobs 2 vs --jobs 1 ...", flush=True)
        out["jobs"] = bench_jobs(30 if quick else 60, 2 if quick else 3, Path(tmp) / "jobs")
        print(f"  {format_values(out['jobs'])}", flush=True)
        print("Ray actors vs threads, the demo with 2 workers ...", flush=True)
        out["ray"] = bench_ray(60 if quick else 300, repeat, Path(tmp) / "ray")
        print(f"  {format_values(out['ray'])}", flush=True)
    out["settings"] = settings
    for key in ("overhead_ratio", "per_job_overhead_ms", "worker_speedup"):
        out[key] = {name: values[key] for name, values in settings.items()}
    print("one client job: Lightning vs plain ...", flush=True)
    out["client_job"] = {
        "lenet28_600": bench_client("lenet", 28, 600, 1, 2 * repeat + 1),
        "cnn8_120x2": bench_client("cnn", 8, 120, 2, 2 * repeat + 1),
    }
    _print_rows(out["client_job"])
    print("scale: server-side cost per arrival and peak memory (fresh interpreters) ...", flush=True)
    out["scale"] = bench_scale((1_000, 10_000, 100_000), in_flight=1_000, arrivals=2_000 if quick else 10_000)
    return out
