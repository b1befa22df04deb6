"""Property-based tests (Hypothesis) of the loop's invariants over random small configurations.

Every example is a real run: the config is composed from the project's configs, the loop built by
``afl.experiments.build``'s ``build``/``make_loop`` and every client job trained by a Lightning Trainer,
on a data set small enough that a job costs about 15 ms. The rules checked are docs/design.md; the expected
versions, staleness, dispatch points and learning rates are recomputed here from the rows the loop recorded.

``HYPOTHESIS_PROFILE`` picks the example count (tests/conftest.py): ``default`` is small and derandomised
(the same examples every run), ``ci`` is larger and random.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from typing import Any

import pytest
import torch
from helpers.configs import afl_unless_named
from hypothesis import example, given
from hypothesis import strategies as st
from omegaconf import DictConfig

from afl.config import load_config
from afl.experiments.build import build, make_loop
from afl.messages import ClientJob, ClientUpdate
from afl.server.aggregators import AGGREGATORS
from afl.sim.executors import EXECUTORS
from afl.sim.loop import FederatedLoop

BASE = [
    "dataset.name=synthetic",
    "dataset.synthetic.train_size=96",
    "dataset.synthetic.test_size=40",
    "partition.min_samples=2",
    "model.name=cnn",
    "client.batch_size=64",
    "client.lr=0.003",
    "federation.executor=serial",
    "logging.wandb.mode=disabled",
    "logging.progress=false",
]


def simulate(overrides: list[str]) -> tuple[DictConfig, FederatedLoop, BaseException | None, float]:
    """Build and run the loop of ``BASE + overrides``; returns the config, the finished loop, the error
    the run ended with, if any (a run whose every update was rejected raises), and the seconds it took."""
    cfg = load_config(afl_unless_named([*BASE, *overrides]))
    setup = build(cfg)
    torch.set_num_threads(cfg.federation.torch_threads)  # as run() does; conftest restores it
    error: BaseException | None = None
    submitted: dict[int, tuple[int, int]] = {}  # per job: the previous staleness and round it was given

    class Recording(EXECUTORS.get(cfg.federation.executor)):  # type: ignore[misc]
        def submit(self, job: ClientJob) -> None:
            submitted[job.job_id] = (job.previous_staleness, job.round)
            super().submit(job)

    with Recording(setup.runtime, cfg.federation.workers) as executor:
        loop = make_loop(setup, executor)
        loop.submitted = submitted  # type: ignore[attr-defined]  # read by check_run
        start = time.perf_counter()
        try:
            loop.run()
        except RuntimeError as err:
            error = err
        elapsed = time.perf_counter() - start
    return cfg, loop, error, elapsed


# ----------------------------------------------------------------------------- random configurations
STALENESS = st.sampled_from(
    [
        [],
        ["server.aggregator.staleness.name=constant"],
        ["server.aggregator.staleness.name=inverse", "server.aggregator.staleness.a=0.5"],
        ["server.aggregator.staleness.name=polynomial", "server.aggregator.staleness.a=1.0"],
        ["server.aggregator.staleness.name=hinge", "server.aggregator.staleness.a=2.0"]
        + ["server.aggregator.staleness.b=1"],
    ]
)


@st.composite
def aggregators(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(["afl", "fedasync", "fedbuff", "ca2fl", "fadas", "dc"]))
    out = [f"server.aggregator.name={name}"]
    if name in ("ca2fl", "fadas", "dc"):  # the compensations take no staleness function
        buffer = [] if name == "dc" else draw(st.sampled_from([[], ["server.aggregator.buffer_size=2"]]))
        return out + buffer
    if name == "afl":
        out.append(f"server.aggregator.buffer_size={draw(st.integers(1, 3))}")
        out += draw(st.sampled_from([[], ["server.aggregator.server_lr=0.5"]]))
    elif name == "fedbuff":
        out.append(f"server.aggregator.buffer_size={draw(st.integers(1, 4))}")
    else:
        out.append(f"server.aggregator.alpha={draw(st.sampled_from([0.3, 1.0]))}")
    return out + draw(STALENESS)


LR_SCHEDULES = st.sampled_from(
    [
        ["server.lr_schedule.name=constant"],
        ["server.lr_schedule.name=paper", "server.lr_schedule.alpha=0.5"],
        ["server.lr_schedule.name=paper", "server.lr_schedule.alpha=0.5"]
        + ["server.lr_schedule.delay_at=dispatch"],
        ["server.lr_schedule.name=paper", "server.lr_schedule.decay=none"],
    ]
)
SPEEDS = st.sampled_from(
    [
        ["delay.speed.name=constant"],
        ["delay.speed.name=uniform", "delay.speed.low=0.2", "delay.speed.high=1.0"],
        ["delay.speed.name=lognormal", "delay.speed.sigma=1.0"],
    ]
)
COMMS = st.sampled_from(
    [
        ["delay.comm.name=constant", "delay.comm.value=0.0"],
        ["delay.comm.name=constant", "delay.comm.value=0.5"],
        ["delay.comm.name=uniform", "delay.comm.max=1.0"],
        ["delay.comm.name=exponential", "delay.comm.mean=1.0"],
    ]
)
# constant speed and comm with time_per_sample=0 (or iid shards of one size) make every job equally long:
# ties, broken by dispatch order
TIME_PER_SAMPLE = st.sampled_from(["0.0", "0.001", "0.01"])
STALENESS_BOUNDS = st.sampled_from(
    [[], ["delay.max_staleness=0", "delay.staleness_policy=drop"], ["delay.max_staleness=1"]]
    + [["delay.max_staleness=2", "delay.staleness_policy=drop"]]
)
SAMPLING = st.sampled_from(
    [
        [],
        ["federation.sampling.name=round_robin"],
        ["federation.sampling.name=adaptive", "federation.sampling.epsilon=0.3"],
    ]
)
FAULTS = st.sampled_from(
    [
        [],
        [],
        ["faults.rate=0.3", "faults.kinds=[raise,nonfinite]"],
        ["faults.rate=0.3", "faults.kinds=[slow]", "faults.slow_factor=10.0", "client.timeout_s=2.0"],
    ]
)


@st.composite
def configs(draw: st.DrawFn, mode: str | None = None, max_updates: int = 12) -> list[str]:
    """Overrides of a random small run: C clients, J in flight, a budget, an evaluation period, a mode,
    an aggregator (with its staleness function), an LR schedule, a delay model, a staleness bound and
    injected faults."""
    clients = draw(st.integers(2, 5))
    budget = draw(st.integers(1, max_updates))
    mode = mode or draw(st.sampled_from(["async", "async", "sync"]))
    out = [
        f"seed={draw(st.integers(0, 3))}",
        f"partition.num_clients={clients}",
        f"partition.scheme={draw(st.sampled_from(['dirichlet', 'iid']))}",
        f"client.local_epochs={draw(st.integers(1, 2))}",
        f"federation.mode={mode}",
        f"federation.concurrency={draw(st.integers(1, clients))}",
        f"federation.max_updates={budget}",
        f"federation.eval_every={draw(st.integers(1, budget + 1))}",
        f"delay.time_per_sample={draw(TIME_PER_SAMPLE)}",
    ]
    out += ["server.aggregator.name=fedavg"] if mode == "sync" else draw(aggregators())
    for part in (LR_SCHEDULES, SPEEDS, COMMS, STALENESS_BOUNDS, FAULTS, SAMPLING):
        out += draw(part)
    return out


# ----------------------------------------------------------------------------- the expected run
def versions_after_each_arrival(cfg: DictConfig, rows: list[dict[str, Any]]) -> tuple[list[int], int]:
    """``V[k]``, the global version after the first k arrivals (``V[0] = 0``), and the final version, from
    the rules of docs/design.md: fedasync moves the model on every applied update; afl and fedbuff once their
    buffer holds M (K) applied updates, and once more at the end for a partly filled buffer; sync FedAvg at
    each barrier whose round applied anything. Rejected and dropped updates are never applied."""
    agg, J = cfg.server.aggregator, cfg.federation.concurrency
    if agg.name in ("afl", "fedbuff", "ca2fl", "fadas"):  # M or K: as configured, else the rule's default
        buffer_size = agg.get("buffer_size", AGGREGATORS.options(agg.name)["buffer_size"].default) or J
    applied = [not r["rejected"] and not r["dropped"] for r in rows]
    V, version, buffered = [0], 0, 0
    for k, ok in enumerate(applied, start=1):
        if cfg.federation.mode == "sync":
            buffered += ok
            if k % J == 0 or k == len(rows):  # the barrier: the round's last arrival
                version += buffered > 0
                buffered = 0
        elif agg.name in ("fedasync", "dc"):
            version += ok
        else:
            buffered += ok
            if buffered == buffer_size:
                version, buffered = version + 1, 0
        V.append(version)
    return V, version + (buffered > 0)


def dispatch_point(cfg: DictConfig, job_id: int) -> int:
    """How many arrivals the server had applied when job ``job_id`` was dispatched: async refills a slot
    right after each arrival (the first J jobs go out at the start); sync dispatches J at each barrier."""
    J = cfg.federation.concurrency
    if cfg.federation.mode == "sync":
        return job_id // J * J
    return 0 if job_id < J else job_id - J + 1


def expected_lr(cfg: DictConfig, round_: int, previous_tau: int) -> float:
    """docs/design.md: ``γ0 / sqrt(r + 1)`` (``decay: none`` drops it), times ``1 / (1 + α τ_prev)`` with
    ``delay_at: dispatch``."""
    schedule, lr = cfg.server.lr_schedule, cfg.client.lr
    if schedule.name == "constant":
        return lr
    if schedule.get("decay", "sqrt") == "sqrt":
        lr /= math.sqrt(round_ + 1)
    if schedule.get("delay_at", "arrival") == "dispatch":
        lr /= 1 + schedule.get("alpha", 0.1) * previous_tau
    return lr


def expected_delta_scale(cfg: DictConfig, tau: int) -> float:
    schedule = cfg.server.lr_schedule
    if schedule.name == "paper" and schedule.get("delay_at", "arrival") == "arrival":
        return 1 / (1 + schedule.get("alpha", 0.1) * tau)
    return 1.0


def check_run(cfg: DictConfig, loop: FederatedLoop, error: BaseException | None, elapsed: float) -> None:
    """Every invariant of one finished run (docs/design.md), from its recorded rows."""
    s, fed = loop.state, cfg.federation
    rows, n, J = s.arrivals, fed.max_updates, fed.concurrency

    # the budget is exact and every dispatched job arrives exactly once, applied or counted
    assert s.client_updates == s.dispatched == len(rows) == n
    assert [r["client_updates"] for r in rows] == list(range(1, n + 1))
    assert sorted(r["job_id"] for r in rows) == list(range(n))
    rejected = Counter(r["rejected"] for r in rows if r["rejected"])
    assert {k: v for k, v in s.rejected.items() if v} == dict(rejected)
    assert s.dropped_updates == sum(r["dropped"] for r in rows)
    if error is not None:  # only a run whose every update was rejected may fail, and it says so
        assert sum(rejected.values()) == n
        assert f"every one of the {n} client updates was rejected" in str(error)
        return
    assert sum(rejected.values()) < n

    # arrivals are applied in non-decreasing simulated time, ties in dispatch order
    keys = [(r["arrival_time"], r["job_id"]) for r in rows]
    assert all(a < b for a, b in zip(keys, keys[1:])), keys
    assert s.clock == rows[-1]["arrival_time"]

    V, final_version = versions_after_each_arrival(cfg, rows)
    assert s.version == final_version
    position = {r["job_id"]: k for k, r in enumerate(rows, start=1)}  # arrival k applies job position[j]
    by_job = sorted(rows, key=lambda r: r["job_id"])
    bound, policy = cfg.delay.max_staleness, cfg.delay.staleness_policy
    for r in by_job:
        j, k, client = r["job_id"], position[r["job_id"]], r["client_id"]
        p = dispatch_point(cfg, j)
        # dispatched at the version of that moment, and at its time: a slot is refilled at once
        assert r["dispatched_version"] == V[p]
        assert r["dispatch_time"] == (0.0 if p == 0 else rows[p - 1]["arrival_time"])
        # τ ≥ 0 and is the number of versions applied between its dispatch and its arrival
        assert r["staleness"] == V[k - 1] - V[p] >= 0
        if r["staleness"] == 0:  # no version applied meanwhile: the server has not moved
            assert r["drift"] == 0.0
        # in flight at its dispatch: the jobs dispatched before it that had not arrived yet; never the
        # same client twice; J at once in async mode until the budget runs out
        flying = [q for q in by_job[:j] if position[q["job_id"]] > p]
        assert client not in {q["client_id"] for q in flying}
        if fed.mode == "async":
            assert len(flying) == min(j, J - 1)
        # the LR handed out with the job, and the factor on its delta at arrival
        seen = [q for q in rows[:p] if q["client_id"] == client and not q["rejected"]]
        previous_tau = seen[-1]["staleness"] if seen else 0
        round_ = j // J if fed.mode == "sync" else p // J
        assert r["lr"] == pytest.approx(expected_lr(cfg, round_, previous_tau), rel=1e-12)
        assert loop.submitted[j] == (previous_tau, round_)  # what client callbacks read (delay_aware_lr)
        assert r["fault"] in ({"", *cfg.faults.kinds} if cfg.faults.rate > 0 else {""})
        if r["rejected"]:  # nothing of a rejected job's training is reported
            assert r["steps"] == 0 and math.isnan(r["train_loss"]), r
        else:
            assert r["steps"] >= 1
        assert r["delta_scale"] == pytest.approx(expected_delta_scale(cfg, r["staleness"]), rel=1e-12)
        # a staleness bound with policy drop drops exactly the accepted updates staler than it
        too_stale = bound is not None and r["staleness"] > bound
        assert r["dropped"] == int(not r["rejected"] and too_stale and policy == "drop")
    last_tau = {r["client_id"]: r["staleness"] for r in rows if not r["rejected"]}  # arrival order: the last
    assert s.last_staleness == [last_tau.get(c, 0) for c in range(cfg.partition.num_clients)]
    assert s.stale_updates == sum(
        1 for r in rows if not r["rejected"] and bound is not None and r["staleness"] > bound
    )

    # job durations: samples · epochs · time_per_sample / speed + communication delay (docs/design.md), all
    # of it slow_factor times longer for an injected slow fault, cut at client.timeout_s (then rejected)
    speeds, comm, timeout = loop.delay.speeds, cfg.delay.comm, cfg.client.timeout_s
    for r in rows:
        duration = r["arrival_time"] - r["dispatch_time"]
        factor = cfg.faults.slow_factor if r["fault"] == "slow" else 1.0
        samples = r["num_samples"] * cfg.client.local_epochs
        compute = samples * cfg.delay.time_per_sample / speeds[r["client_id"]]
        if comm.name == "constant":  # the whole duration known: timed out exactly when it exceeds the limit
            full = (compute + comm.value) * factor
            timed_out = timeout is not None and full > timeout
            assert (r["rejected"] == "timeout") == timed_out
            assert duration == pytest.approx(timeout if timed_out else full, rel=1e-9, abs=1e-9)
        elif r["rejected"] == "timeout":
            assert duration == pytest.approx(timeout, rel=1e-9, abs=1e-9)
        else:
            upper = (compute + comm.max) * factor if comm.name == "uniform" else math.inf
            assert compute * factor - 1e-9 <= duration <= upper + 1e-9
        assert timeout is None or duration <= timeout * (1 + 1e-12)

    if fed.mode == "sync":  # rounds of J distinct clients, all at one version, separated by a barrier
        for start in range(0, n, J):
            members = rows[start : start + J]
            assert {m["job_id"] for m in members} == set(range(start, min(start + J, n)))
            assert len({m["client_id"] for m in members}) == len(members)
            assert {m["dispatched_version"] for m in members} == {V[start]}
            assert all(m["staleness"] == 0 for m in members)

    # evaluation of the initial model, every eval_every updates and at the end, each seeing the model of
    # that moment
    e = fed.eval_every
    history = loop.history
    assert [h["client_updates"] for h in history] == [0, *range(e, n, e), n]
    assert [h["version"] for h in history[:-1]] == [V[h["client_updates"]] for h in history[:-1]]
    assert history[-1]["version"] == final_version
    initial = history[0]  # no arrival in its window, nothing rejected yet, at time 0
    assert (initial["sim_time"], initial["round"], initial["staleness"], initial["rejected_updates"]) == (
        0,
        0,
        [],
        0,
    )
    assert all(math.isnan(initial[k]) for k in ("mean_staleness", "mean_drift", "train_loss"))
    # each row sums up the arrivals since the row before it (metrics.csv, docs/outputs.md)
    previous, wall = 0, 0.0
    for h in history[1:]:
        m = h["client_updates"]
        window = rows[previous:m]
        taus = [r["staleness"] for r in window]
        assert h["mean_staleness"] == pytest.approx(sum(taus) / len(taus), rel=1e-12)
        assert h["max_staleness"] == max(taus)
        assert h["staleness"] == taus  # every value of the window (W&B's histogram)
        drifts = [r["drift"] for r in window]  # how far the server moved while each job was out
        assert h["mean_drift"] == pytest.approx(sum(drifts) / len(drifts), rel=1e-12)
        assert h["max_drift"] == max(drifts)
        for key in ("train_loss", "train_accuracy"):  # NaN when the window holds a rejected update
            mean = sum(r[key] for r in window) / len(window)
            assert (math.isnan(mean) and math.isnan(h[key])) or h[key] == pytest.approx(mean, rel=1e-12)
        assert h["sim_time"] == rows[m - 1]["arrival_time"]
        if fed.mode == "sync":  # barriers passed: every J-th arrival and the last one
            assert h["round"] == sum(1 for k in range(1, m + 1) if k % J == 0 or k == n)
        else:
            assert h["round"] == m // J
        assert h["dropped_updates"] == sum(r["dropped"] for r in rows[:m])
        assert h["rejected_updates"] == sum(1 for r in rows[:m] if r["rejected"])
        for reason in s.rejected:
            assert h[f"rejected_{reason}"] == sum(1 for r in rows[:m] if r["rejected"] == reason)
        assert wall < h["wall_time"] <= elapsed  # every window trained at least one job
        previous, wall = m, h["wall_time"]


# Cases every profile runs, besides the random ones: equal job durations (ties everywhere), faults and
# drops together, and a partly filled buffer at the end.
TIES = [
    "partition.num_clients=4",
    "federation.concurrency=3",
    "federation.max_updates=10",
    "federation.eval_every=3",
    "delay.speed.name=constant",
    "delay.time_per_sample=0.0",
    "delay.comm.name=constant",
    "delay.comm.value=0.5",
]
FAULTY_STALE = [
    "partition.num_clients=5",
    "federation.concurrency=4",
    "federation.max_updates=12",
    "faults.rate=0.3",
    "faults.kinds=[raise,nonfinite]",
    "delay.max_staleness=1",
    "delay.staleness_policy=drop",
    "server.lr_schedule.name=paper",
    "server.lr_schedule.delay_at=dispatch",
]
SLOW_FAULTS = [  # a slow job takes 10 × 0.1 s: within client.timeout_s = 2, so it is applied, not rejected
    "partition.num_clients=4",
    "federation.concurrency=2",
    "federation.max_updates=8",
    "faults.rate=0.5",
    "faults.kinds=[slow]",
    "faults.slow_factor=10.0",
    "client.timeout_s=2.0",
    "delay.time_per_sample=0.0",
    "delay.comm.name=constant",
    "delay.comm.value=0.1",
]
PARTIAL_BUFFER = [
    "partition.num_clients=4",
    "federation.concurrency=2",
    "federation.max_updates=7",
    "server.aggregator.name=fedbuff",
    "server.aggregator.buffer_size=3",
]


@given(overrides=configs())
@example(overrides=TIES)
@example(overrides=FAULTY_STALE)
@example(overrides=PARTIAL_BUFFER)
@example(overrides=SLOW_FAULTS)
def test_loop_invariants_hold_for_random_configurations(overrides: list[str]) -> None:
    check_run(*simulate(overrides))


@given(overrides=configs(mode="sync"))
def test_sync_rounds_are_j_distinct_clients_at_one_version(overrides: list[str]) -> None:
    check_run(*simulate(overrides))


# ----------------------------------------------------------------------------- same run, other settings
def _same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
    """Rows equal field by field (NaN equal to NaN: a rejected update has no training loss)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x.keys() - set(skip):
            both_nan = isinstance(x[key], float) and math.isnan(x[key]) and math.isnan(y[key])
            assert both_nan or x[key] == y[key], (key, x, y)


