"""Whole runs under the ``trainer.*`` settings: deterministic and mixed-precision runs on the CPU, a job out
of memory answered in one line with the last checkpoint kept; on a CUDA GPU (marked ``gpu``), runs that
learn, are bit-identical for any number of workers, and resume across devices."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CRASH_DRIVER
from helpers.configs import TINY
from helpers.processes import cli
from helpers.runs import assert_same_outputs, metrics, updates

from afl import checkpoint
from afl.config import load_config
from afl.experiments.run import run

#: A model that runs out of host memory for real (torch's allocator refuses 1 PiB) in the third job.
GREEDY = """
import torch
from torch import nn

from afl.models import MODELS


@MODELS.register("greedy")
class Greedy(nn.Module):
    trained = []  # the models (one per job) seen training

    def __init__(self, *, input_shape, num_classes):
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))

    def forward(self, x):
        if self.training and all(m is not self for m in Greedy.trained):
            Greedy.trained.append(self)
            if len(Greedy.trained) == 3:
                torch.empty(2**50, dtype=torch.uint8)
        return self.net(x)
"""


def test_a_job_out_of_memory_stops_the_run_in_one_line_keeping_its_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "greedy.py").write_text(GREEDY)
    proc = cli(
        "afl-train",
        *TINY,
        "plugins=[greedy]",
        "model.name=greedy",
        "federation.executor=serial",
        "checkpoint.every=1",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    # the serial executor trains jobs in arrival order: the third, after 2 updates (checkpointed)
    assert re.match(r"error: client job \d+ \(client \d+\) ran out of memory on cpu", line), line
    assert "ran out of memory on cpu (1048576.00 GiB asked for): lower client.batch_size" in line
    out = tmp_path / "run"
    assert not (out / "summary.json").exists()
    saved = torch.load(out / checkpoint.CHECKPOINT, weights_only=True)
    assert saved["loop"]["state"]["client_updates"] == 2
    assert (out / "FAILED").read_text().startswith("OutOfMemory: client job ")


def test_deterministic_runs_give_the_same_run_on_the_cpu_and_leave_torch_as_they_found_it(tmp_path) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    plain = run(load_config([*TINY, f"output_dir={tmp_path / 'plain'}"])).output_dir
    strict = run(load_config([*TINY, "trainer.deterministic=true", f"output_dir={tmp_path / 'strict'}"]))
    assert torch.are_deterministic_algorithms_enabled() == before
    assert_same_outputs(strict.output_dir, plain)


def test_bf16_mixed_trains_in_bfloat16_and_hands_the_server_float32_weights(tmp_path) -> None:
    plain = run(load_config([*TINY, "trainer.accelerator=cpu", f"output_dir={tmp_path / 'plain'}"]))
    mixed = run(load_config([*TINY, "trainer.precision=bf16-mixed", f"output_dir={tmp_path / 'bf16'}"]))
    assert {v.dtype for v in mixed.final_state.values() if v.is_floating_point()} == {torch.float32}
    assert metrics(mixed.output_dir)[0] == metrics(plain.output_dir)[0]  # update 0: the same initial model
    first = [float(r["train_loss"]) for r in mixed.history[1:]]
    assert first == pytest.approx([float(r["train_loss"]) for r in plain.history[1:]], rel=0.05)
    assert first != [
        float(r["train_loss"]) for r in plain.history[1:]
    ]  # bfloat16 products: not the same bits


# ------------------------------------------------------------------------------------------------ GPU
GPU = [*TINY, "trainer.accelerator=gpu"]


@pytest.mark.gpu
def test_a_gpu_run_follows_the_cpu_run(tmp_path) -> None:
    """The same run on the GPU: every evaluation near the CPU's (measured on an H200: 1e-5 relative after
    12 updates). The tolerance is cuDNN's: its convolutions run in TF32 on Ampere and later (torch's
    default), 10-bit mantissas, about 1e-3 relative per product; a wrong job or aggregation on the device
    is off by far more."""
    cpu = run(load_config([*TINY, "trainer.accelerator=cpu", f"output_dir={tmp_path / 'cpu'}"]))
    gpu = run(load_config([*GPU, f"output_dir={tmp_path / 'gpu'}"]))
    assert all(v.device.type == "cuda" for v in gpu.final_state.values())
    assert [r["client_updates"] for r in gpu.history] == [r["client_updates"] for r in cpu.history]
    for on_gpu, on_cpu in zip(gpu.history, cpu.history, strict=True):
        assert on_gpu["test_loss"] == pytest.approx(on_cpu["test_loss"], rel=1e-2)
        # a near-tie between two logits may flip: at most 4 of the 200 test samples
        assert on_gpu["test_accuracy"] == pytest.approx(on_cpu["test_accuracy"], abs=0.02)
    assert gpu.history[-1]["test_loss"] != gpu.history[0]["test_loss"]  # it trained


@pytest.mark.gpu
def test_deterministic_gpu_runs_are_bit_identical_for_any_number_of_workers(tmp_path) -> None:
    outs = [
        run(
            load_config(
                [
                    *GPU,
                    "trainer.deterministic=true",
                    f"federation.workers={w}",
                    f"output_dir={tmp_path / str(w)}",
                ]
            )
        )
        for w in (1, 3)
    ]
    assert_same_outputs(outs[1].output_dir, outs[0].output_dir)


@pytest.mark.gpu
@pytest.mark.parametrize(("first", "then"), [("gpu", "cpu"), ("cpu", "gpu")])
def test_a_checkpoint_resumes_on_the_other_device(tmp_path, first, then) -> None:
    out = tmp_path / "run"
    overrides = [*TINY, "federation.max_updates=24", "checkpoint.every=3", f"trainer.accelerator={first}"]
    command = [sys.executable, str(CRASH_DRIVER), "eval", "3", *overrides, f"output_dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    saved = torch.load(out / checkpoint.CHECKPOINT, weights_only=True)
    assert (
        saved["loop"]["state"]["global_state"]["classifier.weight"].device.type == "cpu"
    )  # saved as CPU tensors
    resumed = run(load_config([f"resume={out}", f"trainer.accelerator={then}"]))
    assert {v.device.type for v in resumed.final_state.values()} == {"cuda" if then == "gpu" else "cpu"}
    assert json.loads((out / "summary.json").read_text())["client_updates"] == 24


def _schedule(folder: Path) -> list[tuple[str, ...]]:
    keys = ("job_id", "client_id", "staleness", "dispatch_time", "arrival_time", "rejected")
    return [tuple(row[k] for k in keys) for row in updates(folder)]


@pytest.mark.gpu
def test_a_cohort_run_on_the_gpu_follows_the_thread_run_and_repeats_itself_bit_for_bit(tmp_path) -> None:
    """Cohort training on the GPU: the thread executor's schedule, evaluations within cuDNN's TF32
    tolerance (as the GPU run against the CPU run above); two deterministic cohort runs bit-identical."""
    thread = run(load_config([*GPU, f"output_dir={tmp_path / 'thread'}"]))
    cohort = [
        run(
            load_config(
                [
                    *GPU,
                    "federation.executor=cohort",
                    "trainer.deterministic=true",
                    f"output_dir={tmp_path / str(i)}",
                ]
            )
        )
        for i in range(2)
    ]
    assert all(v.device.type == "cuda" for v in cohort[0].final_state.values())
    assert _schedule(cohort[0].output_dir) == _schedule(thread.output_dir)
    for got, want in zip(cohort[0].history, thread.history, strict=True):
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-2)
    assert_same_outputs(cohort[1].output_dir, cohort[0].output_dir)


GREEDY_COHORT = """
import torch
from torch import nn
from afl.models import MODELS


@MODELS.register("greedy_cohort")
class GreedyCohort(nn.Module):
    def __init__(self, *, input_shape, num_classes):
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))

    def forward(self, x):
        if self.training:
            torch.empty(2**50, dtype=torch.uint8)
        return self.net(x)
"""


def test_a_cohort_out_of_memory_stops_the_run_in_one_line_naming_the_cap(tmp_path: Path) -> None:
    """Not one rejected update per job of the cohort: the run's settings do not fit the machine."""
    (tmp_path / "greedy_cohort.py").write_text(GREEDY_COHORT)
    proc = cli(
        "afl-train",
        *TINY,
        "plugins=[greedy_cohort]",
        "model.name=greedy_cohort",
        "federation.executor=cohort",
        "output_dir=run",
        cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert re.match(r"error: client job 0 \(client \d+\) ran out of memory on cpu \(1048576.00 GiB", line), (
        line
    )
    assert "a cohort of 3 jobs; lower cohort.max_clients" in line
    assert not (tmp_path / "run" / "summary.json").exists()
