"""The loop's scalable data structures give exactly what the straightforward ones gave.

The event queue is a heap and an idle client is found from the sorted in-flight ids (:func:`kth_idle`);
speeds are drawn when needed, and client data is one tensor pair (:class:`ClientShards`). Here a loop with
the first, scanning versions (``_ScanningLoop``: the next arrival by a scan of the in-flight jobs, the idle
clients listed, every speed drawn up front, a tensor pair per client) runs next to the real one on random
small configurations, with ties in finish times, faults, timeouts, staleness bounds, both modes and every
aggregator, and a checkpoint taken from the scanning loop resumed in the heap one. The client jobs train
for real (one SGD step of softmax regression on the client's shard, its gradient in closed form), only
without Lightning, so that a hundred runs take seconds.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import torch

from afl.client.runtime import ClientShards
from afl.data import SCHEMES
from afl.messages import ClientJob, ClientResult
from afl.rng import derive_rng
from afl.server.aggregators import AGGREGATORS
from afl.server.lr_schedules import LR_SCHEDULES
from afl.sim.delays import COMM_DELAYS, SPEEDS, DelayModel
from afl.sim.executors import SerialExecutor
from afl.sim.faults import FaultModel
from afl.sim.loop import FederatedLoop, LoopConfig
from afl.sim.sampling import kth_idle

FEATURES, CLASSES = 12, 3


class _ScanningLoop(FederatedLoop):
    """The loop as first written: O(J) and O(C) scans per arrival."""

    def _next_event(self):  # type: ignore[no-untyped-def]
        s = self.state
        i = min(
            range(len(s.in_flight)), key=lambda j: (s.in_flight[j].finish_time, s.in_flight[j].job.job_id)
        )
        flight = s.in_flight.pop(i)
        self._busy.remove(flight.job.client_id)  # (the in-flight ids the loop's other steps read)
        return flight

    def _dispatch_async(self) -> None:
        busy = {f.job.client_id for f in self.state.in_flight}
        idle = [c for c in range(self.num_clients) if c not in busy]
        rng = derive_rng(self.cfg.seed, "select", self.state.dispatched)
        self._dispatch(int(idle[rng.integers(len(idle))]))


class _EagerSpeeds(DelayModel):
    """Every client's speed drawn once, up front, into a list."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = [
            max(self.speed_distribution.draw(derive_rng(self.seed, "speed", c), c), 1e-12)
            for c in range(self.num_clients)
        ]

    def speed(self, client_id: int) -> float:
        return self.table[client_id]


def _sgd_step(client_data) -> Any:
    """A real job: one SGD step of softmax regression on a seeded minibatch of the client's samples."""

    def train(job: ClientJob) -> ClientResult:
        if job.fault == "raise":
            raise RuntimeError("injected")
        x, y = client_data[job.client_id]
        generator = torch.Generator().manual_seed(job.seed)
        take = torch.randperm(len(y), generator=generator)[:4]
        inputs, w, b = x[take].flatten(1), job.state["weight"], job.state["bias"]
        probabilities = torch.softmax(inputs @ w.T + b, dim=1)
        loss = torch.nn.functional.cross_entropy(inputs @ w.T + b, y[take])
        residual = (probabilities - torch.nn.functional.one_hot(y[take], CLASSES)) / len(take)  # ∂loss/∂z
        state = {
            "weight": w - job.lr * residual.T @ inputs,
            "bias": b - job.lr * residual.sum(0),
            "count": job.state["count"] + 1,
        }
        if job.fault == "nonfinite":
            state["bias"].fill_(math.nan)
        return ClientResult(job.job_id, job.client_id, state, len(y), 1, float(loss), math.nan)

    return train


def _random_setting(seed: int) -> dict[str, Any]:
    r = random.Random(seed)
    clients = r.randint(2, 25)
    sync = r.random() < 0.25
    return {
        "clients": clients,
        "samples": r.randint(clients * 2, clients * 8),
        "concurrency": r.randint(1, clients),
        "updates": r.randint(1, 40),
        "mode": "sync" if sync else "async",
        "aggregator": {"name": "fedavg"}
        if sync
        else r.choice(
            [{"name": "afl"}, {"name": "fedbuff", "buffer_size": r.randint(1, 4)}, {"name": "fedasync"}]
        ),
        "lr_schedule": r.choice([{"name": "constant"}, {"name": "paper", "delay_at": "dispatch"}]),
        "speed": r.choice([{"name": "constant"}, {"name": "lognormal"}, {"name": "uniform"}]),
        # constant delays and speeds give many equal finish times: the dispatch index breaks the ties
        "comm": r.choice([{"name": "constant", "value": 1.0}, {"name": "uniform"}, {"name": "exponential"}]),
        "time_per_sample": r.choice([0.0, 0.01]),
        "max_staleness": r.choice([None, 0, 2]),
        "staleness_policy": r.choice(["keep", "drop"]),
        "fault_rate": r.choice([0.0, 0.0, 0.3]),
        "timeout_s": r.choice([None, 1.5]),
        "seed": r.randint(0, 1000),
    }


