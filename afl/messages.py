"""The messages between the simulation's parts, as plain dataclasses with no torch import: what the server
hands a client (:class:`ClientJob`), what comes back (:class:`ClientResult`) and what the server applies
(:class:`ClientUpdate`); :data:`State` is a model's state dict.

Every other part imports these from here, so the server, the loop and the executors need not import the
client's Lightning code to speak to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensors come in and out; the annotations are strings
    import torch


State = dict[str, "torch.Tensor"]


RUNNING_STATS = ("running_mean", "running_var")


def is_running_stat(key: str) -> bool:
    """Whether a state-dict entry is a normalisation layer's running statistic (mixed, never stepped)."""
    return key.rsplit(".", 1)[-1] in RUNNING_STATS


def is_parameter(key: str, value: torch.Tensor) -> bool:
    """Floating-point entries other than running statistics: what a delta step moves."""
    return value.is_floating_point() and not is_running_stat(key)


@dataclass
class ClientJob:
    """What crosses to an executor: everything a worker needs besides the client's data.

    Attributes:
        job_id: the dispatch index (unique, increasing).
        client_id: which client trains.
        state: the global model as dispatched (a private copy).
        lr: the learning rate for this job.
        seed: seed of this job's data shuffling.
        fault: an injected fault, or None: ``raise`` (the job raises), ``nonfinite`` (it returns NaN
            weights) or ``slow`` (the loop stretches its simulated duration; the job trains as usual), see
            :mod:`afl.sim.faults`.
        previous_staleness: the staleness of this client's previous update (0 before its first): the delay
            the client knows at dispatch.
        round: the round at dispatch (client updates // J; the barrier round in sync mode).
        epoch_lrs: the rate of each local epoch when the LR schedule changes it within the job
            (``server.lr_schedule.decay_over=local_epoch``), else None: ``lr`` throughout.
    """

    job_id: int
    client_id: int
    state: State
    lr: float
    seed: int
    fault: str | None = None
    previous_staleness: int = 0
    round: int = 0
    epoch_lrs: list[float] | None = None

    @property
    def last_lr(self) -> float:
        """The rate of the job's last local epoch (``lr`` unless the rate changes per epoch)."""
        return self.epoch_lrs[-1] if self.epoch_lrs else self.lr


@dataclass
class ClientResult:
    """What comes back: the local model after training, what it cost, and what the job's client callbacks
    measured (``metrics``, e.g. ``client_drift`` of ``parameter_drift``, ``grad_sq_norm`` of
    ``gradient_norm``)."""

    job_id: int
    client_id: int
    state: State
    num_samples: int
    steps: int
    train_loss: float
    train_accuracy: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """One arrival at the server.

    Attributes:
        client_id: who trained.
        num_samples: the client's number of training samples ``n_c``.
        staleness: ``τ`` = global version at arrival minus the version dispatched.
        state: the client's model after local training, ``θ_c``.
        dispatched: the global model the client was handed, ``θ_dispatched``.
        delta_scale: a factor on the parameter delta decided at arrival (the paper LR's ``1/(1+ατ)``
            with ``delay_at: arrival``; 1 otherwise).
        round: the round the update arrives in: client updates before it // J (the barrier round in
            sync mode); what a decaying server step counts.
    """

    client_id: int
    num_samples: int
    staleness: int
    state: State
    dispatched: State = field(repr=False)
    delta_scale: float = 1.0
    round: int = 0

    @cached_property
    def delta(self) -> State:
        """``delta_scale · (θ_c − θ_dispatched)`` for the parameters (no running statistics or counters);
        computed on first use, so rules that only need ``state`` do not pay for it."""
        out = {k: v - self.dispatched[k] for k, v in self.state.items() if is_parameter(k, v)}
        if self.delta_scale != 1.0:
            for d in out.values():
                d.mul_(self.delta_scale)
        return out

    @property
    def stats(self) -> State:
        """The client's running statistics."""
        return {k: v for k, v in self.state.items() if is_running_stat(k)}

    @property
    def parameters(self) -> State:
        """The client's parameters as the server sees them: ``θ_dispatched + delta`` (``θ_c`` itself
        when ``delta_scale`` is 1)."""
        if self.delta_scale == 1.0:
            return {k: v for k, v in self.state.items() if is_parameter(k, v)}
        return {k: self.dispatched[k] + d for k, d in self.delta.items()}


class InjectedFault(RuntimeError):
    """What a client job with an injected ``raise`` fault (``ClientJob.fault``, see :mod:`afl.sim.faults`)
    raises; the loop rejects the job's update as an error."""

    @classmethod
    def of(cls, job: ClientJob) -> InjectedFault:
        return cls(f"injected fault in job {job.job_id} (client {job.client_id})")


def inject_result_fault(job: ClientJob, state: State) -> None:
    """A ``nonfinite`` fault: the job's trained weights turned NaN (in place), after it trained."""
    if job.fault == "nonfinite":
        next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
