"""CA2FL, FADAS and delay compensation against hand-computed steps on a two-entry model, for fixed arrival
sequences (stale updates, buffers of M > 1, a partly filled buffer at the end), their state surviving a
checkpoint bit for bit, and their options checked like every component's.

The expected values are the rules' formulas worked by hand in float64 (the model is float64 too), so
they agree to the last few bits: ``rel=1e-12``.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from afl.errors import ConfigError
from afl.messages import ClientUpdate
from afl.server.aggregators import AGGREGATORS
from afl.server.compensation import CA2FL, FADAS, DelayCompensation

EXACT = 1e-12


def _w(*values: float, counter: int = 0) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float64), "bn.num_batches_tracked": torch.tensor(counter)}


def _arrive(
    client: int, delta: tuple[float, float], tau: int = 0, base=(0.0, 0.0), counter: int = 0
) -> ClientUpdate:
    """Client ``client``'s update ``Δ = delta`` from the dispatched model ``base``."""
    state = _w(*(b + d for b, d in zip(base, delta)), counter=counter)
    return ClientUpdate(client_id=client, num_samples=10, staleness=tau, state=state, dispatched=_w(*base))


def _values(state: dict[str, torch.Tensor]) -> list[float]:
    return state["w"].tolist()


# ------------------------------------------------------------------------------------------------ CA2FL
def _ca2fl(num_clients: int, **options) -> CA2FL:
    agg = CA2FL(**options)
    agg.setup(concurrency=2)
    agg.prepare(num_clients=num_clients, global_state=_w(0.0, 0.0))
    return agg


def test_ca2fl_calibrates_each_buffer_by_the_cached_deltas_of_all_clients() -> None:
    """N = 3, M = 2, η = 0.5. Buffer 1: clients 0 and 1, nothing cached: v = mean Δ = (1, 2).
    Buffer 2: client 0 again and client 2: v = h̄ + ½((Δ0' − h0) + (Δ2 − 0)) with h̄ = (h0 + h1)/3.
    Then a partial buffer, client 1 alone, at the end of the run: v = h̄ + (Δ1' − h1)."""
    agg, g = _ca2fl(3, server_lr=0.5, buffer_size=2), _w(0.0, 0.0)
    assert not agg.on_arrival(_arrive(0, (2.0, 0.0)), g)
    assert _values(g) == [0.0, 0.0]  # nothing moves before the buffer is full
    assert agg.on_arrival(_arrive(1, (0.0, 4.0), tau=1), g)
    assert _values(g) == pytest.approx([0.5 * 1.0, 0.5 * 2.0], rel=EXACT)
    h_bar = (2 / 3, 4 / 3)  # (h0 + h1 + 0) / 3 = ((2, 0) + (0, 4)) / 3
    agg.on_arrival(_arrive(0, (-1.0, 1.0), tau=1), g)
    assert agg.on_arrival(_arrive(2, (3.0, 3.0), tau=2), g)
    v = [h_bar[0] + 0.5 * ((-1 - 2) + 3), h_bar[1] + 0.5 * ((1 - 0) + 3)]  # (2/3, 10/3)
    assert _values(g) == pytest.approx([0.5 + 0.5 * v[0], 1.0 + 0.5 * v[1]], rel=EXACT)
    before = _values(g)
    h_bar = ((-1 + 0 + 3) / 3, (1 + 4 + 3) / 3)  # h0 = (-1, 1), h1 = (0, 4), h2 = (3, 3)
    assert not agg.on_arrival(_arrive(1, (1.0, -2.0), tau=3), g)
    assert agg.flush(g)  # the leftover arrival: M = 1
    v = [h_bar[0] + (1 - 0), h_bar[1] + (-2 - 4)]
    assert _values(g) == pytest.approx([before[0] + 0.5 * v[0], before[1] + 0.5 * v[1]], rel=EXACT)
    assert not agg.flush(g)


