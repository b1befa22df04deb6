"""Where client training and evaluation run: the ``trainer.*`` keys (Lightning's own names and values)
resolved once per run into a :class:`Placement`, the client Trainer's arguments for it, and the answer to a
job that runs out of memory.

A run's training data, its global model, the in-flight model copies and the aggregation all live on the
placement's device (docs/gpu.md). A client Trainer trains there and leaves the model there when its fit
ends (:class:`_StayOnDevice`: Lightning's own teardown would copy the model and the optimizer's state back
to the CPU after every job, and empty CUDA's cache) on a CUDA accelerator that frees nothing when a fit
starts (:class:`_SharedCUDA`: other threads' jobs may be running in what it would free).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.strategies import SingleDeviceStrategy

from afl.errors import ConfigError, OutOfMemory

#: What torch needs for deterministic cuBLAS (torch's reproducibility notes); set when a deterministic run
#: starts, unless the user set it.
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True)
class Placement:
    """The resolved ``trainer.*`` settings of a run: plain values, so a runtime shipped to a Ray worker
    carries them and each worker resolves its own device (:meth:`device`).

    Args:
        kind: ``cpu``, ``cuda`` or ``mps``.
        index: the CUDA device index (``trainer.devices=[k]``); None: the current one (``cuda:0`` in a
            Ray worker, which sees only its own GPUs).
        precision: Lightning's ``32-true``, ``bf16-mixed`` or ``16-mixed``.
        deterministic: Lightning's ``deterministic`` flag (``True``, ``False`` or ``"warn"``).
    """

    kind: str = "cpu"
    index: int | None = None
    precision: str = "32-true"
    deterministic: bool | str = False

    @property
    def device(self) -> torch.device:
        if self.kind == "cuda":
            return torch.device("cuda", 0 if self.index is None else self.index)
        return torch.device(self.kind)

    def trainer_kwargs(self) -> dict[str, Any]:
        """The client Trainer's device arguments."""
        return {
            "accelerator": _SharedCUDA() if self.kind == "cuda" else self.kind,
            "devices": 1,
            "strategy": _StayOnDevice(device=self.device),
            "precision": self.precision,
            "deterministic": self.deterministic,
        }

    def setup(self) -> None:
        """Process-wide settings a deterministic run needs before its first CUDA work (torch's
        reproducibility notes): cuBLAS's workspace, deterministic algorithms, no cuDNN benchmarking.
        Client Trainers set the same flags (Lightning's ``deterministic``); evaluation runs before the
        first one."""
        if self.deterministic is False:
            return
        if self.kind == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=self.deterministic == "warn")
        torch.backends.cudnn.benchmark = False

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """On CUDA: the calling thread's own stream for the enclosed work, so that jobs in parallel
        threads overlap on one GPU. It waits for the work queued before it on the default stream (the
        dispatched weights), and is synchronized on exit (the results are ready for the server's thread).
        Elsewhere: nothing."""
        if self.kind != "cuda":
            yield
            return
        device = self.device
        streams: dict[torch.device, torch.cuda.Stream] = _local.__dict__.setdefault("streams", {})
        stream = streams.get(device)
        if stream is None:
            stream = streams[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.default_stream(device))
        with torch.cuda.stream(stream):
            yield
        stream.synchronize()

    def hand_over(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state``, made on this thread's stream (:meth:`stream`), marked as used by the default stream
        too (where the server reads it): CUDA's caching allocator then does not give its memory to this
        thread's next job before the server's work on it is done."""
        if self.kind == "cuda":
            default = torch.cuda.default_stream(self.device)
            for tensor in state.values():
                tensor.record_stream(default)
        return state


_local = threading.local()


class _SharedCUDA(CUDAAccelerator):
    """Lightning's CUDA accelerator, except that a fit neither starts nor ends by freeing cuBLAS's
    workspaces and CUDA's cached memory (Lightning's ``setup`` and ``teardown`` do both). Jobs train in
    parallel threads on one GPU: freed under another thread's running kernels, a workspace is an illegal
    memory access (seen on an H200 with three worker threads and the paper's CNN). Nor does it log a line per
    fit (Lightning's ``LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES``)."""

    def setup(self, trainer: Any) -> None:
        pass

    def teardown(self) -> None:
        pass


class _StayOnDevice(SingleDeviceStrategy):
    """Lightning's single-device strategy, except that a finished fit leaves the model and its optimizer
    where they trained: the job reads the trained weights there, and the server aggregates them there."""

    def teardown(self) -> None:
        self.precision_plugin.teardown()
        self.checkpoint_io.teardown()


def resolve(accelerator: str, devices: Any, precision: str, deterministic: bool | str) -> Placement:
    """``trainer.*`` → :class:`Placement`, checked against this machine.

    ``accelerator``: ``auto`` (a CUDA GPU if torch sees one, else Apple's MPS, else the CPU, as Lightning
    chooses), ``cpu``, ``gpu``/``cuda`` or ``mps``. ``devices``: ``1`` or ``auto`` (the first device), or
    ``[k]`` (CUDA device ``k``); a client trains on one device (more GPUs: ``federation.executor=ray``
    with ``ray.num_gpus``).

    Raises:
        ConfigError: a device this machine lacks, more than one device, or ``16-mixed`` on the CPU.

    Example:
        >>> resolve("cpu", 1, "32-true", False)
        Placement(kind='cpu', index=None, precision='32-true', deterministic=False)
    """
    kind = {"gpu": "cuda"}.get(accelerator, accelerator)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu"
    index: int | None = None
    if isinstance(devices, (list, tuple)):
        if len(devices) != 1 or not isinstance(devices[0], int) or devices[0] < 0:
            raise ConfigError(
                "trainer.devices", f"got {list(devices)}; a client trains on one device: give [k]"
            )
        if kind != "cuda":
            raise ConfigError(
                "trainer.devices", f"{list(devices)} picks a CUDA device; the accelerator is {kind}"
            )
        index = devices[0]
    elif devices not in (1, "auto"):
        raise ConfigError(
            "trainer.devices",
            f"got {devices!r}; a client trains on one device (1, auto or [k]); for many GPUs use "
            "federation.executor=ray with ray.num_gpus",
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                "trainer.accelerator",
                f"{accelerator} asked for, but torch {torch.__version__} ({build}) sees no CUDA GPU: "
                "use trainer.accelerator=cpu (or auto)",
            )
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                "trainer.devices", f"[{index}]: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps" and not _mps():
        raise ConfigError("trainer.accelerator", "mps asked for, but torch sees no Apple MPS device")
    if kind == "cpu" and precision == "16-mixed":
        raise ConfigError(
            "trainer.precision", "16-mixed (float16 AMP) does not run on the CPU: use bf16-mixed or 32-true"
        )
    return Placement(kind=kind, index=index, precision=precision, deterministic=deterministic)


def _mps() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_out_of_memory(err: BaseException) -> bool:
    """A device (``torch.OutOfMemoryError``) or host allocator out of memory."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def out_of_memory(
    err: BaseException, job_id: int, client_id: int, device: torch.device, hint: str
) -> OutOfMemory:
    """The one-line answer to a job that ran out of memory: which job, how much memory, what to lower."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        peak = torch.cuda.max_memory_allocated(device)
        held = f"{peak / 2**30:.2f} GiB at peak, {free / 2**30:.2f} of {total / 2**30:.2f} GiB free"
    else:
        asked = next((w for w in str(err).split() if w.isdigit()), None)
        held = f"{int(asked) / 2**30:.2f} GiB asked for" if asked else "host memory"
    return OutOfMemory(
        f"client job {job_id} (client {client_id}) ran out of memory on {device} ({held}): {hint}"
    )
