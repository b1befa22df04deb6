"""Staleness functions, LR schedules and aggregators against hand-computed values (docs/design.md)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from afl.errors import ConfigError
from afl.messages import ClientUpdate, is_parameter
from afl.server.aggregators import (
    AFL,
    AGGREGATORS,
    FedAsync,
    FedAvg,
    FedBuff,
    add_scaled,
    max_int_entries,
    mix,
)
from afl.server.lr_schedules import LR_SCHEDULES, ConstantLR, PaperLR
from afl.server.staleness import STALENESS, Constant, Hinge, Inverse, Polynomial


# ----------------------------------------------------------------------------- staleness functions
@pytest.mark.parametrize(
    ("fn", "tau", "expected"),
    [
        (Constant(), 0, 1.0),
        (Constant(), 9, 1.0),
        (Inverse(a=0.5), 0, 1.0),
        (Inverse(a=0.5), 4, 1 / 3),
        (Inverse(a=2.0), 3, 1 / 7),
        (Polynomial(a=0.5), 0, 1.0),
        (Polynomial(a=0.5), 3, 0.5),  # 1/sqrt(4): FedBuff's rule
        (Polynomial(a=1.0), 4, 0.2),
        (Hinge(a=10.0, b=4), 4, 1.0),  # flat up to b
        (Hinge(a=10.0, b=4), 5, 1 / 11),
        (Hinge(a=2.0, b=1), 3, 0.2),  # 1 / (2*2 + 1)
    ],
)
def test_staleness_functions(fn, tau: int, expected: float) -> None:
    assert fn(tau) == pytest.approx(expected, rel=1e-12)


def test_staleness_functions_do_not_increase_with_staleness() -> None:
    for name in STALENESS.names():
        fn = STALENESS.build({"name": name}, "s")
        values = [fn(t) for t in range(30)]
        assert values[0] == 1.0
        assert all(a >= b for a, b in zip(values, values[1:])), name


# ----------------------------------------------------------------------------- LR schedules
@pytest.mark.parametrize("aggregator", ["afl", "fedasync", "fedbuff"])
def test_each_staleness_function_has_one_default_whoever_uses_it(aggregator: str) -> None:
    """An aggregator without a ``staleness`` node uses its function's own default, so naming the function
    without options (``staleness.name=inverse``) changes nothing; and the defaults are documented ones."""
    default = AGGREGATORS.build({"name": aggregator}, "server.aggregator").staleness
    named = AGGREGATORS.build(
        {"name": aggregator, "staleness": {"name": type(default).__name__.lower()}}, "server.aggregator"
    ).staleness
    assert named == default
    assert [default(tau) for tau in range(6)] == [named(tau) for tau in range(6)]
    assert (Inverse().a, Polynomial().a) == (0.2, 0.5)  # 1/(1+0.2τ) for afl; 1/sqrt(1+τ) for the others
    assert default == (Inverse() if aggregator == "afl" else Polynomial())


def test_paper_lr_at_arrival_decays_with_rounds_at_dispatch_and_scales_the_delta_by_its_own_tau() -> None:
    lr = PaperLR(alpha=0.5)  # delay_at=arrival, decay=sqrt: the defaults
    assert lr.at_dispatch(1e-3, round=0, previous_staleness=0) == pytest.approx(1e-3)
    # at dispatch only γ0 / sqrt(r+1): the previous τ plays no part
    assert lr.at_dispatch(1e-3, round=3, previous_staleness=2) == pytest.approx(1e-3 / 2.0)
    assert lr.at_dispatch(2e-3, round=8, previous_staleness=7) == pytest.approx(2e-3 / 3.0)
    # at arrival the update's own τ: 1 / (1 + 0.5 τ)
    assert [lr.at_arrival(t) for t in (0, 1, 2, 6)] == pytest.approx([1.0, 1 / 1.5, 0.5, 0.25])


def test_paper_lr_at_dispatch_uses_the_previous_tau_and_leaves_the_delta_alone() -> None:
    lr = PaperLR(alpha=0.5, delay_at="dispatch")
    assert lr.at_dispatch(1e-3, round=3, previous_staleness=2) == pytest.approx(1e-3 / (2.0 * 2.0))
    assert lr.at_dispatch(2e-3, round=8, previous_staleness=1) == pytest.approx(2e-3 / (3.0 * 1.5))
    assert lr.at_arrival(9) == 1.0


def test_paper_lr_without_decay_keeps_gamma0_across_rounds() -> None:
    assert PaperLR(decay="none").at_dispatch(1e-3, round=99, previous_staleness=4) == 1e-3
    assert PaperLR(decay="none", delay_at="dispatch", alpha=0.25).at_dispatch(1e-3, 99, 4) == pytest.approx(
        5e-4
    )
    assert PaperLR(decay="none").at_arrival(10) == pytest.approx(1 / 2.0)  # α = 0.1 by default


def test_paper_lr_falls_as_staleness_grows() -> None:
    lr = PaperLR(alpha=0.1)
    rates = [lr.at_arrival(t) for t in range(10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[0] / rates[9] == pytest.approx(1.9)
    by_dispatch = [PaperLR(alpha=0.1, delay_at="dispatch").at_dispatch(1e-3, 5, t) for t in range(10)]
    assert all(a > b for a, b in zip(by_dispatch, by_dispatch[1:]))


def test_paper_lr_falls_with_rounds_and_constant_does_not() -> None:
    assert PaperLR().at_dispatch(1e-3, round=99, previous_staleness=0) == pytest.approx(1e-4)
    assert ConstantLR().at_dispatch(1e-3, round=99, previous_staleness=7) == 1e-3
    assert ConstantLR().at_arrival(7) == 1.0
    assert LR_SCHEDULES.names() == ["constant", "paper"]


@pytest.mark.parametrize(
    ("options", "key"),
    [({"delay_at": "both"}, "delay_at"), ({"decay": "cosine"}, "decay"), ({"alpha": -0.1}, "alpha")],
)
def test_paper_lr_options_are_checked(options: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"server.lr_schedule.{key}: "):
        LR_SCHEDULES.build({"name": "paper", **options}, "server.lr_schedule")


# ----------------------------------------------------------------------------- aggregators
def _update(client: int, n: int, tau: int, state: dict, dispatched: dict, scale: float = 1.0) -> ClientUpdate:
    return ClientUpdate(
        client_id=client, num_samples=n, staleness=tau, state=state, dispatched=dispatched, delta_scale=scale
    )


def test_update_delta_is_parameters_only_and_carries_the_arrival_scale() -> None:
    u = _update(0, 1, 0, _g([3.0, 1.0], counter=4), _g([1.0, 1.5], counter=2))
    assert list(u.delta) == ["w"]
    assert torch.equal(u.delta["w"], torch.tensor([2.0, -0.5], dtype=torch.float64))
    bn = {**_g([3.0, 1.0]), "bn.running_var": torch.tensor([2.0], dtype=torch.float64)}
    base = {**_g([1.0, 1.5]), "bn.running_var": torch.tensor([1.0], dtype=torch.float64)}
    scaled = _update(0, 1, 0, bn, base, scale=0.5)
    assert list(scaled.delta) == ["w"]  # running statistics are never deltas
    assert torch.equal(scaled.delta["w"], torch.tensor([1.0, -0.25], dtype=torch.float64))
    assert torch.equal(scaled.parameters["w"], torch.tensor([2.0, 1.25], dtype=torch.float64))
    assert list(scaled.stats) == ["bn.running_var"]


def _g(w: list[float], counter: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(w, dtype=torch.float64), "bn.num_batches_tracked": torch.tensor(counter)}


def test_fedavg_is_the_sample_weighted_average_of_the_round_applied_at_the_barrier() -> None:
    agg = FedAvg()
    agg.setup(concurrency=2)
    g = _g([0.0, 0.0], counter=5)
    start = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(0, 30, 0, _g([1.0, 2.0], 7), start), g)
    assert not agg.on_arrival(_update(1, 10, 0, _g([5.0, -2.0], 9), start), g)
    assert torch.equal(g["w"], start["w"])  # nothing moves before the barrier
    assert agg.flush(g)
    assert torch.allclose(
        g["w"], torch.tensor([(30 * 1 + 10 * 5) / 40, (30 * 2 - 10 * 2) / 40], dtype=torch.float64)
    )
    assert int(g["bn.num_batches_tracked"]) == 9  # integer buffers: the counter, not a float average
    assert g["bn.num_batches_tracked"].dtype == torch.int64
    assert not agg.flush(g)


def test_afl_one_arrival_moves_by_server_lr_times_staleness_discount() -> None:
    """M = 1: θ ← θ + η_g s(τ) Δ; the discount is absolute, not normalised away."""
    agg = AFL()  # η_g = M/J, s(τ) = 1/(1 + 0.2 τ)
    agg.setup(concurrency=4)
    assert agg.server_lr == 0.25
    g = _g([1.0, 2.0])
    dispatched = _g([0.5, 0.5])  # an older version than the current global
    assert agg.on_arrival(_update(0, 7, 5, _g([1.5, -0.5]), dispatched), g)  # Δ = (1, -1), s(5) = 1/2
    assert torch.allclose(g["w"], torch.tensor([1.0 + 0.125, 2.0 - 0.125], dtype=torch.float64))
    fresh = _g([0.0, 0.0])
    assert agg.on_arrival(_update(1, 3, 0, _g([4.0, 0.0]), fresh), fresh)  # τ = 0: η_g Δ
    assert torch.allclose(fresh["w"], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_afl_buffer_of_three_weighs_by_samples_over_the_buffer_times_absolute_discount() -> None:
    agg = AFL(server_lr=0.6, buffer_size=3, staleness=Inverse(a=1.0))
    agg.setup(concurrency=5)
    assert agg.server_lr == 0.6  # an explicit η_g is kept
    g = _g([1.0, 1.0])
    d0 = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(0, 20, 0, _g([3.0, 1.0]), d0), g)  # Δ = (2, 0), s = 1
    assert not agg.on_arrival(_update(1, 40, 3, _g([1.0, 5.0]), d0), g)  # Δ = (0, 4), s = 1/4
    assert torch.equal(g["w"], d0["w"])
    assert agg.on_arrival(_update(2, 40, 1, _g([-1.0, 1.0]), d0), g)  # Δ = (-2, 0), s = 1/2
    n = 100
    expected = [1 + 0.6 * (20 / n * 1 * 2 + 40 / n * 0.5 * -2), 1 + 0.6 * (40 / n * 0.25 * 4)]
    assert torch.allclose(g["w"], torch.tensor(expected, dtype=torch.float64))  # (1.0, 1.24)


def test_afl_flushes_a_partial_buffer_with_the_samples_it_holds() -> None:
    agg = AFL(server_lr=1.0, buffer_size=3, staleness=Inverse(a=1.0))
    agg.setup(concurrency=3)
    g = _g([0.0])
    assert not agg.on_arrival(_update(0, 10, 1, _g([4.0]), _g([0.0])), g)
    assert agg.flush(g)
    assert float(g["w"]) == pytest.approx(1.0 * (10 / 10) * 0.5 * 4.0)


def test_afl_applies_the_arrival_delta_scale() -> None:
    agg = AFL(server_lr=1.0, staleness=Constant())
    agg.setup(concurrency=1)
    g = _g([0.0])
    agg.on_arrival(_update(0, 5, 3, _g([2.0]), _g([0.0]), scale=1 / 1.3), g)
    assert float(g["w"]) == pytest.approx(2.0 / 1.3)


def test_fedasync_mixes_with_alpha_times_staleness_each_time() -> None:
    agg = FedAsync(alpha=0.5, staleness=Polynomial(a=1.0))
    g = _g([0.0, 4.0])
    assert agg.on_arrival(_update(0, 1, 1, _g([2.0, 0.0]), g), g)  # α_t = 0.5 * 1/2 = 0.25
    assert torch.allclose(g["w"], torch.tensor([0.5, 3.0], dtype=torch.float64))
    assert agg.on_arrival(_update(1, 1, 0, _g([2.5, 1.0]), g), g)  # α_t = 0.5, not 0.25 * 0.5
    assert torch.allclose(g["w"], torch.tensor([1.5, 2.0], dtype=torch.float64))


def test_fedbuff_averages_scaled_deltas_over_k_and_flushes_a_partial_buffer() -> None:
    agg = FedBuff(buffer_size=2, server_lr=2.0)
    g = _g([0.0])
    start = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(0, 1, 0, _g([1.0]), start), g)
    assert agg.on_arrival(_update(1, 1, 3, _g([4.0]), start), g)  # s(3) = 1/2
    assert float(g["w"]) == pytest.approx(2.0 * (1.0 + 0.5 * 4.0) / 2)  # 3.0
    start = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(2, 1, 0, _g([4.0]), start), g)
    assert agg.flush(g)  # the leftover arrival counts with its real buffer size 1
    assert float(g["w"]) == pytest.approx(3.0 + 2.0 * 1.0)
    assert not agg.flush(g)


def _bn(w: float, mean: float, var: float, counter: int) -> dict[str, torch.Tensor]:
    return {
        "w": torch.tensor([w], dtype=torch.float64),
        "bn.running_mean": torch.tensor([mean], dtype=torch.float64),
        "bn.running_var": torch.tensor([var], dtype=torch.float64),
        "bn.num_batches_tracked": torch.tensor(counter),
    }


@pytest.mark.parametrize(
    ("make", "weight"),
    [
        # effective weight of one update: afl η_g s(τ) = 0.5 · 1/(1+0.2·5) = 0.25; fedbuff η_g s(τ)/K with
        # K = 1: 0.5 · 1/sqrt(1+3) = 0.25; fedasync α s(τ) = 0.5 · (1+3)^-0.5 = 0.25
        (lambda: AFL(server_lr=0.5), 0.25),
        (lambda: FedBuff(buffer_size=1, server_lr=0.5), 0.25),
        (lambda: FedAsync(alpha=0.5), 0.25),
    ],
)
def test_running_statistics_are_mixed_toward_the_client_never_delta_added(make, weight: float) -> None:
    """A stale base with a large variance, a client whose variance fell: Δ-adding running_var from the
    stale base would give 0.2 + (0.1 - 9.0) < 0; the rule mixes toward the client's value instead."""
    agg = make()
    agg.setup(concurrency=2)
    tau = 5 if isinstance(agg, AFL) else 3
    g = _bn(w=1.0, mean=0.0, var=0.2, counter=3)
    dispatched = _bn(w=0.0, mean=4.0, var=9.0, counter=1)
    client = _bn(w=2.0, mean=1.0, var=0.1, counter=6)
    assert agg.on_arrival(_update(0, 10, tau, client, dispatched), g)
    assert float(g["bn.running_var"]) == pytest.approx((1 - weight) * 0.2 + weight * 0.1)
    assert float(g["bn.running_mean"]) == pytest.approx((1 - weight) * 0.0 + weight * 1.0)
    assert int(g["bn.num_batches_tracked"]) == 6
    if isinstance(agg, FedAsync):
        assert float(g["w"]) == pytest.approx(0.75 * 1.0 + 0.25 * 2.0)
    else:
        assert float(g["w"]) == pytest.approx(1.0 + weight * 2.0)  # parameters: the Δ rule