def test_ca2fl_calibrates_a_client_arriving_twice_in_one_buffer_by_its_cache_before_the_buffer() -> None:
    agg, g = _ca2fl(2, server_lr=1.0, buffer_size=2), _w(0.0, 0.0)
    agg.on_arrival(_arrive(0, (1.0, 0.0)), g)
    agg.on_arrival(_arrive(1, (0.0, 1.0)), g)  # θ = (0.5, 0.5); h0 = (1, 0), h1 = (0, 1)
    agg.on_arrival(_arrive(0, (2.0, 0.0), tau=1), g)
    agg.on_arrival(_arrive(0, (4.0, 0.0), tau=2), g)  # re-dispatched, back within the same buffer
    # v = h̄ + ½((2, 0) − h0 + (4, 0) − h0) = (0.5, 0.5) + (2, 0)
    assert _values(g) == pytest.approx([0.5 + 2.5, 0.5 + 0.5], rel=EXACT)
    cache = agg.state_dict()["cache"]
    assert _values(cache[0]) == [4.0, 0.0] and _values(cache[1]) == [0.0, 1.0]  # the latest delta


def test_ca2fl_refuses_a_run_whose_caches_would_not_fit() -> None:
    agg = CA2FL(max_cache_mib=1.0)
    with pytest.raises(ConfigError, match=r"^server.aggregator.max_cache_mib: .*1000 clients need 4 MiB"):
        agg.prepare(num_clients=1000, global_state={"w": torch.zeros(1000)})  # 1000 × 4 kB
    agg.prepare(num_clients=200, global_state={"w": torch.zeros(1000)})  # 0.8 MiB: fits


# ------------------------------------------------------------------------------------------------ FADAS
def test_fadas_takes_amsgrad_steps_with_bias_correction_and_a_delay_adaptive_rate() -> None:
    """M = 2, η = 0.1, β1 = 0.5, β2 = 0.75, τ_c = 1. Step 1: Δ = mean((2, 0), (0, 4)) = (1, 2) with
    τ_max = 2 > τ_c, so η_1 = η / 2. Step 2: a partial buffer of one, τ_max = 1: η."""
    agg = FADAS(server_lr=0.1, buffer_size=2, beta1=0.5, beta2=0.75, eps=1e-300, delay_threshold=1)
    agg.setup(concurrency=2)
    g = _w(0.0, 0.0)
    agg.on_arrival(_arrive(0, (2.0, 0.0)), g)
    assert agg.on_arrival(_arrive(1, (0.0, 4.0), tau=2), g)
    m, v = [0.5 * 1, 0.5 * 2], [0.25 * 1, 0.25 * 4]  # (1 − β) Δ, (1 − β2) Δ²
    v_max = v
    step = (0.1 / 2) / (1 - 0.5)
    expected = [step * m[i] / (math.sqrt(v_max[i]) / math.sqrt(1 - 0.75)) for i in range(2)]
    assert _values(g) == pytest.approx(expected, rel=EXACT)  # (0.05, 0.05)
    assert not agg.on_arrival(_arrive(0, (-2.0, 0.0), tau=1), g)
    assert agg.flush(g)
    d = [-2.0, 0.0]
    m = [0.5 * m[i] + 0.5 * d[i] for i in range(2)]
    v = [0.75 * v[i] + 0.25 * d[i] ** 2 for i in range(2)]
    v_max = [max(v_max[i], v[i]) for i in range(2)]  # the second entry keeps its first value
    assert v_max[1] > v[1]
    step = 0.1 / (1 - 0.5**2)
    expected = [expected[i] + step * m[i] / (math.sqrt(v_max[i]) / math.sqrt(1 - 0.75**2)) for i in range(2)]
    assert _values(g) == pytest.approx(expected, rel=EXACT)


def test_fadas_without_bias_correction_or_delay_adaptation() -> None:
    agg = FADAS(server_lr=0.1, buffer_size=1, beta1=0.5, beta2=0.75, eps=1e-300, bias_correction=False)
    agg.setup(concurrency=4)
    g = _w(0.0, 0.0)
    assert agg.on_arrival(_arrive(0, (2.0, -1.0), tau=9), g)  # τ = 9 changes nothing without τ_c
    expected = [0.1 * (0.5 * 2) / math.sqrt(0.25 * 4), 0.1 * (0.5 * -1) / math.sqrt(0.25 * 1)]
    assert _values(g) == pytest.approx(expected, rel=EXACT)  # (0.1, -0.1): sign steps at first
    # (with β1 = 0.5, β2 = 0.75 the corrections 1/(1−β1) and 1/sqrt(1−β2) cancel at step 1, not at step 2)
    assert agg.on_arrival(_arrive(1, (2.0, -1.0)), g)  # m = (1.5, −0.75), v = v_max = (1.75, 0.4375)
    expected = [0.1 + 0.1 * 1.5 / math.sqrt(1.75), -0.1 - 0.1 * 0.75 / math.sqrt(0.4375)]
    assert _values(g) == pytest.approx(expected, rel=EXACT)
    assert [agg.rate(t) for t in (0, 5)] == [0.1, 0.1]
    assert FADAS(server_lr=0.1, delay_threshold=2).rate(4) == 0.025


