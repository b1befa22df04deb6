"""The sampling policies (``federation.sampling``): who fills a free slot, never a client in flight, each
draw a function of the seed and the dispatch index, and the policy's state carried through a checkpoint."""

from __future__ import annotations

import math

import pytest

from afl.errors import ConfigError
from afl.rng import derive_rng
from afl.sim.sampling import SAMPLERS, Adaptive, RoundRobin, Uniform, kth_idle


def _made(sampler, num_clients: int = 5, seed: int = 0):
    sampler.setup(num_clients=num_clients, seed=seed)
    return sampler


def _arrival(client: int, loss: float, samples: int = 10, took: float = 1.0) -> dict:
    return {
        "client_id": client,
        "train_loss": loss,
        "num_samples": samples,
        "dispatch_time": 2.0,
        "arrival_time": 2.0 + took,
    }


def test_uniform_is_the_kth_idle_client_with_k_drawn_from_the_seed_and_the_dispatch() -> None:
    uniform = _made(Uniform(), num_clients=7, seed=3)
    busy = [1, 4]
    for draw in range(20):
        k = int(derive_rng(3, "select", draw).integers(5))
        assert uniform.choose(busy, draw) == kth_idle(busy, k) not in busy
    rounds = [uniform.choose_round(3, r) for r in range(4)]
    assert all(len(set(r)) == 3 and r == sorted(r) for r in rounds)
    assert rounds == [_made(Uniform(), 7, 3).choose_round(3, r) for r in range(4)]  # from the seed alone


def test_round_robin_goes_through_the_ids_in_order_skipping_those_in_flight() -> None:
    rr = _made(RoundRobin(), num_clients=5)
    assert [rr.choose([], 0), rr.choose([0], 1), rr.choose([0, 1], 2)] == [0, 1, 2]
    assert rr.choose([3], 3) == 4  # 3 is in flight
    assert rr.choose([1], 4) == 0  # wraps around
    assert rr.choose([1, 2], 5) == 3
    resumed = _made(RoundRobin(), num_clients=5)
    resumed.load_state_dict(rr.state_dict())
    assert resumed.choose([], 6) == rr.choose([], 6) == 4
    assert rr.choose_round(3, 0) == [0, 1, 2]


def test_adaptive_tries_every_client_first_then_exploits_loss_and_speed() -> None:
    policy = _made(Adaptive(epsilon=0.0, deadline=2.0), num_clients=3)
    first = [policy.choose([], 0), None, None]
    first[1] = policy.choose([first[0]], 1)
    first[2] = policy.choose(sorted(first[:2]), 2)
    assert sorted(first) == [0, 1, 2]  # the never-seen go first
    policy.observe(_arrival(0, loss=2.0))
    policy.observe(_arrival(1, loss=1.0))
    policy.observe(_arrival(2, loss=3.0, took=10.0))  # the highest loss, 5× slower than the deadline
    # U = n·L·(T/d)^α (α = 2 when slower) + a bonus below 1 here: 20, 10 and 30·0.04 = 1.2
    assert policy.utility(2) < policy.utility(1) < policy.utility(0)
    assert policy.choose([], 3) == 0
    assert policy.choose([0], 4) == 1
    assert policy.choose([0, 1], 5) == 2  # the only idle one


def test_adaptive_utility_is_oorts_formula_by_hand() -> None:
    """``U_c = n_c L_c (T/d_c)^(α 1[d_c > T]) + sqrt(0.1 ln t / t_c)``, T the median known duration."""
    policy = _made(Adaptive(epsilon=0.0), num_clients=4)  # α = 2, T = the median
    order: list[int] = []
    for draw in range(4):
        order.append(policy.choose(sorted(order), draw))
    assert sorted(order) == [0, 1, 2, 3]
    policy.observe(_arrival(0, loss=2.0, samples=10, took=1.0))
    policy.observe(_arrival(1, loss=math.nan, samples=10, took=2.0))  # a loss that is not finite counts 0
    policy.observe(_arrival(2, loss=3.0, samples=10, took=8.0))  # slower than T = 4: (4/8)^2
    policy.observe(_arrival(3, loss=1.0, samples=5, took=4.0))  # durations 1, 2, 4, 8: T = the 3rd, 4
    bonus = {c: math.sqrt(0.1 * math.log(4) / (order.index(c) + 1)) for c in range(4)}
    expected = {0: 20.0, 1: 0.0, 2: 30.0 * 0.25, 3: 5.0}
    assert {c: policy.utility(c) for c in range(4)} == pytest.approx(
        {c: expected[c] + bonus[c] for c in range(4)}, rel=1e-12
    )
    alone = _made(Adaptive(epsilon=0.0), num_clients=1)
    alone.observe(_arrival(alone.choose([], 0), loss=1.5, samples=10))
    assert alone.utility(0) == 15.0  # after one dispatch, ln(1) = 0: no bonus