def test_running_statistics_mix_weight_is_clipped_to_one() -> None:
    agg = AFL(server_lr=3.0, staleness=Constant())  # effective weight 3 → 1: replaced, not extrapolated
    agg.setup(concurrency=1)
    g = _bn(w=0.0, mean=0.0, var=5.0, counter=0)
    agg.on_arrival(_update(0, 1, 0, _bn(1.0, 2.0, 0.5, 1), _bn(0.0, 0.0, 5.0, 0)), g)
    assert float(g["bn.running_var"]) == 0.5 and float(g["bn.running_mean"]) == 2.0
    assert float(g["w"]) == 3.0


def test_fedavg_averages_running_statistics_like_parameters() -> None:
    agg = FedAvg()
    g = _bn(w=0.0, mean=0.0, var=1.0, counter=0)
    agg.on_arrival(_update(0, 30, 0, _bn(1.0, 2.0, 4.0, 5), g), g)
    agg.on_arrival(_update(1, 10, 0, _bn(5.0, 6.0, 8.0, 2), g), g)
    agg.flush(g)
    assert [float(g[k]) for k in ("w", "bn.running_mean", "bn.running_var")] == pytest.approx([2.0, 3.0, 5.0])


@pytest.mark.parametrize("name", ["afl", "fedbuff", "fedavg"])
def test_aggregator_state_dict_round_trip_mid_buffer(name: str) -> None:
    def make():
        node = {"name": name} if name == "fedavg" else {"name": name, "buffer_size": 3}
        agg = AGGREGATORS.build(node, "server.aggregator")
        agg.setup(concurrency=3)
        return agg

    a, b = make(), make()
    g_a, g_b = _g([1.0, 1.0]), _g([1.0, 1.0])
    start = {k: v.clone() for k, v in g_a.items()}
    a.on_arrival(_update(0, 5, 1, _g([2.0, 0.0]), start), g_a)
    b.load_state_dict(a.state_dict())
    g_b = {k: v.clone() for k, v in g_a.items()}
    for agg, g in ((a, g_a), (b, g_b)):
        assert not agg.on_arrival(_update(1, 3, 0, _g([0.0, 3.0]), start), g)  # 2 of 3 buffered
        applied = agg.on_arrival(_update(2, 2, 2, _g([4.0, 4.0]), start), g)
        if name == "fedavg":  # the barrier applies the round
            assert not applied and agg.flush(g)
        else:  # the third arrival filled the buffer: applied then, nothing left to flush
            assert applied and not agg.flush(g)
    assert torch.equal(g_a["w"], g_b["w"])
    assert not torch.equal(g_a["w"], start["w"])


