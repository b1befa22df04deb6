"""Where client jobs train (``trainer.*``): the settings resolved and refused, jobs that keep everything on
their device, the loop state carried between devices, and the one-line answer to a job out of memory.

Every path here runs on the CPU; the same checks on a CUDA GPU are marked ``gpu`` (run by ``make gpu-check``).
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.devices import recorded_moves
from helpers.models import tiny_cnn

from afl.client.device import Placement, is_out_of_memory, out_of_memory, resolve
from afl.client.module import ClientModule
from afl.client.runtime import ClientRuntime, ClientShards, batch_loader
from afl.errors import ConfigError
from afl.messages import ClientJob
from afl.sim.loop import _on_device

HAS_CUDA = torch.cuda.is_available()


def _runtime(placement: Placement) -> ClientRuntime:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(90, 1, 8, 8, generator=g), torch.randint(0, 10, (90,), generator=g)
    shards = ClientShards(x, y, [torch.arange(0, 50).numpy(), torch.arange(50, 90).numpy()])
    return ClientRuntime(
        shards, tiny_cnn, num_classes=10, local_epochs=2, batch_size=16, placement=placement
    ).on_device()


def _job(state: dict[str, torch.Tensor], job_id: int = 0) -> ClientJob:
    return ClientJob(job_id, job_id % 2, state, 1e-2, 10 + job_id)


@pytest.mark.skipif(HAS_CUDA or torch.backends.mps.is_available(), reason="this machine has an accelerator")
def test_auto_is_the_cpu_here_and_names_are_lightnings() -> None:
    assert resolve("auto", "auto", "32-true", False) == Placement("cpu", None, "32-true", False)
    assert resolve("cpu", 1, "bf16-mixed", "warn").trainer_kwargs()["precision"] == "bf16-mixed"
    with pytest.raises(ConfigError, match="^trainer.accelerator: mps asked for"):
        resolve("mps", 1, "32-true", False)


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([0, 1], "a client trains on one device: give"),
        ([-1], "give \\[k\\]"),
        (2, "got 2"),
        ("all", "got 'all'"),
    ],
)
def test_more_than_one_device_is_refused(devices, message) -> None:
    with pytest.raises(ConfigError, match=f"^trainer.devices: .*{message}"):
        resolve("cpu", devices, "32-true", False)


def test_a_job_leaves_its_model_on_its_device_and_copies_nothing_across() -> None:
    """Lightning's own teardown copies the model (and the optimizer's state) to the host after every fit:
    the recorder sees that on a plain Trainer, and sees no such call in a job."""
    runtime = _runtime(Placement())
    state = {k: v.clone() for k, v in tiny_cnn().state_dict().items()}
    with recorded_moves() as moves:
        result = runtime(_job(state))
    assert moves.module_cpu == 0 and moves.crossings == []
    assert result.steps == 2 * 4  # two epochs of 50 samples in batches of 16
    # the recorder's control: Lightning's default single-device strategy moves the module to the CPU
    module = ClientModule(tiny_cnn(), num_classes=10, lr=1e-2)
    x, y = runtime.client_data[1]
    plain = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    with recorded_moves() as control:
        plain.fit(module, batch_loader(x, y, 16, seed=0))
    assert control.module_cpu >= 1


def test_a_cuda_fit_frees_no_memory_that_other_threads_jobs_may_be_using(monkeypatch) -> None:
    """Lightning's CUDA accelerator frees cuBLAS's workspaces and CUDA's cache when every fit starts and
    ends; with jobs in parallel threads on one GPU that was an illegal memory access (seen on an H200).
    The client Trainer's accelerator frees neither; Lightning's own (the recorder's control) frees both."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    freed: list[str] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append("cache"))
    monkeypatch.setattr(
        torch._C, "_cuda_clearCublasWorkspaces", lambda: freed.append("workspaces"), raising=False
    )
    monkeypatch.setattr(CUDAAccelerator, "set_nvidia_flags", staticmethod(lambda rank: None))
    ours = Placement("cuda", 0).trainer_kwargs()["accelerator"]
    assert isinstance(ours, CUDAAccelerator)
    trainer = SimpleNamespace(local_rank=0)
    ours.setup(trainer)
    ours.teardown()
    assert freed == []
    lightnings = CUDAAccelerator()
    lightnings.setup(trainer)
    lightnings.teardown()
    assert freed == ["workspaces", "cache"] * 2
    assert Placement("cpu").trainer_kwargs()["accelerator"] == "cpu"


def test_batches_are_gathered_on_the_data_device_with_one_order_per_job() -> None:
    x, y = torch.randn(37, 3), torch.arange(37)
    batches = batch_loader(x, y, batch_size=8, seed=5, epochs=3)
    assert batches._orders.shape == (3, 37)  # every epoch's shuffle, drawn (and moved) at once
    epochs = [torch.cat([b[1] for b in batches]) for _ in range(4)]  # a 4th pass draws one more
    assert all(sorted(e.tolist()) == list(range(37)) for e in epochs)
    assert len({tuple(e.tolist()) for e in epochs}) == 4
    again = batch_loader(
        x, y, batch_size=8, seed=5, epochs=1
    )  # the same shuffles, however many are drawn first
    assert [torch.cat([b[1] for b in again]).tolist() for _ in range(4)] == [e.tolist() for e in epochs]


def test_loop_state_moves_every_nested_tensor_and_copies_the_rest() -> None:
    state = {
        "w": torch.ones(2),
        "jobs": [{"state": {"b": torch.zeros(3)}, "lr": 0.1}],
        "pair": (torch.ones(1), 4),
    }
    moved = _on_device(state, torch.device("meta"))
    assert moved["w"].device.type == moved["jobs"][0]["state"]["b"].device.type == "meta"
    assert (
        moved["pair"][0].device.type == "meta" and moved["pair"][1] == 4 and isinstance(moved["pair"], tuple)
    )
    assert moved["jobs"][0]["lr"] == 0.1 and moved["jobs"] is not state["jobs"]
    back = _on_device(state, torch.device("cpu"))
    assert torch.equal(back["w"], state["w"]) and back["w"].data_ptr() != state["w"].data_ptr()


def test_a_real_host_allocation_failure_is_answered_in_one_line() -> None:
    try:
        torch.empty(2**50, dtype=torch.uint8)
    except RuntimeError as err:
        assert is_out_of_memory(err)
        answer = out_of_memory(err, 7, 3, torch.device("cpu"), "lower client.batch_size")
    assert str(answer) == (
        "client job 7 (client 3) ran out of memory on cpu (1048576.00 GiB asked for): lower client.batch_size"
    )
    assert not is_out_of_memory(RuntimeError("shapes do not match"))


# ------------------------------------------------------------------------------------------------ GPU
gpu = pytest.mark.gpu


@gpu
def test_on_a_gpu_a_job_copies_only_its_batch_order_across() -> None:
    runtime = _runtime(resolve("cuda", 1, "32-true", False))
    state = {k: v.cuda() for k, v in tiny_cnn().state_dict().items()}
    with recorded_moves() as moves:
        result = runtime(_job(state))
    assert moves.module_cpu == 0
    # the model went to the GPU once, when the runtime was placed; in the job, two epochs' shuffles of 50
    # int64 indices, and the few bytes of the metrics' initial states (built with each job's module)
    assert [c for c in moves.crossings if c[2] > 64] == [("cpu", "cuda", 2 * 50 * 8)], moves.crossings
    assert sum(c[2] for c in moves.crossings) <= 800 + 256, moves.crossings
    assert all(v.device.type == "cuda" for v in result.state.values())


@gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_on_a_gpu_jobs_on_threads_equal_jobs_in_one_thread(precision) -> None:
    """Per-thread CUDA streams: the same results as one job after another."""
    from afl.sim.executors import SerialExecutor, ThreadExecutor

    torch.use_deterministic_algorithms(True)
    try:
        runtime = _runtime(resolve("cuda", 1, precision, True))
        state = {k: v.cuda() for k, v in tiny_cnn().state_dict().items()}
        results = {}
        for executor in (SerialExecutor(runtime), ThreadExecutor(runtime, workers=3)):
            with executor:
                for j in range(6):
                    executor.submit(_job(state, j))
                results[type(executor).__name__] = [executor.result(j) for j in range(6)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(results["SerialExecutor"], results["ThreadExecutor"]):
        assert a.train_loss == b.train_loss
        assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