def _make(setting: dict[str, Any], scanning: bool, on_checkpoint=None) -> FederatedLoop:
    data = torch.Generator().manual_seed(setting["seed"])
    x = torch.randn(setting["samples"], 1, 2, FEATURES // 2, generator=data)
    y = torch.randint(0, CLASSES, (setting["samples"],), generator=data)
    parts = SCHEMES.get("iid")(y.numpy(), setting["clients"], np.random.default_rng(setting["seed"]), None)
    shards = [(x[torch.as_tensor(p)], y[torch.as_tensor(p)]) for p in parts]
    client_data = shards if scanning else ClientShards(x, y, parts)
    delay = (_EagerSpeeds if scanning else DelayModel)(
        speed=SPEEDS.build(setting["speed"], "speed"),
        comm=COMM_DELAYS.build(setting["comm"], "comm"),
        time_per_sample=setting["time_per_sample"],
        num_clients=setting["clients"],
        seed=setting["seed"],
    )
    config = LoopConfig(
        mode=setting["mode"],
        concurrency=setting["concurrency"],
        max_updates=setting["updates"],
        eval_every=3,
        base_lr=0.5,
        seed=setting["seed"],
        max_staleness=setting["max_staleness"],
        staleness_policy=setting["staleness_policy"],
        timeout_s=setting["timeout_s"],
        checkpoint_every=4,
    )
    init = torch.Generator().manual_seed(7)
    state = {
        "weight": torch.randn(CLASSES, FEATURES, generator=init),
        "bias": torch.zeros(CLASSES),
        "count": torch.zeros((), dtype=torch.int64),
    }
    faults = FaultModel(
        rate=setting["fault_rate"], kinds=("raise", "nonfinite", "slow"), seed=setting["seed"]
    )
    return (_ScanningLoop if scanning else FederatedLoop)(
        config,
        global_state=state,
        num_samples=[len(p) for p in parts],
        aggregator=AGGREGATORS.build(setting["aggregator"], "aggregator"),
        lr_schedule=LR_SCHEDULES.build(setting["lr_schedule"], "lr_schedule"),
        delay=delay,
        executor=SerialExecutor(_sgd_step(client_data)),
        evaluate=lambda s: {"test_loss": float(s["weight"].sum()), "test_accuracy": float(s["bias"].sum())},
        faults=faults if setting["fault_rate"] > 0 else None,
        on_checkpoint=on_checkpoint,
    )


def _outcome(loop: FederatedLoop) -> tuple[str, list[float], dict[str, torch.Tensor]]:
    try:
        loop.run()
    except RuntimeError as err:  # e.g. every update rejected: the same error from both
        return f"raised {err}", [], {}
    return repr(loop.state.arrivals), [r["test_loss"] for r in loop.history], loop.state.global_state


@pytest.mark.parametrize("seed", range(150))
def test_heap_loop_equals_the_scanning_loop_on_random_settings(seed: int) -> None:
    torch.set_num_threads(1)  # as runs train (federation.torch_threads); conftest restores it
    setting = _random_setting(seed)
    checkpoints: list[dict[str, Any]] = []
    scanning = _outcome(_make(setting, scanning=True, on_checkpoint=checkpoints.append))
    heap = _outcome(_make(setting, scanning=False))
    assert heap[:2] == scanning[:2], setting
    assert heap[2].keys() == scanning[2].keys()
    for key, value in scanning[2].items():
        assert torch.equal(heap[2][key], value), key
    if checkpoints and not scanning[0].startswith("raised"):
        # the scanning loop's in-flight list (dispatch order) resumed in the heap loop: re-heapified
        resumed = _make(setting, scanning=False)
        resumed.load_state_dict(checkpoints[len(checkpoints) // 2])
        assert _outcome(resumed)[:2] == scanning[:2]


def test_kth_idle_is_the_kth_of_the_listed_idle_clients() -> None:
    r = random.Random(0)
    for _ in range(2000):
        clients = r.randint(1, 60)
        busy = sorted(r.sample(range(clients), r.randint(0, clients - 1)))
        idle = [c for c in range(clients) if c not in set(busy)]
        k = r.randrange(len(idle))
        assert kth_idle(busy, k) == idle[k], (busy, k)


def test_client_shards_hold_each_clients_samples_in_its_order() -> None:
    x, y = torch.randn(50, 1, 2, 2), torch.arange(50)
    parts = SCHEMES.get("dirichlet")(
        (np.arange(50) % 5), 7, np.random.default_rng(3), type("O", (), {"alpha": 0.3})()
    )
    shards = ClientShards(x, y, parts)
    assert len(shards) == 7
    for c, p in enumerate(parts):
        index = torch.as_tensor(p)
        assert torch.equal(shards[c][0], x[index]) and torch.equal(shards[c][1], y[index])
        assert shards[c][0].is_contiguous()
    with pytest.raises(IndexError):
        shards[7]