@pytest.mark.parametrize("name", ["afl", "fedbuff"])
def test_a_restored_aggregator_keeps_its_round_step_and_buffer_whatever_it_was_set_up_with(name: str) -> None:
    """A checkpoint after one applied buffer and one arrival of round 1 buffered, loaded into an aggregator
    set up for another J (so another default step, η_g = M / J for afl): the next arrival fills the
    buffer and the restored one steps exactly as the original, by η_g / sqrt(1 + 1), not by its own
    default step. A checkpoint from before the buffer held its round flushes as round 0."""

    def make(concurrency: int):
        node = {"name": name, "buffer_size": 2, "server_lr_decay": "sqrt"}
        agg = AGGREGATORS.build(node, "server.aggregator")
        agg.setup(concurrency=concurrency)
        return agg

    def arrival(client: int, n: int, w: list[float], round: int) -> ClientUpdate:
        return dataclasses.replace(_update(client, n, 0, _g(w), start), round=round)

    a, g = make(2), _g([1.0, 1.0])
    start = {k: v.clone() for k, v in g.items()}
    assert not a.on_arrival(arrival(0, 5, [2.0, 0.0], 0), g)
    assert a.on_arrival(arrival(1, 3, [0.0, 3.0], 0), g)  # round 0's buffer applied
    assert not a.on_arrival(arrival(2, 4, [3.0, 2.0], 1), g)  # one arrival of round 1 buffered
    saved, before = a.state_dict(), {k: v.clone() for k, v in g.items()}

    def restored(state: dict, then) -> torch.Tensor:
        agg, w = make(8), {k: v.clone() for k, v in before.items()}  # another J: another default step
        agg.load_state_dict(copy.deepcopy(state))
        assert then(agg, w)
        return w["w"]

    last = arrival(3, 2, [4.0, -1.0], 1)
    assert a.on_arrival(last, g)  # the buffer of round 1 filled: applied
    assert torch.equal(restored(saved, lambda agg, w: agg.on_arrival(last, w)), g["w"])
    # a checkpoint from before the step was stored keeps the step the aggregator was set up with
    oldest = {k: v for k, v in copy.deepcopy(saved).items() if k != "server_lr"}
    same_j = make(2)
    same_j.load_state_dict(oldest)
    w = {k: v.clone() for k, v in before.items()}
    assert same_j.on_arrival(last, w) and torch.equal(w["w"], g["w"])
    # flushed at once (as a run's end flushes a partial buffer): the step of the stored round 1, and of
    # round 0 for a checkpoint from before the buffer stored its round
    old = copy.deepcopy(saved)
    del old["buffer"]["round"]
    as_round_0 = {**saved, "buffer": {**saved["buffer"], "round": 0}}

    def flush(agg, w) -> bool:
        return agg.flush(w)

    assert torch.equal(restored(old, flush), restored(as_round_0, flush))
    assert not torch.equal(restored(old, flush), restored(saved, flush))


