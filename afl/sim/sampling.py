"""Client sampling policies (``federation.sampling``): which idle client fills a free slot.

A policy sees the sorted ids of the clients in flight and a draw index (the dispatch count), and learns
from every arrival (:meth:`Sampler.observe`). Its random draws come from ``derive_rng(seed, "select",
draw)``, so a run's choices are a function of the seed and the simulated schedule alone: the same for
any executor and any number of workers. Its state is part of the loop's checkpoint.

* ``uniform`` (the default): an idle client drawn uniformly, in async mode the k-th idle one in id order
  with ``k`` uniform (O(log J)); in sync mode J distinct clients drawn uniformly.
* ``round_robin``: the idle clients in id order, wrapping around: the first idle id after the last one
  dispatched.
* ``adaptive``: explores clients not seen recently and exploits clients with a high recent loss or a fast
  speed, after Oort's utility (Lai et al., OSDI 2021, "Oort: efficient federated learning via guided
  participant selection", §4.2): with probability ``epsilon`` (or while some idle client has never
  trained) an idle client is drawn uniformly, preferring the never-seen ones; otherwise the idle client
  of the highest utility

      ``U_c = n_c · L_c · (T / d_c)^(α · 1[d_c > T]) + sqrt(0.1 · ln(t) / t_c)``,

  ``L_c`` the train loss of its last update, ``n_c`` its samples, ``d_c`` its last job's simulated
  duration, ``T`` the preferred duration (``deadline``; None: the median of the last known durations),
  ``t`` the dispatches so far and ``t_c`` the dispatch (counted from 1) that last chose it: a client
  chosen long ago has a small ``t_c`` and a large bonus (Oort's ``sqrt(0.1 log R / L_i)``, ``L_i`` the
  last round it took part in). Ties go to the lower id. It scores every idle client at each dispatch: O(C).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from afl.registry import Registry, require
from afl.rng import derive_rng

SAMPLERS: Registry[Sampler] = Registry("sampling policy")


def kth_idle(busy: list[int], k: int) -> int:
    """The ``k``-th (from 0) client id not in ``busy`` (sorted, distinct ids >= 0): ``sorted(idle)[k]``
    in O(log len(busy)), however many clients there are.

    The answer is ``k + i`` with ``i`` the number of busy ids below it: the first ``i`` with
    ``busy[i] - i > k`` (``busy[i] - i``, the idle ids below ``busy[i]``, never decreases).

    Example:
        >>> [kth_idle([1, 2, 5], k) for k in range(4)]  # idle: 0, 3, 4, 6, ...
        [0, 3, 4, 6]
    """
    lo, hi = 0, len(busy)
    while lo < hi:
        mid = (lo + hi) // 2
        if busy[mid] - mid <= k:
            lo = mid + 1
        else:
            hi = mid
    return k + lo


class Sampler(ABC):
    """Interface: :meth:`choose` a client for a free slot; :meth:`observe` each arrival."""

    def setup(self, *, num_clients: int, seed: int) -> None:
        self.num_clients, self.seed = num_clients, seed

    @abstractmethod
    def choose(self, unavailable: list[int], draw: int) -> int:
        """A client not in ``unavailable`` (sorted: those in flight, and those offline) for the
        ``draw``-th dispatch."""

    def choose_round(self, count: int, round: int, unavailable: Sequence[int] = ()) -> list[int]:
        """Sync mode: ``count`` distinct clients, none of ``unavailable`` (sorted), for barrier round
        ``round``; sorted."""
        chosen: list[int] = []
        for i in range(count):
            chosen.append(self.choose(sorted({*unavailable, *chosen}), round * self.num_clients + i))
        return sorted(chosen)

    def observe(self, arrival: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Learn from an arrival (a row of ``updates.csv``: client_id, train_loss, dispatch and arrival
        times, ...)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@SAMPLERS.register("uniform")
class Uniform(Sampler):
    """An idle client drawn uniformly (the loop's rule before policies existed: the same draws)."""

    def choose(self, unavailable: list[int], draw: int) -> int:
        rng = derive_rng(self.seed, "select", draw)
        return kth_idle(unavailable, int(rng.integers(self.num_clients - len(unavailable))))

    def choose_round(self, count: int, round: int, unavailable: Sequence[int] = ()) -> list[int]:
        rng = derive_rng(self.seed, "select-round", round)
        if not unavailable:
            return sorted(rng.choice(self.num_clients, size=count, replace=False).tolist())
        taken = set(unavailable)
        available = [c for c in range(self.num_clients) if c not in taken]
        return sorted(available[i] for i in rng.choice(len(available), size=count, replace=False).tolist())


@SAMPLERS.register("round_robin")
class RoundRobin(Sampler):
    """The first idle client at or after the one following the last dispatched, wrapping around."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, unavailable: list[int], draw: int) -> int:
        taken, c = set(unavailable), self._next % self.num_clients
        while c in taken:
            c = (c + 1) % self.num_clients
        self._next = c + 1
        return c

    def state_dict(self) -> dict[str, Any]:
        return {"next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._next = int(state["next"])


@SAMPLERS.register("adaptive")
class Adaptive(Sampler):
    """Explore clients not seen recently, exploit a high recent loss or a fast speed (module docstring).

    Args:
        epsilon: the share of dispatches that explore (a uniform draw among idle clients).
        alpha: how hard a client slower than ``deadline`` is penalised (Oort's α).
        deadline: the preferred job duration ``T`` in simulated seconds; None: the median of the known ones.
    """

    def __init__(self, *, epsilon: float = 0.2, alpha: float = 2.0, deadline: float | None = None) -> None:
        require(0 <= epsilon <= 1, "epsilon", f"must be in [0, 1], got {epsilon}")
        require(alpha >= 0, "alpha", f"must be >= 0, got {alpha}")
        require(deadline is None or deadline > 0, "deadline", f"must be > 0, got {deadline}")
        self.epsilon, self.alpha, self.deadline = epsilon, alpha, deadline
        self._loss: dict[int, float] = {}
        self._samples: dict[int, int] = {}
        self._duration: dict[int, float] = {}
        self._chosen_at: dict[int, int] = {}  # client -> the dispatch that last chose it (1-based)
        self._dispatches = 0

    def choose(self, unavailable: list[int], draw: int) -> int:
        self._dispatches += 1
        rng = derive_rng(self.seed, "select", draw)
        taken = set(unavailable)
        idle = [c for c in range(self.num_clients) if c not in taken]
        unseen = [c for c in idle if c not in self._loss]
        explore = float(rng.random()) < self.epsilon
        if unseen or explore:
            pool = unseen or idle
            client = pool[int(rng.integers(len(pool)))]
        else:
            client = max(idle, key=lambda c: (self.utility(c), -c))
        self._chosen_at[client] = self._dispatches
        return client

    def utility(self, client: int) -> float:
        """``U_c`` (module docstring) of a client that has trained before."""
        loss = self._loss[client]
        utility = self._samples[client] * (loss if math.isfinite(loss) else 0.0)
        deadline = self._deadline()
        duration = self._duration[client]
        if duration > deadline:
            utility *= (deadline / duration) ** self.alpha
        return utility + math.sqrt(0.1 * math.log(max(self._dispatches, 1)) / self._chosen_at[client])

    def _deadline(self) -> float:
        if self.deadline is not None:
            return self.deadline
        durations = sorted(self._duration.values())
        return durations[len(durations) // 2]

    def observe(self, arrival: dict[str, Any]) -> None:
        client = int(arrival["client_id"])
        self._loss[client] = float(arrival["train_loss"])
        self._samples[client] = int(arrival["num_samples"])
        self._duration[client] = float(arrival["arrival_time"]) - float(arrival["dispatch_time"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss": dict(self._loss),
            "samples": dict(self._samples),
            "duration": dict(self._duration),
            "chosen_at": dict(self._chosen_at),
            "dispatches": self._dispatches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loss = {int(c): float(v) for c, v in state["loss"].items()}
        self._samples = {int(c): int(v) for c, v in state["samples"].items()}
        self._duration = {int(c): float(v) for c, v in state["duration"].items()}
        self._chosen_at = {int(c): int(v) for c, v in state["chosen_at"].items()}
        self._dispatches = int(state["dispatches"])