# --------------------------------------------------------------------------------------------------- dc
def test_dc_compensates_the_pseudo_gradient_by_how_far_the_server_moved() -> None:
    """θ_t = (1, 2), dispatched θ_v = (0, 1), Δ = (2, −1): g = (−2, 1), θ_t − θ_v = (1, 1),
    g̃ = g + λ g² (θ_t − θ_v) = (−2 + 0.25·4, 1 + 0.25·1) = (−1, 1.25), θ ← θ − η g̃ with η = 0.5."""
    agg = DelayCompensation(server_lr=0.5, lam=0.25)
    agg.setup(concurrency=3)
    g = _w(1.0, 2.0, counter=4)
    assert agg.on_arrival(_arrive(0, (2.0, -1.0), tau=3, base=(0.0, 1.0), counter=7), g)
    assert _values(g) == pytest.approx([1.0 + 0.5, 2.0 - 0.5 * 1.25], rel=EXACT)
    assert int(g["bn.num_batches_tracked"]) == 7
    plain = DelayCompensation(lam=0.0)  # λ = 0: θ + η_g Δ, η_g = 1/J
    plain.setup(concurrency=4)
    g = _w(1.0, 2.0)
    plain.on_arrival(_arrive(0, (2.0, -1.0), base=(0.0, 1.0)), g)
    assert _values(g) == pytest.approx([1.5, 1.75], rel=EXACT)


@pytest.mark.parametrize("rule", [CA2FL, FADAS])
def test_buffered_rules_set_normalisation_statistics_to_the_buffers_mean(rule) -> None:
    g = {"w": torch.zeros(2, dtype=torch.float64), "bn.running_mean": torch.zeros(2, dtype=torch.float64)}
    agg = rule(buffer_size=2)
    agg.setup(concurrency=2)
    if rule is CA2FL:
        agg.prepare(num_clients=2, global_state=g)
    for client, mean in ((0, [2.0, 4.0]), (1, [4.0, -8.0])):
        state = {
            "w": torch.ones(2, dtype=torch.float64),
            "bn.running_mean": torch.tensor(mean, dtype=torch.float64),
        }
        dispatched = {k: v.clone() for k, v in g.items()}
        agg.on_arrival(
            ClientUpdate(client_id=client, num_samples=10, staleness=0, state=state, dispatched=dispatched), g
        )
    assert g["bn.running_mean"].tolist() == [3.0, -2.0]


def test_dc_mixes_normalisation_statistics_by_its_server_step() -> None:
    agg = DelayCompensation(server_lr=0.25)
    agg.setup(concurrency=2)
    g = {"w": torch.zeros(2, dtype=torch.float64), "bn.running_mean": torch.zeros(2, dtype=torch.float64)}
    g["bn.num_batches_tracked"] = torch.tensor(0)
    state = {
        "w": torch.ones(2, dtype=torch.float64),
        "bn.running_mean": torch.tensor([4.0, -8.0], dtype=torch.float64),
    }
    state["bn.num_batches_tracked"] = torch.tensor(3)
    dispatched = {k: v.clone() for k, v in g.items()}
    agg.on_arrival(
        ClientUpdate(client_id=0, num_samples=10, staleness=0, state=state, dispatched=dispatched), g
    )
    assert g["w"].tolist() == [0.25, 0.25]  # θ_t = θ_v: no compensation, θ ← θ + η Δ
    assert g["bn.running_mean"].tolist() == [1.0, -2.0]  # (1 − η) · 0 + η · client's
    assert int(g["bn.num_batches_tracked"]) == 3


