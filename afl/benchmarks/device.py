"""``afl-bench --device``: keys ``device_runs`` (whole runs on a device against a plain loop there) and
``compiled_runs`` (the client step compiled, against eager)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from afl.benchmarks.overhead import SETTINGS, plain_loop
from afl.benchmarks.timing import RunArm, budget, interleaved, median, timed_run
from afl.client.compiled import BACKEND_ENV

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

#: ``trainer.compile``'s mode the device benchmark measures: CUDA graphs on a GPU; on a CPU (where inductor
#: captures no CUDA graph) its default.
COMPILE_MODE = {"cuda": "reduce-overhead", "cpu": "default"}


def device_overrides(name: str, device: str, updates: int) -> list[str]:
    """The overrides of a model's whole run on ``device`` (:data:`DEVICE_SETTINGS`), quiet, evaluated once."""
    return budget(DEVICE_SETTINGS[name], updates, device)


def bench_device(
    device: str, models: Sequence[str], updates: int, repeat: int, tmp: Path, workers: int = 5
) -> dict[str, Any]:
    """Per model (:data:`DEVICE_SETTINGS`): whole runs on ``device`` (``trainer.accelerator``) with 1 and
    ``workers`` threads against a plain PyTorch loop doing the same local steps there (data and model on
    the device), in ms per local step; the peak device memory of a run; with Ray installed and CUDA, the
    run on ``workers`` Ray actors sharing the GPU (``ray.num_gpus`` = 1 / workers)."""
    out: dict[str, Any] = {}
    for name in models:
        overrides = device_overrides(name, device, updates)
        warm = timed_run(overrides, tmp / name).result
        jobs = sorted(warm.updates, key=lambda u: u["client_updates"])
        steps = sum(u["steps"] for u in jobs)
        one = RunArm([*overrides, "federation.workers=1"], tmp / name, device)
        many = RunArm([*overrides, f"federation.workers={workers}"], tmp / name, device)
        arms: dict[str, Callable[[], float]] = {
            "run_1_worker": one,
            "plain_loop": plain_loop(warm.config, jobs),
            f"run_{workers}_workers": many,
        }
        runs = [one, many]
        if device == "cuda" and importlib.util.find_spec("ray") is not None:
            share = f"ray.num_gpus={1 / workers:.4g}"
            ray = [*overrides, "federation.executor=ray", f"federation.workers={workers}", share]
            runs.append(RunArm(ray, tmp / name, device))
            arms[f"ray_{workers}_actors"] = runs[-1]
        times = interleaved(arms, repeat)
        ms = {f"{k}_ms_per_step": median(v) / steps * 1e3 for k, v in times.items()}
        peaks = [p for arm in runs for p in arm.peaks]
        out[name] = {
            "jobs": len(jobs),
            "local_steps": steps,
            **ms,
            "run_vs_plain": ms["run_1_worker_ms_per_step"] / ms["plain_loop_ms_per_step"],
            "same_results_for_any_workers": len(set().union(*(arm.finals for arm in runs))) == 1,
            **({"peak_device_mib": max(peaks)} if peaks else {}),
        }
    return out


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
        overrides = device_overrides(name, device, updates)
        compiled = [*overrides, f"trainer.compile={mode}"]
        eager = timed_run(overrides, tmp / name, device)  # the first runs: the first compiled one compiles
        first = {"eager": eager.seconds, "compiled": timed_run(compiled, tmp / name, device).seconds}
        jobs, steps = len(eager.result.updates), sum(u["steps"] for u in eager.result.updates)
        folder = tmp / f"{name}-compiled"
        arms = {
            "run_1_worker": [*overrides, "federation.workers=1"],
            "run_1_worker_compiled": [*compiled, "federation.workers=1"],
            f"run_{workers}_workers_compiled": [*compiled, f"federation.workers={workers}"],
        }
        times = interleaved({k: RunArm(v, folder, device) for k, v in arms.items()}, repeat)
        ms = {f"{k}_ms_per_step": median(v) / steps * 1e3 for k, v in times.items()}
        out[name] = {
            "mode": mode,
            "backend": os.environ.get(BACKEND_ENV) or "inductor",
            "jobs": jobs,
            "local_steps": steps,
            **ms,
            "compiled_vs_eager": ms["run_1_worker_compiled_ms_per_step"] / ms["run_1_worker_ms_per_step"],
            "first_run_s": first,
            "compile_s": first["compiled"] - median(times["run_1_worker_compiled"]),
        }
    return out