def test_uniform_sync_rounds_draw_distinct_clients_among_the_available() -> None:
    uniform = _made(Uniform(), num_clients=7, seed=1)
    assert all(uniform.choose_round(4, r, unavailable=[1, 5, 6]) == [0, 2, 3, 4] for r in range(10))
    rounds = [uniform.choose_round(3, r, unavailable=[5]) for r in range(10)]
    assert all(len(set(r)) == 3 and 5 not in r for r in rounds)
    assert all(uniform.choose_round(7, r) == list(range(7)) for r in range(10))


def test_adaptive_prefers_the_client_not_chosen_for_longest_among_equals() -> None:
    policy = _made(Adaptive(epsilon=0.0), num_clients=2)
    a = policy.choose([], 0)
    b = policy.choose([a], 1)
    for client in (a, b):
        policy.observe(_arrival(client, loss=1.0))
    assert policy.choose([], 2) == a  # chosen before b: the larger exploration bonus
    assert policy.choose([], 3) == b


def test_adaptive_draws_come_from_the_seed_and_its_state_survives_a_checkpoint() -> None:
    def run(seed: int, cut: int | None = None) -> list[int]:
        policy, chosen = _made(Adaptive(epsilon=0.5), num_clients=6, seed=seed), []
        for draw in range(30):
            if draw == cut:
                fresh = _made(Adaptive(epsilon=0.5), num_clients=6, seed=seed)
                fresh.load_state_dict(policy.state_dict())
                policy = fresh
            busy = sorted({(draw + 1) % 6, (draw + 3) % 6})
            c = policy.choose(busy, draw)
            assert c not in busy
            chosen.append(c)
            policy.observe(_arrival(c, loss=1.0 + (c * draw) % 5 / 2, took=1.0 + c / 3))
        return chosen

    assert run(1) == run(1) == run(1, cut=17)
    assert run(1) != run(2)


@pytest.mark.parametrize(
    ("node", "key", "message"),
    [
        ({"name": "adaptive", "epsilon": 1.5}, "epsilon", r"must be in \[0, 1\], got 1.5"),
        ({"name": "adaptive", "epsilon": -0.1}, "epsilon", r"must be in \[0, 1\], got -0.1"),
        ({"name": "adaptive", "alpha": -1.0}, "alpha", "must be >= 0, got -1.0"),
        ({"name": "adaptive", "deadline": 0.0}, "deadline", "must be > 0, got 0.0"),
        ({"name": "round_robin", "start": 2}, "start", "not an option"),
        ({"name": "greedy"}, "name", "greedy"),
    ],
)
def test_bad_policies_and_options_name_the_key(node: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^federation.sampling.{key}: .*{message}"):
        SAMPLERS.build(node, "federation.sampling")


def test_adaptive_takes_the_edges_of_its_ranges_and_documents_its_defaults() -> None:
    edge = SAMPLERS.build({"name": "adaptive", "epsilon": 1.0, "alpha": 0.0, "deadline": 0.5}, "f.s")
    assert (edge.epsilon, edge.alpha, edge.deadline) == (1.0, 0.0, 0.5)
    assert SAMPLERS.build({"name": "adaptive", "alpha": 0.5}, "f.s").alpha == 0.5
    default = SAMPLERS.build({"name": "adaptive"}, "f.s")  # docs/configuration.md
    assert (default.epsilon, default.alpha, default.deadline) == (0.2, 2.0, None)


def test_adaptive_breaks_a_tie_in_utility_towards_the_lower_id() -> None:
    policy = _made(Adaptive(epsilon=0.0), num_clients=3)
    same = {0: 1.0, 1: 1.0, 2: 1.0}
    policy.load_state_dict(
        {"loss": same, "samples": {c: 10 for c in same}, "duration": same, "chosen_at": same, "dispatches": 1}
    )
    assert policy.choose([], 5) == 0
    assert policy.choose([0], 6) == 1


def test_adaptive_explores_uniformly_with_the_draw_of_each_dispatch() -> None:
    policy = _made(Adaptive(epsilon=1.0), num_clients=6, seed=4)
    for c in range(6):
        policy.observe(_arrival(c, loss=1.0))  # every client seen: each choice is an exploration

    def expected(draw: int) -> int:
        rng = derive_rng(4, "select", draw)
        rng.random()  # the explore-or-exploit draw
        return int(rng.integers(6))

    assert [policy.choose([], d) for d in range(30)] == [expected(d) for d in range(30)]
    assert len({expected(d) for d in range(30)}) > 1