def _same_model(a: FederatedLoop, b: FederatedLoop) -> None:
    assert a.state.global_state.keys() == b.state.global_state.keys()
    for k, v in a.state.global_state.items():
        assert torch.equal(v, b.state.global_state[k]), k


@given(overrides=configs(), periods=st.tuples(st.integers(1, 13), st.integers(1, 13)))
@example(overrides=FAULTY_STALE, periods=(1, 5))
def test_eval_every_changes_nothing_but_the_evaluation_rows(
    overrides: list[str], periods: tuple[int, int]
) -> None:
    (cfg, a, err_a, _), (_, b, err_b, _) = (
        simulate([*overrides, f"federation.eval_every={e}"]) for e in periods
    )
    assert (err_a is None) == (err_b is None)
    _same_rows(a.state.arrivals, b.state.arrivals)
    _same_model(a, b)
    assert a.state.version == b.state.version and a.state.clock == b.state.clock
    if err_a is not None:
        return
    n = cfg.federation.max_updates
    for loop, e in ((a, periods[0]), (b, periods[1])):
        assert [h["client_updates"] for h in loop.history] == [0, *range(e, n, e), n]
    # the final evaluation, and any taken at the same update in both runs, saw the same model
    rows_b = {h["client_updates"]: h for h in b.history}
    common = [h for h in a.history if h["client_updates"] in rows_b]
    assert common and common[-1]["client_updates"] == n
    for h in common:
        other = rows_b[h["client_updates"]]
        assert (h["version"], h["test_loss"], h["test_accuracy"], h["sim_time"]) == (
            other["version"],
            other["test_loss"],
            other["test_accuracy"],
            other["sim_time"],
        )