def test_dc_adaptive_scales_lambda_by_the_root_mean_square_of_pseudo_gradients() -> None:
    agg = DelayCompensation(server_lr=1.0, lam=1.0, adaptive=True, mean_square_decay=0.5, eps=1e-300)
    agg.setup(concurrency=1)
    g = _w(1.0, 2.0)
    agg.on_arrival(_arrive(0, (2.0, -1.0), base=(0.0, 1.0)), g)
    ms = [0.5 * 4, 0.5 * 1]  # (1 − d) g²
    first = [1.0 - (-2 + 4 / math.sqrt(ms[0])), 2.0 - (1 + 1 / math.sqrt(ms[1]))]
    assert _values(g) == pytest.approx(first, rel=EXACT)
    agg.on_arrival(_arrive(1, (1.0, 1.0), base=(0.0, 0.0)), g)  # g = (−1, −1), θ_t − θ_v = θ_t
    ms = [0.5 * ms[0] + 0.5 * 1, 0.5 * ms[1] + 0.5 * 1]
    second = [first[i] - (-1 + 1 / math.sqrt(ms[i]) * first[i]) for i in range(2)]
    assert _values(g) == pytest.approx(second, rel=EXACT)
    defaults = [DelayCompensation(adaptive=a).lam for a in (False, True)]
    assert defaults == [0.04, 2.0]


# ---------------------------------------------------------------------------------------- all three
RULES = {
    "ca2fl": {"name": "ca2fl", "buffer_size": 3, "server_lr": 0.5},
    "fadas": {"name": "fadas", "buffer_size": 3, "server_lr": 0.1, "delay_threshold": 1},
    "dc": {"name": "dc", "lam": 0.5, "adaptive": True},
}
ARRIVALS = [
    (0, (2.0, 0.0), 0),
    (1, (0.0, 4.0), 2),
    (2, (-1.0, 1.0), 1),
    (0, (1.0, 3.0), 3),
    (1, (2.0, 2.0), 0),
]


