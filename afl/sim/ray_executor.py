"""Client jobs as Ray actor tasks (``federation.executor=ray``): the same jobs, on a Ray cluster.

Only the training moves: the virtual clock, the sampling and the aggregation stay in the driver's
:class:`~afl.sim.loop.FederatedLoop`, which asks for results in simulated-time order as with any executor,
so a run gives the same results as with the thread executor (``tests/integration/test_ray.py``).

* ``federation.workers`` actors, each reserving ``ray.num_cpus`` CPUs and ``ray.num_gpus`` GPUs. The
  client runtime (every client's training data and how to build the model) is put in the object store
  once; each actor takes it once, at start, so a job sends only its description (the dispatched weights)
  and gets back the trained weights.
* ``ray.address`` (or the ``RAY_ADDRESS`` environment variable) joins a running cluster; without either a
  local one is started, with at least as many CPUs as the actors need. It is left running for the next
  run of the process (Ray stops it when the process exits).
* A worker that dies mid-job (killed, out of memory, its node lost) is restarted and its jobs are run again,
  up to ``ray.max_retries`` times each; a job's result depends only on its description, so a retried job
  gives what it would have given. After that the job fails, and the loop counts it as a failing client
  (``rejected_updates.error``) and goes on. Without retries, the jobs sent to that worker before Ray saw
  it die fail as well.
* Each actor trains with the driver's torch intra-op thread count (``federation.torch_threads``).
* With ``ray.num_gpus`` (a share: 0.2 puts five actors on one GPU) each actor moves the training data and
  the model to the GPU Ray gives it, once, and trains there (``trainer.precision``, ``trainer.deterministic``
  as set); weights travel between the driver and the actors as CPU tensors.
* Plug-in modules (``plugins``, :mod:`afl.plugins`) are pickled by value into the runtime, so workers run
  the user's models, optimizers and client callbacks without importing their modules.

Ray is an optional extra: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from afl.sim.executors import EXECUTORS, Executor, TrainFn

if TYPE_CHECKING:
    from afl.messages import ClientJob, ClientResult

#: How many jobs an actor holds at once (one training, the next queued): an actor that finishes a job
#: starts the next at once, without waiting for the driver to come back from an evaluation.
DEPTH = 2


class _ClientWorker:
    """A Ray actor: trains client jobs with the runtime it took at start."""

    def __init__(self, train: TrainFn, torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        # the data and the model to this worker's device, once (a ClientRuntime; a plain job function as is)
        on_device = getattr(train, "on_device", None)
        self.train = on_device() if on_device is not None else train

    def run(self, job: ClientJob) -> ClientResult:
        result = self.train(job)
        # back on the CPU: the driver may have no GPU (it moves them to its own device)
        return replace(result, state={k: v.cpu() for k, v in result.state.items()})

    def pid(self) -> int:
        return os.getpid()


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Trains in-flight jobs on ``workers`` Ray actors.

    Args:
        train: the job function (a :class:`~afl.client.runtime.ClientRuntime`); pickled once, to the object
            store.
        workers: how many actors (jobs training at once).
        address: the cluster to join (``"auto"``, ``"ray://host:10001"``, ...); None: ``RAY_ADDRESS``, else
            a local cluster.
        num_cpus, num_gpus: what each actor reserves.
        max_retries: how many times a job whose worker died is run again.
    """

    def __init__(
        self,
        train: TrainFn,
        workers: int = 2,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 1,
    ) -> None:
        super().__init__(train, workers)
        import ray

        self._ray = ray
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            local_cpus = max(os.cpu_count() or 1, math.ceil(workers * num_cpus))
            ray.init(
                address=address,
                num_cpus=None if address else local_cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        _enough(ray.cluster_resources(), "CPU", workers * num_cpus, "ray.num_cpus")
        if num_gpus:
            _enough(ray.cluster_resources(), "GPU", workers * num_gpus, "ray.num_gpus")
        actor = ray.remote(_ClientWorker).options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=-1,  # a dead worker is replaced; its jobs are retried up to max_retries times
            max_task_retries=max_retries,
        )
        # The user's plug-in modules (models, optimizers, client callbacks in the runtime) travel by value:
        # a worker on another node, or in another folder, need not be able to import them.
        from afl import plugins

        for module in plugins.loaded():
            ray.cloudpickle.register_pickle_by_value(module)
        # Kept referenced for the run: a restarted actor takes it again (Ray logs that it must stay in scope).
        self._runtime = ray.put(train)
        self._actors: list[Any] = [
            actor.remote(self._runtime, torch.get_num_threads()) for _ in range(workers)
        ]
        self._load = [0] * workers
        self._pending: deque[ClientJob] = deque()  # submitted, not yet given to an actor
        self._running: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (job id, actor)
        self._done: dict[int, Any] = {}  # job id -> ObjectRef of its finished result

    def submit(self, job: ClientJob) -> None:
        self._pending.append(job)
        self._feed()

    def _feed(self) -> None:
        """Give pending jobs, in order, to the least loaded actors that have room."""
        while self._pending:
            actor = min(range(len(self._actors)), key=self._load.__getitem__)
            if self._load[actor] >= DEPTH:
                return
            job = self._pending.popleft()
            if any(v.device.type != "cpu" for v in job.state.values()):  # a worker may sit on another node
                job = replace(job, state={k: v.cpu() for k, v in job.state.items()})
            self._running[self._actors[actor].run.remote(job)] = (job.job_id, actor)
            self._load[actor] += 1

    def result(self, job_id: int) -> ClientResult:
        waiting = next((job for job in self._pending if job.job_id == job_id), None)
        if waiting is not None:  # the loop needs it next: it goes first
            self._pending.remove(waiting)
            self._pending.appendleft(waiting)
        while job_id not in self._done:
            if not self._running:
                raise KeyError(f"job {job_id} was never submitted")
            ready, _ = self._ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                done, actor = self._running.pop(ref)
                self._load[actor] -= 1
                self._done[done] = ref
            self._feed()
        try:
            return self._ray.get(self._done.pop(job_id))
        except self._ray.exceptions.RayTaskError as err:  # the job's own exception, as in-process
            cause = err.cause
            raise (cause if isinstance(cause, Exception) else err) from None

    def pids(self) -> list[int]:
        """The actors' process ids (for tests and monitoring)."""
        return self._ray.get([a.pid.remote() for a in self._actors])

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors, self._pending, self._running, self._done = [], deque(), {}, {}


def _enough(resources: dict[str, float], kind: str, needed: float, key: str) -> None:
    have = resources.get(kind, 0.0)
    if have < needed:
        raise RuntimeError(
            f"the Ray cluster has {have:g} {kind}s, and federation.workers × {key} needs {needed:g}: "
            f"lower federation.workers or {key}, or add nodes"
        )
