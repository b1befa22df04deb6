"""The federated loop's events: what its event queue holds, each due at a simulated time.

* :class:`Arrival`: a dispatched job's result comes back at its finish time (a client update, applied or
  rejected).
* :class:`Lost`: a dispatched job whose client goes offline before the job would finish, due when the
  client drops out (``availability``): never trained, and no client update.
* :class:`Wake`: a free slot with no idle client online waits until the first comes back.

The queue (:attr:`afl.sim.loop.LoopState.in_flight`, a heap) pops the earliest event; ties go by dispatch
index, a wake-up (:data:`WAKE_ID`) before the jobs due at the same moment. Each kind has one handler in
:class:`afl.sim.loop.FederatedLoop` (``_on_arrival``, ``_on_lost``, ``_on_wake``).

A checkpoint stores the queue in the layout it had before events had types (:func:`saved`): each event a
dispatched job's fields, a wake-up with a placeholder job of id :data:`WAKE_ID`, and no kind, which
:meth:`afl.sim.loop.FederatedLoop.load_state_dict` works out again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from afl.messages import ClientJob

#: A wake-up's tie-break (before any dispatch index) and, in a checkpoint, its placeholder job's id.
WAKE_ID = -1


class Event(ABC):
    """Interface: an event of the loop's queue, ordered by :meth:`key`."""

    @abstractmethod
    def key(self) -> tuple[float, int]:
        """The queue's order: (simulated time the event is due, tie-break)."""

    def __lt__(self, other: Event) -> bool:
        return self.key() < other.key()


@dataclass
class InFlight(Event):
    """A dispatched job: its description, the version and simulated time it was dispatched at, and when
    it is due (``finish_time``)."""

    job: ClientJob
    version: int
    dispatch_time: float
    finish_time: float
    timed_out: bool = False  # the job's duration exceeded client.timeout_s: it arrives as a rejection

    def key(self) -> tuple[float, int]:
        """Simulated finish time, ties broken by dispatch index (unique)."""
        return (self.finish_time, self.job.job_id)


@dataclass
class Arrival(InFlight):
    """The job trains; its result arrives at ``finish_time`` (the timeout, if ``timed_out``)."""


@dataclass
class Lost(InFlight):
    """The job's client goes offline at ``finish_time``, before the job would finish: it never trains,
    and its slot is refilled then."""


@dataclass
class Wake(Event):
    """A free slot waits for a client: at ``time`` the first idle one comes back online."""

    time: float

    def key(self) -> tuple[float, int]:
        return (self.time, WAKE_ID)


def saved(event: Event) -> dict[str, Any]:
    """The event as a checkpoint stores it (plain values; the job's state still the loop's tensors)."""
    if isinstance(event, Wake):
        placeholder = ClientJob(job_id=WAKE_ID, client_id=-1, state={}, lr=0.0, seed=0)
        return {
            "job": dict(vars(placeholder)),
            "version": 0,
            "dispatch_time": event.time,
            "finish_time": event.time,
            "timed_out": False,
        }
    assert isinstance(event, InFlight)
    return {
        "job": dict(vars(event.job)),
        "version": event.version,
        "dispatch_time": event.dispatch_time,
        "finish_time": event.finish_time,
        "timed_out": event.timed_out,
    }
