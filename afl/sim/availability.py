"""Clients that come and go (``availability``): each client is online or offline over simulated time.

Only online clients are dispatched; a job whose client goes offline before the job would finish is lost
(the loop counts it as ``lost_updates`` and refills its slot when the client drops out: lost jobs are not
trained at all, and are no client updates, so the budget of updates stays exact). When no idle client is
online, a free slot waits until the first one comes back.

A model is a pure function of the seed: each client's on/off times are drawn (or read) when first needed
and kept, never stored in a checkpoint, so a resumed run sees the same ones.

* ``always`` (the default): every client is always online; nothing changes.
* ``exponential``: an alternating on/off process per client, on times ``Exp(mean_on)``, off times
  ``Exp(mean_off)`` (simulated seconds), starting online with probability ``mean_on / (mean_on +
  mean_off)`` (the long-run share of online time), each interval drawn from ``(seed, client, interval)``.
* ``trace``: a CSV file of online intervals, ``client,start,end`` (seconds; a header line), the rest of
  the time offline; a client without rows is always online.
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from pathlib import Path

from afl.errors import ConfigError
from afl.registry import Registry, require
from afl.rng import derive_rng

AVAILABILITY: Registry[Availability] = Registry("availability model")


class Availability(ABC):
    """Interface: whether a client is online at a time, and when that next changes."""

    always_online = False

    def setup(self, *, num_clients: int, seed: int) -> None:
        self.num_clients, self.seed = num_clients, seed

    @abstractmethod
    def online(self, client: int, t: float) -> bool: ...

    @abstractmethod
    def next_change(self, client: int, t: float) -> float:
        """The first time after ``t`` at which the client goes online or offline (``inf``: never)."""

    def offline(self, t: float) -> list[int]:
        """The clients offline at ``t``, sorted (O(clients))."""
        return [c for c in range(self.num_clients) if not self.online(c, t)]


@AVAILABILITY.register("always")
class Always(Availability):
    """Every client online all the time."""

    always_online = True

    def online(self, client: int, t: float) -> bool:
        return True

    def next_change(self, client: int, t: float) -> float:
        return math.inf

    def offline(self, t: float) -> list[int]:
        return []


class _Intervals(Availability):
    """Availability from per-client sorted transition times: ``starts_online[c]`` and ``changes[c]`` (the
    times at which client ``c`` flips state); :meth:`_extend` may add changes up to a time."""

    def setup(self, *, num_clients: int, seed: int) -> None:
        super().setup(num_clients=num_clients, seed=seed)
        self._changes: dict[int, list[float]] = {}
        self._starts_online: dict[int, bool] = {}

    @abstractmethod
    def _prepare(self, client: int, t: float) -> list[float]: ...

    def online(self, client: int, t: float) -> bool:
        changes = self._prepare(client, t)
        flips = bisect_right(changes, t)  # changes at or before t
        return self._starts_online[client] == (flips % 2 == 0)

    def next_change(self, client: int, t: float) -> float:
        changes = self._prepare(client, t)
        i = bisect_right(changes, t)
        return changes[i] if i < len(changes) else math.inf


@AVAILABILITY.register("exponential")
class Exponential(_Intervals):
    """On times ``Exp(mean_on)``, off times ``Exp(mean_off)``, alternating (module docstring).

    Args:
        mean_on, mean_off: mean online and offline durations, simulated seconds.
    """

    def __init__(self, *, mean_on: float = 60.0, mean_off: float = 20.0) -> None:
        for name, value in (("mean_on", mean_on), ("mean_off", mean_off)):
            require(math.isfinite(value) and value > 0, name, f"must be a finite number > 0, got {value}")
        self.mean_on, self.mean_off = mean_on, mean_off

    def _prepare(self, client: int, t: float) -> list[float]:
        changes = self._changes.get(client)
        if changes is None:
            share = self.mean_on / (self.mean_on + self.mean_off)
            self._starts_online[client] = bool(derive_rng(self.seed, "availability", client).random() < share)
            changes = self._changes[client] = []
        online = self._starts_online[client] == (len(changes) % 2 == 0)  # the state after the last change
        last = changes[-1] if changes else 0.0
        while last <= t:  # draw until the first change after t
            mean = self.mean_on if online else self.mean_off
            last += float(derive_rng(self.seed, "availability", client, len(changes)).exponential(mean))
            changes.append(last)
            online = not online
        return changes


@AVAILABILITY.register("trace")
class Trace(_Intervals):
    """Online intervals read from a CSV file ``client,start,end`` (module docstring).

    Args:
        path: the file.
    """

    def __init__(self, *, path: str) -> None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError("path", f"no availability trace at {path}")
        intervals: dict[int, list[tuple[float, float]]] = {}
        with file.open() as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                try:
                    client, start, end = int(row["client"]), float(row["start"]), float(row["end"])
                except (KeyError, TypeError, ValueError):
                    raise ConfigError("path", f"{path} line {n}: expected client,start,end numbers") from None
                if not 0 <= start < end:
                    raise ConfigError("path", f"{path} line {n}: an interval needs 0 <= start < end")
                intervals.setdefault(client, []).append((start, end))
        self.intervals: dict[int, list[tuple[float, float]]] = {}
        for client, spans in intervals.items():
            spans.sort()
            if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
                raise ConfigError("path", f"{path}: client {client}'s intervals overlap")
            merged = [spans[0]]
            for start, end in spans[1:]:  # touching intervals are one
                if start == merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
                else:
                    merged.append((start, end))
            self.intervals[client] = merged

    def _prepare(self, client: int, t: float) -> list[float]:
        changes = self._changes.get(client)
        if changes is None:
            spans = self.intervals.get(client)
            if spans is None:  # not in the trace: always online
                self._starts_online[client] = True
                changes = []
            else:
                self._starts_online[client] = spans[0][0] == 0.0
                changes = [x for span in spans for x in span if x > 0.0]
            self._changes[client] = changes
        return changes