@given(overrides=configs(max_updates=8))
@example(overrides=TIES)
def test_serial_and_thread_executors_give_the_same_run(overrides: list[str]) -> None:
    cfg, serial, err_s, _ = simulate(overrides)
    _, threads, err_t, elapsed = simulate([*overrides, "federation.executor=thread", "federation.workers=2"])
    assert str(err_s) == str(err_t)
    _same_rows(serial.state.arrivals, threads.state.arrivals)
    _same_model(serial, threads)
    _same_rows(serial.history, threads.history, skip=("wall_time",))
    check_run(cfg, threads, err_t, elapsed)


@given(
    overrides=configs(max_updates=8),
    means=st.tuples(st.sampled_from([0.2, 1.0, 5.0]), st.sampled_from([0.2, 1.0])),
)
def test_with_clients_coming_and_going_the_run_is_the_same_on_any_executor_and_its_budget_exact(
    overrides: list[str], means: tuple[float, float]
) -> None:
    """Availability on (exponential on/off times): the same dispatches, lost jobs and arrivals on one
    thread and on two, no offline client dispatched, every lost job counted, the budget of updates exact."""
    on = [
        *overrides,
        "availability.name=exponential",
        f"availability.mean_on={means[0]}",
        f"availability.mean_off={means[1]}",
    ]
    cfg, serial, err_s, _ = simulate(on)
    _, threads, err_t, _ = simulate([*on, "federation.executor=thread", "federation.workers=2"])
    assert str(err_s) == str(err_t)
    _same_rows(serial.state.arrivals, threads.state.arrivals)
    assert serial.state.lost == threads.state.lost
    s, model = threads.state, threads.availability
    if err_t is None:
        assert s.client_updates == cfg.federation.max_updates
    assert s.dispatched == s.client_updates + s.lost_updates and s.lost_updates == len(s.lost)
    for row in [*s.arrivals, *s.lost]:
        assert model.online(row["client_id"], row["dispatch_time"])