def _saved(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", list(RULES))
def test_state_survives_a_checkpoint_mid_buffer_bit_for_bit(name: str) -> None:
    def make():
        agg = AGGREGATORS.build(RULES[name], "server.aggregator")
        agg.setup(concurrency=3)
        agg.prepare(num_clients=3, global_state=_w(0.0, 0.0))
        return agg

    whole, g = make(), _w(0.5, -0.5)
    for client, delta, tau in ARRIVALS[:4]:  # the second buffer holds one arrival
        whole.on_arrival(_arrive(client, delta, tau, base=(0.1, 0.2)), g)
    resumed, g2 = make(), {k: v.clone() for k, v in g.items()}
    resumed.load_state_dict(_saved(whole.state_dict()))
    for agg, state in ((whole, g), (resumed, g2)):
        agg.on_arrival(_arrive(*ARRIVALS[4][:2], ARRIVALS[4][2], base=(0.1, 0.2)), state)
        agg.flush(state)
    assert torch.equal(g["w"], g2["w"])
    assert g["w"].tolist() != [0.5, -0.5]


@pytest.mark.parametrize(
    ("node", "key", "message"),
    [
        ({"name": "ca2fl", "server_lr": 0}, "server_lr", "must be > 0, got 0"),
        ({"name": "ca2fl", "buffer_size": 0}, "buffer_size", "must be >= 1, got 0"),
        ({"name": "ca2fl", "max_cache_mib": 0}, "max_cache_mib", "must be > 0, got 0"),
        ({"name": "ca2fl", "max_cache": 3}, "max_cache", "not an option of aggregator 'ca2fl'"),
        ({"name": "fadas", "server_lr": 0}, "server_lr", "must be > 0, got 0"),
        ({"name": "fadas", "server_lr": -1.0}, "server_lr", "must be > 0, got -1.0"),
        ({"name": "fadas", "beta1": 1.0}, "beta1", r"must be in \[0, 1\), got 1.0"),
        ({"name": "fadas", "beta1": -0.1}, "beta1", r"must be in \[0, 1\), got -0.1"),
        ({"name": "fadas", "beta2": -0.1}, "beta2", r"must be in \[0, 1\), got -0.1"),
        ({"name": "fadas", "beta2": 1.0}, "beta2", r"must be in \[0, 1\), got 1.0"),
        ({"name": "fadas", "eps": 0}, "eps", "must be > 0, got 0"),
        ({"name": "fadas", "delay_threshold": -1}, "delay_threshold", "must be >= 0, got -1"),
        ({"name": "dc", "lam": -0.1}, "lam", "must be >= 0, got -0.1"),
        ({"name": "dc", "lam": math.inf}, "lam", "expected a finite number or null, got inf"),
        ({"name": "dc", "mean_square_decay": 1.0}, "mean_square_decay", r"must be in \[0, 1\), got 1.0"),
        ({"name": "dc", "mean_square_decay": -0.5}, "mean_square_decay", r"must be in \[0, 1\), got -0.5"),
        ({"name": "dc", "server_lr": -1.0}, "server_lr", "must be > 0, got -1.0"),
        ({"name": "dc", "server_lr": 0.0}, "server_lr", "must be > 0, got 0.0"),
        ({"name": "dc", "eps": 0}, "eps", "must be > 0, got 0"),
    ],
)
def test_out_of_range_options_name_the_key(node: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^server.aggregator.{key}: .*{message}"):
        AGGREGATORS.build(node, "server.aggregator")


def test_the_edges_of_the_ranges_are_accepted() -> None:
    AGGREGATORS.build(
        {"name": "fadas", "beta1": 0.0, "beta2": 0.0, "delay_threshold": 0}, "server.aggregator"
    )
    AGGREGATORS.build({"name": "dc", "lam": 0.0, "mean_square_decay": 0.0}, "server.aggregator")


def test_the_defaults_are_the_documented_ones() -> None:
    """docs/configuration.md's table (the values a config that names only the rule gets)."""
    ca2fl = AGGREGATORS.build({"name": "ca2fl"}, "server.aggregator")
    assert (ca2fl.server_lr, ca2fl.max_cache_mib) == (1.0, 4096.0)
    fadas = AGGREGATORS.build({"name": "fadas"}, "server.aggregator")
    assert (fadas.server_lr, fadas.beta1, fadas.beta2, fadas.eps) == (0.001, 0.9, 0.99, 1e-8)
    assert fadas.delay_threshold is None and fadas.bias_correction is True
    dc = AGGREGATORS.build({"name": "dc"}, "server.aggregator")
    assert (dc.server_lr, dc.lam, dc.adaptive, dc.mean_square_decay, dc.eps) == (
        None,
        0.04,
        False,
        0.95,
        1e-7,
    )
    assert AGGREGATORS.build({"name": "dc", "adaptive": True}, "server.aggregator").lam == 2.0
    with pytest.raises(ConfigError, match="^lam: must be >= 0, got inf"):  # built in code, not from a config
        DelayCompensation(lam=math.inf)


def test_ca2fl_refuses_caches_beyond_4_gib_by_default_and_takes_exactly_4_gib() -> None:
    mib = {"w": torch.empty(2**18, dtype=torch.float32, device="meta")}  # 1 MiB of parameters, no memory
    CA2FL().prepare(num_clients=4096, global_state=mib)
    with pytest.raises(ConfigError, match="4097 clients need 4097 MiB, more than 4096"):
        CA2FL().prepare(num_clients=4097, global_state=mib)


def test_fadas_is_torchs_amsgrad_on_the_negated_mean_delta() -> None:
    """An independent implementation: torch.optim.Adam(amsgrad=True) fed the pseudo-gradient −Δ takes the
    same steps (torch's AMSGrad has the authors' bias correction and ε placement), to float64 rounding."""
    agg = FADAS(server_lr=0.01, buffer_size=2, beta1=0.9, beta2=0.99, eps=1e-8)
    agg.setup(concurrency=2)
    g = _w(0.3, -0.2)
    param = torch.nn.Parameter(g["w"].clone())
    adam = torch.optim.Adam([param], lr=0.01, betas=(0.9, 0.99), eps=1e-8, amsgrad=True)
    deltas = [(2.0, 0.0), (0.0, 4.0), (-1.0, 0.5), (0.3, 0.3), (1.0, -3.0), (0.2, 0.1)]
    for i in range(0, len(deltas), 2):
        for client, delta in enumerate(deltas[i : i + 2]):
            agg.on_arrival(_arrive(client, delta), g)
        param.grad = -torch.tensor([(a + b) / 2 for a, b in zip(*deltas[i : i + 2])], dtype=torch.float64)
        adam.step()
        assert g["w"].tolist() == pytest.approx(param.detach().tolist(), rel=EXACT)
