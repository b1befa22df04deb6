"""The theory's quantities: ‖∇L(θ)‖², heterogeneity ν² and server drift, each against a direct computation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from helpers.configs import TINY
from helpers.loops import serial_loop
from torch import nn

from afl.experiments.build import build
from afl.experiments.evaluation import gradient_statistics
from afl.experiments.run import run


def _softmax_gradient(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∇ of the mean cross-entropy of softmax(x wᵀ + b), by hand, in float64: (weight, bias) flattened."""
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0  # softmax − one-hot
    return np.concatenate([(p.T @ x / len(y)).ravel(), p.mean(axis=0)])


def test_gradient_statistics_match_the_closed_form_of_a_linear_softmax_model() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    rng = np.random.default_rng(1)
    clients = []
    for n in (7, 12, 4):  # different sizes and label mixes: a heterogeneous federation
        clients.append((rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, size=n)))
    weights = [7.0, 12.0, 4.0]

    got = gradient_statistics(
        model, [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in clients], weights
    )

    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    per_client = np.stack([_softmax_gradient(w, b, x.astype(np.float64), y) for x, y in clients])
    p = np.array(weights) / sum(weights)
    mean = p @ per_client
    # float32 forward and backward against float64 by hand: ~1e-7 relative per element, so 1e-5 on sums
    assert got["grad_norm_sq"] == pytest.approx(float(mean @ mean), rel=1e-5)
    expected_nu = float(np.mean([(g - mean) @ (g - mean) for g in per_client]))
    assert got["heterogeneity"] == pytest.approx(expected_nu, rel=1e-5)
    assert expected_nu > 0.01  # the clients really differ
    assert all(p.grad is None for p in model.parameters())  # no .grad left behind


def test_identical_clients_have_no_heterogeneity_and_their_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 4, (10,))
    got = gradient_statistics(model, [(x, y)] * 3, [1.0, 5.0, 2.0])
    assert got["heterogeneity"] == pytest.approx(0.0, abs=1e-12)
    loss = nn.functional.cross_entropy(model(x), y)
    direct = sum(
        float(g.double().square().sum()) for g in torch.autograd.grad(loss, list(model.parameters()))
    )
    assert got["grad_norm_sq"] == pytest.approx(direct, rel=1e-6)


def test_a_run_reports_the_quantities_of_its_global_model(tiny) -> None:
    """The final metrics row's ‖∇L‖² is that of the final model on the fixed sample, computed directly:
    one scalar L = Σ p_c L_c(θ), one backward pass (another code path than per-client gradients)."""
    cfg = tiny("theory.max_clients=4", "theory.samples_per_client=16")
    result = run(cfg)
    setup = build(cfg)
    batches, weights = setup.theory_sample()
    assert len(batches) == 4 and all(len(y) <= 16 for _, y in batches)
    assert set(weights) <= {float(len(part)) for part in setup.parts}  # n_c of the chosen clients

    model = setup.model_factory()
    model.load_state_dict(result.final_state)
    model.eval()
    total = sum(weights)
    loss = sum(w / total * nn.functional.cross_entropy(model(x), y) for (x, y), w in zip(batches, weights))
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    direct = sum(float(g.double().square().sum()) for g in grads)
    final = result.history[-1]
    assert final["grad_norm_sq"] == pytest.approx(direct, rel=1e-5)
    assert final["heterogeneity"] > 0
    with (result.output_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["grad_norm_sq"]) for r in rows] == [h["grad_norm_sq"] for h in result.history]


def test_theory_off_leaves_the_run_unchanged_and_the_columns_empty(tiny) -> None:
    on, off = run(tiny()), run(tiny("theory.enabled=false"))
    assert "grad_norm_sq" not in off.history[-1]
    assert [h["test_accuracy"] for h in on.history] == [h["test_accuracy"] for h in off.history]
    for key, value in on.final_state.items():
        assert torch.equal(off.final_state[key], value)
    with (off.output_dir / "metrics.csv").open() as f:
        assert {r["grad_norm_sq"] for r in csv.DictReader(f)} == {""}


def test_drift_is_how_far_the_server_moved_while_the_client_trained() -> None:
    """Every global state is recorded (an evaluation after each update); each arrival's drift is then
    recomputed from the state it was dispatched with and the state when it arrived. (The paper's CNN has
    parameters only: no running statistics to leave out.)"""
    overrides = [*TINY, "federation.eval_every=1", "federation.max_updates=15", "theory.enabled=false"]
    with serial_loop(overrides) as (setup, loop):
        states = {0: {k: v.clone() for k, v in setup.global_state.items()}}  # version → state
        before_arrival = []  # the global state before arrival k (k = 0, 1, ...); the first: update 0's
        measure = loop.evaluate

        def record(state):
            copy = {k: v.clone() for k, v in state.items()}
            states.setdefault(loop.state.version, copy)
            before_arrival.append(copy)
            return measure(state)

        loop.evaluate = record
        loop.run()

    arrivals = loop.state.arrivals
    for k, a in enumerate(arrivals):
        now, then = before_arrival[k], states[a["dispatched_version"]]
        direct = math.sqrt(sum(float((now[n].double() - then[n].double()).square().sum()) for n in now))
        assert a["drift"] == pytest.approx(direct, rel=1e-5, abs=1e-9), k
        assert (a["drift"] == 0) == (a["staleness"] == 0), k  # afl moves θ on every update
    assert any(a["staleness"] > 0 for a in arrivals)
    rows = loop.history
    assert [r["mean_drift"] for r in rows[1:]] == [a["drift"] for a in arrivals]  # windows of one update
    assert math.isnan(rows[0]["mean_drift"])  # the initial model: no update in its window