# ----------------------------------------------------------------------------- aggregator state round trip
def _tensor_state(draw: st.DrawFn, counter: int) -> dict[str, torch.Tensor]:
    floats = st.floats(-4.0, 4.0, allow_nan=False, width=32)
    variances = st.floats(0.125, 8.0, width=32)
    return {
        "w": torch.tensor(draw(st.lists(floats, min_size=3, max_size=3))),
        "bn.running_mean": torch.tensor(draw(st.lists(floats, min_size=2, max_size=2))),
        "bn.running_var": torch.tensor(draw(st.lists(variances, min_size=2, max_size=2))),
        "bn.num_batches_tracked": torch.tensor(counter),
    }


@st.composite
def updates(draw: st.DrawFn) -> list[ClientUpdate]:
    out = []
    for i in range(draw(st.integers(1, 9))):
        out.append(
            ClientUpdate(
                client_id=draw(st.integers(0, 4)),
                num_samples=draw(st.integers(1, 50)),
                staleness=draw(st.integers(0, 6)),
                state=_tensor_state(draw, counter=draw(st.integers(0, 20))),
                dispatched=_tensor_state(draw, counter=i),
                delta_scale=draw(st.sampled_from([1.0, 0.5, 1 / 1.3])),
            )
        )
    return out


AGGREGATOR_NODES = st.one_of(
    st.builds(
        lambda m, lr: {"name": "afl", "buffer_size": m, **lr},
        st.integers(1, 4),
        st.sampled_from([{}, {"server_lr": 0.7}]),
    ),
    st.builds(lambda k: {"name": "fedbuff", "buffer_size": k, "server_lr": 1.5}, st.integers(1, 4)),
    st.builds(lambda a: {"name": "fedasync", "alpha": a}, st.sampled_from([0.2, 0.9])),
    st.just({"name": "fedavg"}),
    st.builds(lambda m: {"name": "ca2fl", "buffer_size": m, "server_lr": 0.5}, st.integers(1, 4)),
    st.builds(
        lambda m, tc: {"name": "fadas", "buffer_size": m, "delay_threshold": tc},
        st.integers(1, 3),
        st.sampled_from([None, 0, 2]),
    ),
    st.builds(lambda a: {"name": "dc", "lam": 0.5, "adaptive": a, "server_lr": 0.5}, st.booleans()),
)