def test_unknown_aggregator_and_options_are_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"server.aggregator.name: unknown aggregator 'fedprox'.*afl"):
        AGGREGATORS.build({"name": "fedprox"}, "server.aggregator")
    with pytest.raises(ConfigError, match=r"server.aggregator.alpha: not an option of aggregator 'fedbuff'"):
        AGGREGATORS.build({"name": "fedbuff", "alpha": 0.5}, "server.aggregator")
    with pytest.raises(ConfigError, match=r"server.aggregator.alpha: must be in \(0, 1\]"):
        AGGREGATORS.build({"name": "fedasync", "alpha": 1.5}, "server.aggregator")
    with pytest.raises(ConfigError, match=r"server.aggregator.staleness.b: expected int"):
        AGGREGATORS.build({"name": "fedasync", "staleness": {"name": "hinge", "b": 0.5}}, "server.aggregator")


def test_nested_staleness_is_built_from_its_registry() -> None:
    agg = AGGREGATORS.build(
        {"name": "fedasync", "alpha": 0.9, "staleness": {"name": "hinge", "a": 3.0, "b": 1}},
        "server.aggregator",
    )
    assert isinstance(agg, FedAsync)
    assert agg.staleness == Hinge(a=3.0, b=1)
    assert math.isclose(agg.staleness(2), 0.25)


