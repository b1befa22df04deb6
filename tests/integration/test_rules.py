"""Rule tests for the lines of docs/design.md that had none: the hinge boundary, tie-breaking, who goes next,
the LR of a sync round, and the server rules end to end (FedAsync; the final flush of a partly filled
buffer for fedbuff and for afl with M > 1), each against the formula written out here by hand."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from helpers.loops import serial_loop

from afl.errors import ConfigError
from afl.experiments.build import Setup
from afl.messages import ClientJob, ClientResult, ClientUpdate, is_parameter, is_running_stat
from afl.rng import derive_rng
from afl.server.aggregators import AFL, AGGREGATORS, FedAsync, FedBuff
from afl.server.lr_schedules import PaperLR
from afl.server.staleness import Hinge, Inverse, Polynomial
from afl.sim.delays import Constant as ConstantDelay
from afl.sim.delays import DelayModel, ExponentialDelay, LogNormalSpeed, UniformDelay, UniformSpeed
from afl.sim.executors import SerialExecutor, ThreadExecutor
from afl.sim.loop import FederatedLoop, LoopConfig

State = dict[str, torch.Tensor]


def _clone(state: State) -> State:
    return {k: v.clone() for k, v in state.items()}


class Recording:
    """The run's own client runtime, keeping each job it was handed and each result it returned (the
    rules are then checked on exactly the models the server saw)."""

    def __init__(self, runtime: Callable[[ClientJob], ClientResult]) -> None:
        self.runtime = runtime
        self.jobs: dict[int, ClientJob] = {}
        self.results: dict[int, ClientResult] = {}

    def __call__(self, job: ClientJob) -> ClientResult:
        result = self.runtime(job)
        self.jobs[job.job_id], self.results[job.job_id] = job, result
        return result


def _run(cfg: Any) -> tuple[Recording, FederatedLoop, State]:
    """The loop of ``cfg`` run to its budget (serially): its recorded client jobs, the loop, and the
    initial global model."""
    recordings = []

    def record(setup: Setup) -> Recording:
        recordings.append(Recording(setup.runtime))
        return recordings[-1]

    torch.set_num_threads(cfg.federation.torch_threads)
    with serial_loop(cfg, train=record) as (setup, loop):
        initial = _clone(setup.global_state)
        loop.run()
    return recordings[0], loop, initial


# ----------------------------------------------------------------------------- the hinge boundary
@pytest.mark.parametrize(("a", "b"), [(10.0, 4), (1.0, 0), (0.5, 2), (3.0, 1)])
def test_hinge_is_one_up_to_and_including_b_then_falls(a: float, b: int) -> None:
    """``s = 1 if τ ≤ b else 1 / (a (τ - b) + 1)``. At τ = b the second branch is also 1 (the function is
    continuous at the hinge), so ``τ ≤ b`` and ``τ < b`` define the same function: what matters, and what
    is pinned here, is its value on both sides of b."""
    s = Hinge(a=a, b=b)
    assert [s(t) for t in range(b + 1)] == [1.0] * (b + 1)
    assert s(b + 1) == pytest.approx(1 / (a + 1), rel=1e-12)
    assert s(b + 3) == pytest.approx(1 / (3 * a + 1), rel=1e-12)
    assert s(b + 1) < 1.0 or a == 0


# ----------------------------------------------------------------------------- options at their bounds
BOUNDS = [
    # component, options accepted at the bound, options just past it, the key and message of the error
    (Inverse, {"a": 0.0}, {"a": -0.5}, "a", "must be >= 0, got -0.5"),
    (Polynomial, {"a": 0.0}, {"a": -0.5}, "a", "must be >= 0, got -0.5"),
    (Hinge, {"a": 0.0, "b": 0}, {"a": -0.5}, "a", "must be >= 0, got -0.5"),
    (Hinge, {"a": 1.0, "b": 0}, {"b": -1}, "b", "must be >= 0, got -1"),
    (PaperLR, {"alpha": 0.0}, {"alpha": -0.1}, "alpha", "must be >= 0, got -0.1"),
    (PaperLR, {"alpha": 0.0}, {"alpha": math.inf}, "alpha", "must be >= 0, got inf"),
    (
        PaperLR,
        {"delay_at": "dispatch"},
        {"delay_at": "both"},
        "delay_at",
        "got 'both'; allowed: arrival, dispatch",
    ),
    (PaperLR, {"decay": "none"}, {"decay": "cosine"}, "decay", "got 'cosine'; allowed: sqrt, none"),
    (ConstantDelay, {"value": 0.0}, {"value": -1.0}, "value", "must be >= 0, got -1.0"),
    (UniformSpeed, {"low": 0.5, "high": 0.5}, {"low": 0.0}, "low", "need 0 < low <= high, got 0.0, 1.0"),
    (
        UniformSpeed,
        {"low": 0.5, "high": 0.5},
        {"low": 0.6, "high": 0.5},
        "low",
        "need 0 < low <= high, got 0.6, 0.5",
    ),
    (LogNormalSpeed, {"sigma": 0.0}, {"sigma": -1.0}, "sigma", "must be >= 0, got -1.0"),
    (UniformDelay, {"max": 0.0}, {"max": -1.0}, "max", "must be >= 0, got -1.0"),
    (ExponentialDelay, {"mean": 1e-9}, {"mean": 0.0}, "mean", "must be > 0, got 0.0"),
    (AFL, {"server_lr": 1e-9, "buffer_size": 1}, {"server_lr": 0.0}, "server_lr", "must be > 0, got 0.0"),
    (AFL, {"buffer_size": 1}, {"buffer_size": 0}, "buffer_size", "must be >= 1, got 0"),
    (FedAsync, {"alpha": 1.0}, {"alpha": 0.0}, "alpha", "must be in (0, 1], got 0.0"),
    (FedAsync, {"alpha": 1.0}, {"alpha": 1.5}, "alpha", "must be in (0, 1], got 1.5"),
    (
        FedBuff,
        {"buffer_size": 1, "server_lr": 1e-9},
        {"buffer_size": 0},
        "buffer_size",
        "must be >= 1, got 0",
    ),
    (FedBuff, {"buffer_size": 1, "server_lr": 1e-9}, {"server_lr": 0.0}, "server_lr", "must be > 0, got 0.0"),
]


@pytest.mark.parametrize(("component", "ok", "bad", "key", "message"), BOUNDS)
def test_component_options_are_checked_at_their_bounds(component, ok, bad, key, message) -> None:
    """The bound itself is allowed; just past it is a ConfigError naming the option and what is allowed."""
    component(**ok)
    with pytest.raises(ConfigError) as info:
        component(**bad)
    assert (info.value.key, info.value.message) == (key, message)


def test_values_at_the_bounds_mean_what_they_say() -> None:
    assert [Hinge(a=0.0, b=0)(t) for t in (0, 1, 9)] == [1.0, 1.0, 1.0]  # a = 0: no discount
    assert [Inverse(a=0.0)(9), Polynomial(a=0.0)(9)] == [1.0, 1.0]
    assert PaperLR(alpha=0.0).at_arrival(9) == 1.0
    rng = np.random.default_rng(0)
    assert UniformSpeed(low=0.5, high=0.5).sample(rng) == 0.5 and LogNormalSpeed(sigma=0.0).sample(rng) == 1.0
    assert UniformDelay(max=0.0).sample(rng) == 0.0 and ConstantDelay(value=0.0).sample(rng) == 0.0


def test_aggregator_defaults_are_the_documented_rules() -> None:
    """What a config with only ``server.aggregator.name`` runs: afl with M = 1, η_g = M/J and
    s(τ) = 1/(1 + 0.2 τ); fedasync with α = 0.6 and s(τ) = (τ + 1)^-0.5; fedbuff with K = 10, η_g = 1 and
    s(τ) = 1/sqrt(1 + τ) (docs/design.md, the aggregators' docstrings)."""

    def built(name: str) -> Any:
        agg = AGGREGATORS.build({"name": name}, "server.aggregator")
        agg.setup(concurrency=4)
        return agg

    afl, fedasync, fedbuff = built("afl"), built("fedasync"), built("fedbuff")
    assert (afl.buffer_size, afl.server_lr, afl.staleness(5)) == (1, 0.25, 0.5)
    assert (fedasync.alpha, fedasync.staleness(3), fedasync.staleness(8)) == (0.6, 0.5, 1 / 3)
    assert (fedbuff.buffer_size, fedbuff.server_lr, fedbuff.staleness(3)) == (10, 1.0, 0.5)


@pytest.mark.parametrize("name", ["afl", "fedasync", "fedbuff"])
def test_a_configured_staleness_function_is_the_one_applied(name: str) -> None:
    """With ``staleness: constant`` a 3-versions-stale update weighs as much as a fresh one (the defaults
    would discount it to 1/1.6, 1/2 and 1/2)."""
    node = {"name": name, "staleness": {"name": "constant"}}
    node.update({"fedasync": {"alpha": 1.0}}.get(name, {"buffer_size": 1, "server_lr": 1.0}))
    agg = AGGREGATORS.build(node, "server.aggregator")
    agg.setup(concurrency=1)
    state, start = {"w": torch.tensor([2.0])}, {"w": torch.tensor([0.0])}
    global_state = {"w": torch.tensor([0.0])}
    assert agg.on_arrival(ClientUpdate(0, 5, 3, state=state, dispatched=start), global_state)
    assert float(global_state["w"]) == 2.0


@pytest.mark.parametrize("name", ["afl", "fedbuff"])
def test_an_update_discounted_to_zero_leaves_running_statistics_alone(name: str) -> None:
    """s(τ) = 2^-2000 underflows to 0: the buffer's total weight is 0, so there is no weighted mean of client
    statistics to mix toward (it would be 0/0); parameters and statistics stay as they were, finite."""
    agg = AGGREGATORS.build(
        {"name": name, "buffer_size": 1, "server_lr": 1.0, "staleness": {"name": "polynomial", "a": 2000.0}},
        "server.aggregator",
    )
    agg.setup(concurrency=1)

    def bn(w: float, mean: float, var: float) -> State:
        return {
            "w": torch.tensor([w]),
            "bn.running_mean": torch.tensor([mean]),
            "bn.running_var": torch.tensor([var]),
        }

    global_state = bn(1.0, 0.5, 2.0)
    update = ClientUpdate(0, 10, 1, state=bn(3.0, 4.0, 9.0), dispatched=bn(1.0, 0.5, 2.0))
    assert agg.staleness(1) == 0.0
    assert agg.on_arrival(update, global_state)
    assert [float(v) for v in global_state.values()] == [1.0, 0.5, 2.0]


def _bn(w: float, stat: float, counter: int) -> State:
    return {
        "w": torch.tensor([w], dtype=torch.float64),
        "bn.running_mean": torch.tensor([stat], dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(counter),
    }


@pytest.mark.parametrize(("name", "first", "second"), [("fedavg", 5.0, 2.0), ("afl", 2.5, 2.25)])
def test_each_buffer_starts_from_nothing_and_keeps_the_largest_counter(name: str, first, second) -> None:
    """Two buffers of two updates (FedAvg rounds; afl with M = 2, η_g = 0.5, s ≡ 1), every client's
    parameter equal to its statistic. FedAvg: the n-weighted mean of each round (5, then 2); afl: a step of
    η_g times the weighted mean delta, and a mix of weight η_g toward the weighted mean statistic (2.5, then
    2.25 both). The counter is the largest seen, also when the larger came first in its buffer."""
    node: dict[str, Any] = {"name": name}
    if name == "afl":
        node.update(buffer_size=2, server_lr=0.5, staleness={"name": "constant"})
    agg = AGGREGATORS.build(node, "server.aggregator")
    agg.setup(concurrency=2)
    g = _bn(0.0, 0.0, 3)
    for updates, expected in ((((1, 2.0, 9), (3, 6.0, 5)), first), (((2, 1.0, 2), (2, 3.0, 4)), second)):
        start = {k: v.clone() for k, v in g.items()}
        for n, value, counter in updates:
            agg.on_arrival(ClientUpdate(0, n, 0, state=_bn(value, value, counter), dispatched=start), g)
        assert agg.flush(g) == (name == "fedavg")  # the barrier; afl's full buffer was applied at once
        assert [float(g["w"]), float(g["bn.running_mean"]), int(g["bn.num_batches_tracked"])] == [
            pytest.approx(expected, rel=1e-12),
            pytest.approx(expected, rel=1e-12),
            9,
        ]


def test_running_statistics_are_recognised_at_any_depth() -> None:
    """ResNet-20's keys nest: ``layer1.0.bn1.running_var`` is a running statistic, ``layer1.0.bn1.weight``
    a parameter, whatever the depth."""
    var, weight = torch.ones(2), torch.ones(2)
    for prefix in ("bn", "layer1.0.bn1", "a.b.c.d.bn"):
        assert is_running_stat(f"{prefix}.running_var") and is_running_stat(f"{prefix}.running_mean")
        assert not is_parameter(f"{prefix}.running_var", var) and is_parameter(f"{prefix}.weight", weight)
    assert not is_running_stat("running_var.weight")


# ----------------------------------------------------------------------------- order and who goes next
EQUAL_JOBS = (
    "partition.num_clients=4",
    "delay.speed.name=constant",
    "delay.time_per_sample=0.0",
    "delay.comm.name=constant",
    "delay.comm.value=0.5",
    "server.lr_schedule.name=constant",
)


def test_equal_finish_times_are_applied_in_dispatch_order(tiny) -> None:
    """Every job takes 0.5 s: the J = 3 jobs of each wave tie. They are applied in dispatch order, so job
    j arrives j-th, and from the second wave on each is exactly 2 versions stale (afl, M = 1)."""
    _, loop, _ = _run(tiny(*EQUAL_JOBS, "federation.max_updates=9"))
    rows = loop.state.arrivals
    assert [r["job_id"] for r in rows] == list(range(9))
    assert [r["arrival_time"] for r in rows] == [0.5] * 3 + [1.0] * 3 + [1.5] * 3
    assert [r["staleness"] for r in rows] == [0, 1, 2, 2, 2, 2, 2, 2, 2]
    assert [r["dispatched_version"] for r in rows] == [0, 0, 0, 1, 2, 3, 4, 5, 6]


def test_the_client_that_just_arrived_is_idle_again_at_once(tiny) -> None:
    """With J = C every other client is in flight when one arrives, so the refill (uniform over the idle
    clients, the one that just arrived included) must hand the slot straight back to it."""
    _, loop, _ = _run(
        tiny("partition.num_clients=3", "federation.concurrency=3", "federation.max_updates=12")
    )
    rows = loop.state.arrivals
    by_job = {r["job_id"]: r["client_id"] for r in rows}
    for k, r in enumerate(rows[:-3], start=1):  # arrival k frees the slot that job k + 2 takes
        assert by_job[k + 2] == r["client_id"]
    assert sorted(by_job[j] for j in range(3)) == [0, 1, 2]


def test_each_dispatch_draws_its_client_anew(tiny) -> None:
    """Async with J = 1: every refill is a fresh uniform draw over all 6 clients (24 draws reach at least
    4 of them); sync: every round, the first included, samples its J clients anew with its own generator
    (4 rounds of 2 out of 6 are not all the same pair)."""
    _, loop, _ = _run(tiny("federation.concurrency=1", "federation.max_updates=24"))
    assert len({r["client_id"] for r in loop.state.arrivals}) >= 4
    sync = tiny("federation.mode=sync", "server.aggregator.name=fedavg", "federation.concurrency=2")
    _, loop, _ = _run(sync)
    rounds = {
        frozenset(r["client_id"] for r in loop.state.arrivals if r["dispatched_version"] == v)
        for v in range(6)
    }
    assert len(rounds - {frozenset()}) >= 2
    for r in range(loop.state.rounds):
        drawn = derive_rng(sync.seed, "select-round", r).choice(6, size=2, replace=False)
        assert sorted(a["client_id"] for a in loop.state.arrivals if a["dispatched_version"] == r) == sorted(
            drawn.tolist()
        ), r


def test_sync_rounds_hand_out_the_lr_of_their_barrier_round(tiny) -> None:
    """Sync: r is the barrier round, so all J jobs of round r get γ0 / sqrt(r + 1)."""
    cfg = tiny(
        "federation.mode=sync",
        "server.aggregator.name=fedavg",
        "server.lr_schedule.name=paper",
        "federation.concurrency=2",
        "federation.max_updates=7",
    )
    _, loop, _ = _run(cfg)
    lrs = [r["lr"] for r in sorted(loop.state.arrivals, key=lambda r: r["job_id"])]
    expected = [0.003 / math.sqrt(j // 2 + 1) for j in range(7)]  # the last round holds one client
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert loop.state.rounds == 4 and loop.state.version == 4


# ----------------------------------------------------------------------------- rules end to end
class ByHand:
    """A server rule written out from docs/design.md, applied to client models trained again here."""

    def arrive(self, theta: State, client: State, dispatched: State, row: dict[str, Any]) -> bool:
        raise NotImplementedError

    def flush(self, theta: State) -> bool:
        return False


class FedAsyncByHand(ByHand):
    """θ ← (1 - α_t) θ + α_t θ_c, α_t = α s(τ) for each update."""

    def __init__(self, alpha: float, s: Callable[[int], float]) -> None:
        self.alpha, self.s = alpha, s
        self.alphas: list[float] = []

    def arrive(self, theta: State, client: State, dispatched: State, row: dict[str, Any]) -> bool:
        alpha_t = self.alpha * self.s(row["staleness"])
        self.alphas.append(alpha_t)
        for k in theta:
            theta[k] = (1 - alpha_t) * theta[k] + alpha_t * client[k]
        return True


class BufferedByHand(ByHand):
    """afl: after M arrivals θ ← θ + η_g Σ (n_c / Σ n) s(τ_c) Δ_c; fedbuff: after K arrivals
    θ ← θ + η_g Σ s(τ_c) Δ_c / K. At the end a partly filled buffer is applied with its own size."""

    def __init__(self, rule: str, size: int, server_lr: float, s: Callable[[int], float]) -> None:
        self.rule, self.size, self.server_lr, self.s = rule, size, server_lr, s
        self.buffer: list[tuple[int, float, State]] = []
        self.flushed_sizes: list[int] = []

    def arrive(self, theta: State, client: State, dispatched: State, row: dict[str, Any]) -> bool:
        delta = {k: row["delta_scale"] * (client[k] - dispatched[k]) for k in theta}
        self.buffer.append((row["num_samples"], self.s(row["staleness"]), delta))
        return len(self.buffer) == self.size and self.flush(theta)

    def flush(self, theta: State) -> bool:
        if not self.buffer:
            return False
        total = sum(n for n, _, _ in self.buffer)
        for k in theta:
            if self.rule == "afl":
                step = sum((n / total) * s * d[k] for n, s, d in self.buffer)
            else:
                step = sum(s * d[k] for _, s, d in self.buffer) / len(self.buffer)
            theta[k] = theta[k] + self.server_lr * step
        self.flushed_sizes.append(len(self.buffer))
        self.buffer = []
        return True


def replay(recording: Recording, loop: FederatedLoop, initial: State, rule: ByHand) -> tuple[State, int]:
    """Apply ``rule`` to the recorded client models in the loop's arrival order, keeping every global
    version. Each job must have been handed the version it says it was dispatched at. Returns the final
    model and version."""
    versions, theta = [_clone(initial)], _clone(initial)
    for row in loop.state.arrivals:
        job, result = recording.jobs[row["job_id"]], recording.results[row["job_id"]]
        assert (job.client_id, job.lr) == (row["client_id"], row["lr"])
        for k, v in versions[row["dispatched_version"]].items():
            torch.testing.assert_close(job.state[k], v, rtol=TOL, atol=TOL)
        if rule.arrive(theta, result.state, job.state, row):
            versions.append(_clone(theta))
    if rule.flush(theta):
        versions.append(_clone(theta))
    return theta, len(versions) - 1


# The aggregator's in-place float32 arithmetic (lerp_, add_) and the formulas above round differently:
# a few ulps per update, no more (measured here: at most 6e-8 apart after 10 updates).
TOL = 1e-6


def _assert_same_model(loop: FederatedLoop, theta: State, initial: State) -> None:
    for k, v in theta.items():
        torch.testing.assert_close(loop.state.global_state[k], v, rtol=TOL, atol=TOL)
    moved = max(float((theta[k] - initial[k]).abs().max()) for k in theta)
    assert moved > 1e-2  # far beyond the tolerance: the rule did move the model


def test_fedasync_end_to_end_mixes_each_update_with_alpha_times_its_staleness_weight(tiny) -> None:
    """FedAsync with a hinge s(τ) (a = 2, b = 1), α = 0.6, over 10 stale updates."""
    cfg = tiny(
        "server.aggregator.name=fedasync",
        "server.aggregator.alpha=0.6",
        "server.aggregator.staleness.name=hinge",
        "server.aggregator.staleness.a=2.0",
        "server.aggregator.staleness.b=1",
        "server.lr_schedule.name=constant",
        "federation.max_updates=10",
    )
    recording, loop, initial = _run(cfg)
    rule = FedAsyncByHand(0.6, lambda t: 1.0 if t <= 1 else 1 / (2.0 * (t - 1) + 1))
    theta, version = replay(recording, loop, initial, rule)
    assert version == loop.state.version == 10
    assert {r["staleness"] for r in loop.state.arrivals} >= {0, 1, 2}
    assert len({round(a, 12) for a in rule.alphas}) >= 2  # α_t recomputed per update: 0.6 and below
    _assert_same_model(loop, theta, initial)


@pytest.mark.parametrize(
    ("overrides", "rule", "sizes"),
    [
        (  # K = 4 over 10 updates: 4 + 4 + a final partial buffer of 2, divided by 2 (not by K)
            (
                "server.aggregator.name=fedbuff",
                "server.aggregator.buffer_size=4",
                "server.lr_schedule.name=constant",
            ),
            lambda: BufferedByHand("fedbuff", 4, 1.0, lambda t: 1 / math.sqrt(1 + t)),
            [4, 4, 2],
        ),
        (  # M = 3, η_g = M / J = 1, the paper LR's delay factor on each delta: 3 + 3 + 3 + a final 1
            (
                "server.aggregator.name=afl",
                "server.aggregator.buffer_size=3",
                "server.lr_schedule.name=paper",
                "server.lr_schedule.alpha=0.5",
            ),
            lambda: BufferedByHand("afl", 3, 1.0, lambda t: 1 / (1 + 0.2 * t)),
            [3, 3, 3, 1],
        ),
    ],
    ids=["fedbuff-K4", "afl-M3"],
)
def test_buffered_rules_end_to_end_with_the_final_partial_flush(tiny, overrides, rule, sizes) -> None:
    recording, loop, initial = _run(tiny(*overrides, "federation.max_updates=10"))
    by_hand = rule()
    theta, version = replay(recording, loop, initial, by_hand)
    assert by_hand.flushed_sizes == sizes
    assert version == loop.state.version == len(sizes)
    assert {r["staleness"] for r in loop.state.arrivals} >= {0, 1}  # s(τ) weighs them unequally
    _assert_same_model(loop, theta, initial)


# ----------------------------------------------------------------------------- executors
def _probe() -> tuple[Callable[[ClientJob], int], dict[str, Any]]:
    """A job function that reports how many jobs ran at once and on which threads: each job waits (up to
    0.3 s) for two others to be running beside it, so the peak is as many jobs as the pool lets run."""
    seen: dict[str, Any] = {"active": 0, "peak": 0, "threads": set()}
    cond = threading.Condition()

    def train(job: ClientJob) -> int:
        with cond:
            seen["active"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
            seen["threads"].add(threading.current_thread().name)
            cond.notify_all()
            cond.wait_for(lambda: seen["active"] >= 3, timeout=0.3)
            seen["active"] -= 1
        return job.job_id

    return train, seen


@pytest.mark.parametrize(("workers", "peak"), [(1, 1), (2, 2), (None, 2)])
def test_thread_executor_trains_up_to_workers_jobs_at_once_on_its_own_threads(workers, peak: int) -> None:
    train, seen = _probe()
    executor = ThreadExecutor(train) if workers is None else ThreadExecutor(train, workers)  # default: 2
    with executor:
        for j in range(4):
            executor.submit(ClientJob(j, 0, {}, 0.1, 0))
        assert [executor.result(j) for j in range(4)] == [0, 1, 2, 3]
    assert seen["peak"] == peak
    assert len(seen["threads"]) == peak and all(t.startswith("afl-client") for t in seen["threads"])


def test_closing_a_thread_executor_waits_for_a_job_still_running() -> None:
    started, finished = threading.Event(), threading.Event()

    def train(job: ClientJob) -> int:
        started.set()
        time.sleep(0.2)
        finished.set()
        return job.job_id

    executor = ThreadExecutor(train, 1)
    executor.submit(ClientJob(0, 0, {}, 0.1, 0))
    assert started.wait(5.0)
    executor.close()
    assert finished.is_set()


# ----------------------------------------------------------------------------- the loop's own checks
def test_loop_settings_out_of_range_are_refused_with_what_is_allowed() -> None:
    """The config layer reports these to users (exit 2); the loop refuses them too, for direct callers."""
    with pytest.raises(ValueError, match=r"^mode must be one of \('async', 'sync'\), got 'semi'$"):
        LoopConfig(mode="semi")
    with pytest.raises(ValueError, match=r"^staleness_policy must be one of \('keep', 'drop'\)$"):
        LoopConfig(staleness_policy="clip")
    with pytest.raises(ValueError, match=r"^concurrency must be in \[1, 2\], got 3$"):
        FederatedLoop(
            LoopConfig(concurrency=3),
            global_state={},
            num_samples=[10, 10],
            aggregator=AFL(),
            lr_schedule=PaperLR(),
            delay=DelayModel(
                speed=ConstantDelay(), comm=ConstantDelay(), time_per_sample=0.0, num_clients=2, seed=0
            ),
            executor=SerialExecutor(lambda job: job),
            evaluate=lambda state: {},
        )


def test_a_job_exactly_as_long_as_the_timeout_is_not_rejected(tiny) -> None:
    """client.timeout_s rejects a job *longer* than the limit: every job here takes exactly 1 s."""
    exact = ("delay.time_per_sample=0.0", "delay.comm.name=constant", "delay.comm.value=1.0")
    _, loop, _ = _run(tiny(*exact, "client.timeout_s=1.0", "federation.max_updates=6"))
    assert [r["rejected"] for r in loop.state.arrivals] == [""] * 6
    with pytest.raises(
        RuntimeError, match="every one of the 6 client updates was rejected; the first: timeout"
    ):
        _run(tiny(*exact, "client.timeout_s=0.999", "federation.max_updates=6"))


@pytest.mark.parametrize(
    ("kind", "timeout", "first"),
    [
        ("raise", None, r"the first: error: InjectedFault: injected fault in job \d+ \(client \d+\)"),
        ("raise", 0.999, r"the first: timeout: InjectedFault: injected fault in job \d+"),
        ("nonfinite", None, r"the first: nonfinite: non-finite weights"),
        ("nonfinite", 0.999, r"the first: timeout: longer than client\.timeout_s=0\.999"),
    ],
)
def test_a_rejected_update_is_counted_under_the_first_reason_that_applies(tiny, kind, timeout, first) -> None:
    """A job past client.timeout_s is a timeout, whatever else it did (raised, returned NaN); otherwise a
    raising job is an error and a NaN one non-finite; the first rejection is quoted when all are."""
    exact = ("delay.time_per_sample=0.0", "delay.comm.name=constant", "delay.comm.value=1.0")
    limit = "null" if timeout is None else timeout
    faulty = ("faults.rate=1.0", f"faults.kinds=[{kind}]", f"client.timeout_s={limit}")
    with pytest.raises(RuntimeError, match=first):
        _run(tiny(*exact, *faulty, "federation.max_updates=4"))


def test_what_client_callbacks_measure_is_recorded_with_each_update(tiny) -> None:
    """client.callbacks report per job (here parameter_drift's ‖θ_c − θ_dispatched‖); the loop records it
    with the update (updates.csv), next to the update itself."""
    _, loop, _ = _run(tiny("client.callbacks=[parameter_drift]", "federation.max_updates=4"))
    assert all(r["client_drift"] > 0 and r["steps"] >= 1 for r in loop.state.arrivals)


def test_client_speeds_are_draws_of_the_speed_distribution() -> None:
    """One speed per client, drawn from the configured distribution (all of them in [0.2, 0.5] here, none
    alike); a speed of 0 is kept just above 0, so durations stay finite."""
    model = DelayModel(
        speed=UniformSpeed(low=0.2, high=0.5),
        comm=ConstantDelay(0.0),
        time_per_sample=1.0,
        num_clients=40,
        seed=1,
    )
    assert all(0.2 <= v <= 0.5 for v in model.speeds) and len(set(model.speeds)) == 40
    assert model.duration(3, 10, 0) == pytest.approx(10 / model.speeds[3], rel=1e-12)
    stopped = DelayModel(
        speed=ConstantDelay(0.0), comm=ConstantDelay(0.0), time_per_sample=1.0, num_clients=2, seed=1
    )
    assert all(0 < v < 1e-6 for v in stopped.speeds) and math.isfinite(stopped.duration(0, 10, 0))


def test_a_plugin_aggregator_receives_each_accepted_update_as_the_arrival_rows_record_it(tiny) -> None:
    """A user's aggregator (registered by name) is handed who trained, on how many samples, how stale, and
    the delta's scale: the same as the arrival rows (updates.csv) record."""
    from afl.server.aggregators import AGGREGATORS, Aggregator

    seen: list[tuple[int, int, int, float]] = []

    @AGGREGATORS.register("records-updates")
    class Records(Aggregator):
        def on_arrival(self, update, global_state) -> bool:
            seen.append((update.client_id, update.num_samples, update.staleness, update.delta_scale))
            return True  # a new version (the same weights), so later updates are stale

    try:
        _, loop, _ = _run(tiny("server.aggregator.name=records-updates"))
    finally:
        AGGREGATORS.unregister("records-updates")
    rows = loop.state.arrivals
    assert seen == [(r["client_id"], r["num_samples"], r["staleness"], r["delta_scale"]) for r in rows]
    assert max(r["staleness"] for r in rows) > 0 and len({r["client_id"] for r in rows}) > 1


@pytest.mark.parametrize(
    "rule",
    [
        ["server.aggregator.name=ca2fl", "server.aggregator.server_lr=0.5"],
        [
            "server.aggregator.name=fadas",
            "server.aggregator.server_lr=0.003",
            "server.aggregator.buffer_size=1",
            "server.aggregator.delay_threshold=null",  # the fadas arm's τ_c = 1 off: the plain rule
        ],
        ["server.aggregator.name=dc"],
    ],
    ids=["ca2fl", "fadas", "dc"],
)
def test_each_staleness_compensation_learns_the_demo(rule: list[str], tmp_path) -> None:
    """200 updates of the demo (digits, 10 classes: chance is 0.1) at a constant client rate; the step sizes
    are ones that train here, not selected ones (the compensation sweep selects them on validation data)."""
    from afl.config import load_config
    from afl.experiments.run import run

    overrides = [
        "experiment=demo",
        "server.lr_schedule.name=constant",
        "client.lr=1e-2",
        "federation.max_updates=200",
        "federation.eval_every=200",
        "theory.enabled=false",
        "logging.wandb.mode=disabled",
        "logging.progress=false",
        *rule,
        f"output_dir={tmp_path / 'run'}",
    ]
    result = run(load_config(overrides))
    assert result.summary["final_test_accuracy"] > 0.3
    assert result.history[0]["test_accuracy"] < 0.15  # it started at chance