def _copy(update: ClientUpdate) -> ClientUpdate:
    """The same update with tensors of its own (nothing computed by one aggregator reaches another)."""
    return ClientUpdate(
        client_id=update.client_id,
        num_samples=update.num_samples,
        staleness=update.staleness,
        state={k: v.clone() for k, v in update.state.items()},
        dispatched={k: v.clone() for k, v in update.dispatched.items()},
        delta_scale=update.delta_scale,
    )


def _identical(a: Any, b: Any) -> bool:
    """Nested dicts of tensors and numbers, equal bit for bit (dtypes included)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return type(a) is type(b) and a == b


def _restored(sd: dict[str, Any]) -> dict[str, Any]:
    """The state dict through torch.save / torch.load(weights_only=True): plain, serialisable values."""
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@given(node=AGGREGATOR_NODES, stream=updates(), data=st.data())
def test_every_aggregator_continues_identically_after_a_state_dict_round_trip(
    node: dict[str, Any], stream: list[ClientUpdate], data: st.DataObject
) -> None:
    """A, fed the whole stream, and B, a fresh aggregator loaded from A's state dict taken after the first
    ``cut`` updates (and saved and loaded through torch), agree on every return value and end bit for bit
    on the same global model and state. A goes on after the snapshot, so a state dict sharing A's live
    buffers would show."""
    J = data.draw(st.integers(1, 4), label="J")
    cut = data.draw(st.integers(0, len(stream)), label="cut")

    start = _tensor_state(data.draw, counter=0)

    def make() -> Any:
        agg = AGGREGATORS.build(node, "server.aggregator")
        agg.setup(concurrency=J)
        agg.prepare(num_clients=5, global_state=start)
        return agg

    def feed(agg: Any, state: dict[str, torch.Tensor], part: list[ClientUpdate], offset: int) -> list[bool]:
        moved = []
        for i, update in enumerate(part, start=offset + 1):
            moved.append(agg.on_arrival(update, state))
            if node["name"] == "fedavg" and i % J == 0:  # the sync barrier
                moved.append(agg.flush(state))
        return moved

    a, g_a = make(), {k: v.clone() for k, v in start.items()}
    moved_a = feed(a, g_a, [_copy(u) for u in stream[:cut]], 0)
    snapshot, g_snapshot = a.state_dict(), {k: v.clone() for k, v in g_a.items()}
    moved_a += feed(a, g_a, [_copy(u) for u in stream[cut:]], cut) + [a.flush(g_a)]

    b = make()
    b.load_state_dict(_restored(snapshot))
    moved_b = feed(b, g_snapshot, [_copy(u) for u in stream[cut:]], cut) + [b.flush(g_snapshot)]
    assert moved_a[len(moved_a) - len(moved_b) :] == moved_b
    for k, v in g_a.items():
        assert torch.equal(v, g_snapshot[k]), k
    assert _identical(a.state_dict(), b.state_dict())