# ----------------------------------------------------------------------------- aggregation arithmetic
def test_add_scaled_mix_and_integer_max_by_hand() -> None:
    target = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    add_scaled(target, {"a": torch.tensor([2.0, -4.0])}, 0.25)
    assert target["a"].tolist() == [1.5, 1.0] and target["b"].tolist() == [0.0]  # only given entries
    mix(target, {"a": torch.tensor([3.5, 5.0]), "b": torch.tensor([8.0])}, 0.5)
    assert target["a"].tolist() == [2.5, 3.0] and target["b"].tolist() == [4.0]
    mix(target, {"b": torch.tensor([0.0])}, 7.0)  # clipped to 1: replaced, never extrapolated
    mix(target, {"a": torch.tensor([0.0, 0.0])}, -1.0)  # clipped to 0: unchanged
    assert target["b"].tolist() == [0.0] and target["a"].tolist() == [2.5, 3.0]
    counters = {"n": torch.tensor(5), "w": torch.tensor([1.0])}
    max_int_entries(counters, {"n": torch.tensor(3), "w": torch.tensor([9.0])})
    assert int(counters["n"]) == 5 and counters["w"].tolist() == [1.0]  # floats untouched
    max_int_entries(counters, {"n": torch.tensor(8)})
    assert int(counters["n"]) == 8


def test_entry_kinds() -> None:
    assert is_parameter("conv.weight", torch.zeros(1))
    assert not is_parameter("bn.running_var", torch.zeros(1))
    assert not is_parameter("bn.running_mean", torch.zeros(1))
    assert not is_parameter("bn.num_batches_tracked", torch.tensor(0))
    assert is_parameter("bn.weight", torch.zeros(1))  # BatchNorm's affine weight is learned
