"""Executors run client jobs; the event loop alone decides the order in which results are applied.

An executor takes plain :class:`~afl.messages.ClientJob` descriptions and hands back plain
:class:`~afl.messages.ClientResult` objects, so the results are the same for any executor and any
number of workers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from afl.registry import Registry

if TYPE_CHECKING:
    from afl.messages import ClientJob, ClientResult

TrainFn = Callable[["ClientJob"], "ClientResult"]

#: Executors by name: ``federation.executor``. ``ray`` is defined in :mod:`afl.sim.ray_executor`, imported
#: only when chosen (Ray is an optional extra).
EXECUTORS: Registry[Executor] = Registry("executor", lazy={"ray": "afl.sim.ray_executor:RayExecutor"})


class Executor(ABC):
    """Interface: ``submit`` a job as soon as it is dispatched, ``result`` when the loop needs it.

    Args:
        train: the job function (a :class:`~afl.client.runtime.ClientRuntime`).
        workers: how many jobs may train at once.
    """

    def __init__(self, train: TrainFn, workers: int = 1) -> None:
        self.train = train

    @abstractmethod
    def submit(self, job: ClientJob) -> None: ...

    @abstractmethod
    def result(self, job_id: int) -> ClientResult: ...

    def close(self) -> None:
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@EXECUTORS.register("serial")
class SerialExecutor(Executor):
    """Trains each job in the calling thread when its result is asked for (debugging, profiling)."""

    def __init__(self, train: TrainFn, workers: int = 1) -> None:
        super().__init__(train, workers)
        self._pending: dict[int, ClientJob] = {}

    def submit(self, job: ClientJob) -> None:
        self._pending[job.job_id] = job

    def result(self, job_id: int) -> ClientResult:
        return self.train(self._pending.pop(job_id))


@EXECUTORS.register("thread")
class ThreadExecutor(Executor):
    """Trains in-flight jobs in parallel on a pool of ``workers`` threads (torch releases the GIL in
    its kernels). Jobs start at dispatch, so every in-flight job trains while the server waits."""

    def __init__(self, train: TrainFn, workers: int = 2) -> None:
        super().__init__(train, workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="afl-client")
        self._futures: dict[int, Future[ClientResult]] = {}

    def submit(self, job: ClientJob) -> None:
        self._futures[job.job_id] = self._pool.submit(self.train, job)

    def result(self, job_id: int) -> ClientResult:
        return self._futures.pop(job_id).result()

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


@EXECUTORS.register("cohort")
class CohortExecutor(Executor):
    """Trains jobs together, as cohorts of one vectorized model (:mod:`afl.client.cohort`), lazily:
    ``submit`` queues a job; asking for the result of a job that has not trained trains every queued job
    at once (split, in dispatch order, into cohorts of at most ``max_clients``), then answers.

    The loop submits each job at dispatch and asks for results in simulated-time order, so which jobs
    train together follows from the simulated schedule alone: the same seed gives the same cohorts, for
    any ``workers`` (not used: a cohort is one stream of vectorized steps).

    Args:
        train: a :class:`~afl.client.runtime.ClientRuntime` (its data, model and local-training settings).
        max_clients: the most jobs in one cohort (memory grows with it); None: no cap.
    """

    def __init__(self, train: TrainFn, workers: int = 1, max_clients: int | None = None) -> None:
        super().__init__(train, workers)
        if max_clients is not None and max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.max_clients = max_clients
        self._queued: list[ClientJob] = []
        self._done: dict[int, ClientResult | Exception] = {}
        self.cohort_sizes: list[int] = []  # of every cohort trained, in order (for tests and benchmarks)

    def submit(self, job: ClientJob) -> None:
        self._queued.append(job)

    def result(self, job_id: int) -> ClientResult:
        if job_id not in self._done:
            self._train_queued()
        outcome = self._done.pop(job_id)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _train_queued(self) -> None:
        from afl.client.cohort import train_cohort

        queued, self._queued = sorted(self._queued, key=lambda job: job.job_id), []
        cap = self.max_clients or max(len(queued), 1)
        for start in range(0, len(queued), cap):
            cohort = queued[start : start + cap]
            self.cohort_sizes.append(len(cohort))
            for job, outcome in zip(cohort, train_cohort(self.train, cohort)):  # type: ignore[arg-type]
                self._done[job.job_id] = outcome

    def close(self) -> None:
        self._queued.clear()
        self._done.clear()
