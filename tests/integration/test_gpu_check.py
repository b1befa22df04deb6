"""``make gpu-check`` is run on a GPU only rarely and never for long: its every step runs here first, on
the CPU at toy size (``--smoke``), so that a GPU's minutes are not spent on the script's own mistakes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_and_writes_its_table(tmp_path) -> None:
    out = tmp_path / "check"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_check.py"),
            "--smoke",
            "--updates",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # every step ran (toy updates need not learn)
    rows = json.loads((out / "gpu_check.json").read_text())["rows"]
    assert re.match(r"\d+ skipped, \d+ deselected in ", rows["gpu tests"]) and "(exit 0," in rows["gpu tests"]
    bench = json.loads((out / "bench_cpu.json").read_text())["lenet"]
    assert bench["same_results_for_any_workers"] and bench["local_steps"] > 0
    assert bench["run_vs_plain"] > 0
    assert "lenet: ms per local step, run (1 worker) / 5 workers / plain loop" in rows
    compiled = json.loads((out / "bench_compiled_cpu.json").read_text())["lenet"]
    assert (compiled["mode"], compiled["backend"]) == ("default", "aot_eager")  # on a GPU: reduce-overhead
    assert compiled["run_1_worker_compiled_ms_per_step"] > 0 and compiled["run_1_worker_ms_per_step"] > 0
    label = "lenet: ms per local step, compile=default, backend aot_eager: run (1 worker) / 5 workers"
    assert any(row.startswith(label) for row in rows)
    run = rows["paper_cifar10, synthetic 3×32×32, 2 updates of 1 epoch"]
    assert run.startswith("accuracy 0.") and "chance 0.1" in run
    assert (out / "gpu_check.md").read_text().startswith("| check | result |")


def test_the_gpu_check_fails_when_any_step_fails() -> None:
    """Its exit status says whether every step did what it checks: the gpu tests, the benchmark, the run
    and, at full size, its learning (it exited 0 whatever the tests and the benchmark did)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gpu_check import failures
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert failures(0, 0, True, True, smoke=False) == []
    assert failures(0, 0, True, False, smoke=True) == []
    assert failures(1, 0, True, True, smoke=False) == ["the gpu tests (pytest exit 1)"]
    assert failures(0, 3, True, True, smoke=True) == ["the benchmark (exit 3)"]
    assert failures(0, 0, False, False, smoke=True) == ["the paper_cifar10 run"]
    assert failures(0, 0, True, False, smoke=False) == ["paper_cifar10 did not learn (accuracy at chance)"]
    assert failures(0, 0, True, True, smoke=False, compiled=1) == ["the compiled step's benchmark (exit 1)"]
