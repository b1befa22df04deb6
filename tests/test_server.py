"""Staleness functions, LR schedules and aggregators against hand-computed values (DESIGN §4)."""

from __future__ import annotations

import math

import pytest
import torch

from afl.errors import ConfigError
from afl.server.aggregators import AFL, AGGREGATORS, ClientUpdate, FedAsync, FedAvg, FedBuff
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
def test_paper_lr_matches_formula() -> None:
    lr = PaperLR(alpha=0.5)
    assert lr(1e-3, round=0, staleness=0) == pytest.approx(1e-3)
    assert lr(1e-3, round=3, staleness=2) == pytest.approx(1e-3 / (2.0 * 2.0))
    assert lr(2e-3, round=8, staleness=1) == pytest.approx(2e-3 / (3.0 * 1.5))


def test_paper_lr_falls_as_staleness_grows() -> None:
    lr = PaperLR(alpha=0.1)
    rates = [lr(1e-3, round=5, staleness=t) for t in range(10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[0] / rates[9] == pytest.approx(1.9)


def test_paper_lr_falls_with_rounds_and_constant_does_not() -> None:
    assert PaperLR()(1e-3, round=99, staleness=0) == pytest.approx(1e-4)
    assert ConstantLR()(1e-3, round=99, staleness=7) == 1e-3
    assert LR_SCHEDULES.names() == ["constant", "paper"]


# ----------------------------------------------------------------------------- aggregators
def _update(client: int, n: int, tau: int, state: dict, dispatched: dict) -> ClientUpdate:
    return ClientUpdate(client_id=client, num_samples=n, staleness=tau, state=state, dispatched=dispatched)


def test_update_delta_is_float_entries_only() -> None:
    u = _update(0, 1, 0, _g([3.0, 1.0], counter=4), _g([1.0, 1.5], counter=2))
    assert list(u.delta) == ["w"]
    assert torch.equal(u.delta["w"], torch.tensor([2.0, -0.5], dtype=torch.float64))


def _g(w: list[float], counter: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(w, dtype=torch.float64), "bn.num_batches_tracked": torch.tensor(counter)}


def test_fedavg_is_the_sample_weighted_average_of_the_round() -> None:
    agg = FedAvg()
    agg.setup(concurrency=2)
    g = _g([0.0, 0.0], counter=5)
    start = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(0, 30, 0, _g([1.0, 2.0], 7), start), g)
    assert torch.equal(g["w"], start["w"])  # nothing moves before the round is complete
    assert agg.on_arrival(_update(1, 10, 0, _g([5.0, -2.0], 9), start), g)
    assert torch.allclose(
        g["w"], torch.tensor([(30 * 1 + 10 * 5) / 40, (30 * 2 - 10 * 2) / 40], dtype=torch.float64)
    )
    assert int(g["bn.num_batches_tracked"]) == 9  # integer buffers: the counter, not a float average
    assert g["bn.num_batches_tracked"].dtype == torch.int64


def test_afl_weights_by_samples_times_staleness_and_normalises_over_the_buffer() -> None:
    agg = AFL(server_lr=0.5, buffer_size=2, staleness=Inverse(a=1.0))
    g = _g([1.0, 1.0])
    d0 = {k: v.clone() for k, v in g.items()}
    assert not agg.on_arrival(_update(0, 20, 0, _g([3.0, 1.0]), d0), g)  # Δ = (2, 0), w ∝ 20 * 1
    assert agg.on_arrival(_update(1, 40, 3, _g([1.0, 5.0]), d0), g)  # Δ = (0, 4), w ∝ 40 * 1/4
    w0, w1 = 20 / 30, 10 / 30
    assert torch.allclose(g["w"], torch.tensor([1 + 0.5 * w0 * 2, 1 + 0.5 * w1 * 4], dtype=torch.float64))


def test_afl_with_buffer_one_adds_the_whole_delta_whatever_the_staleness() -> None:
    agg = AFL()
    g = _g([1.0, 2.0])
    dispatched = _g([0.5, 0.5])  # an older version than the current global
    assert agg.on_arrival(_update(0, 7, 5, _g([1.5, -0.5]), dispatched), g)
    assert torch.allclose(g["w"], torch.tensor([2.0, 1.0], dtype=torch.float64))


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


@pytest.mark.parametrize("name", ["afl", "fedbuff", "fedavg"])
def test_aggregator_state_dict_round_trip_mid_buffer(name: str) -> None:
    def make():
        agg = AGGREGATORS.build({"name": name, "buffer_size": 3}, "server.aggregator")
        agg.setup(concurrency=3)
        return agg

    a, b = make(), make()
    g_a, g_b = _g([1.0, 1.0]), _g([1.0, 1.0])
    start = {k: v.clone() for k, v in g_a.items()}
    a.on_arrival(_update(0, 5, 1, _g([2.0, 0.0]), start), g_a)
    b.load_state_dict(a.state_dict())
    g_b = {k: v.clone() for k, v in g_a.items()}
    for agg, g in ((a, g_a), (b, g_b)):
        agg.on_arrival(_update(1, 3, 0, _g([0.0, 3.0]), start), g)
        assert agg.on_arrival(_update(2, 2, 2, _g([4.0, 4.0]), start), g)
    assert torch.equal(g_a["w"], g_b["w"])
    assert not torch.equal(g_a["w"], start["w"])


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
