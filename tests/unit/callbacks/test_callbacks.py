"""The reusable callbacks on a plain Lightning project (not ours): real Trainers, SGD, known numbers.

The module below is ``y = w·x`` with a squared loss on two fixed samples, one full batch per epoch, so
every step can be computed by hand: ``L(w) = ¼((w₁ − 1)² + (2w₂ − 2)²)``, ``∇L(w) = (½(w₁ − 1), 2(w₂ − 1))``.
Float32 training is compared with float64 hand arithmetic at ``rel=1e-6`` (a few float32 roundings of
numbers of order 1: each ≤ 6e-8 relative) unless a test says otherwise.
"""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

import lightning as L
import pytest
import torch
from afl_callbacks import DelayAwareLR, GradientNormMonitor, ParameterDrift, ProximalTerm, delay_aware_lr
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset


class LinearRegression(L.LightningModule):
    """``y = w·x`` with a squared loss: gradients we can compute by hand (SGD, or fused Adam)."""

    def __init__(self, lr: float = 0.1, fused_adam: bool = False) -> None:
        super().__init__()
        self.lr = lr
        self.fused_adam = fused_adam
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 0.5 * ((x @ self.w - y) ** 2).mean()

    def configure_optimizers(self):
        if self.fused_adam:
            return torch.optim.Adam(self.parameters(), lr=self.lr, fused=True)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _trainer(
    callbacks,
    epochs: int,
    precision: str = "32-true",
    scaler=None,
    device: str = "cpu",
    accumulate: int = 1,
) -> L.Trainer:
    """A Trainer on ``device``; ``16-mixed`` on the CPU needs Lightning's plug-in with a CPU gradient scaler
    (the same loss scaling a GPU run gets)."""
    if precision == "16-mixed":
        # the loss below is computed in half precision: the default first scale, 2¹⁶, would overflow it
        scaler = scaler or torch.amp.GradScaler(device, init_scale=2.0**8)
        amp: dict = {"plugins": [MixedPrecision("16-mixed", device, scaler=scaler)]}
    else:
        amp = {"precision": precision}
    return L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=device,
        devices=1,
        accumulate_grad_batches=accumulate,
        **amp,
    )


def _data() -> DataLoader:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([1.0, 2.0])
    return DataLoader(TensorDataset(x, y), batch_size=2)  # one full batch per epoch


def _fit(callbacks, epochs: int = 2, lr: float = 0.1, precision: str = "32-true", scaler=None, device="cpu"):
    model = LinearRegression(lr)
    _trainer(callbacks, epochs, precision, scaler, device).fit(model, _data())
    return model


def _grad(w: tuple[float, float]) -> tuple[float, float]:
    return 0.5 * (w[0] - 1.0), 2.0 * (w[1] - 1.0)


def _w(model: LinearRegression) -> list[float]:
    return model.w.detach().tolist()


def test_gradient_norm_matches_the_hand_computed_gradient() -> None:
    monitor = GradientNormMonitor()
    _fit([monitor], epochs=2)
    # epoch 1 at w=0: grad = mean((x·w - y) x) = ((-1)(1,0) + (-2)(0,2)) / 2 = (-0.5, -2) → ‖g‖² = 4.25
    # after w ← w - 0.1 g = (0.05, 0.2): residuals (-0.95, -1.6) → g = (-0.475, -1.6) → 2.785625
    assert monitor.history == pytest.approx([4.25, 0.475**2 + 1.6**2])


# bf16 keeps 8 significant bits (a rounding ≤ 2⁻⁹ ≈ 2e-3 relative) and fp16 11; the products and sums of
# numbers of order 1 in these steps take a few roundings each: 2% bounds them with room.
MIXED = 2e-2
#: Both mixed precisions on the CPU, and on a GPU where there is one (``make gpu-check``).
MIXED_PRECISIONS = [
    ("bf16-mixed", "cpu"),
    ("16-mixed", "cpu"),
    pytest.param("bf16-mixed", "cuda", marks=pytest.mark.gpu),
    pytest.param("16-mixed", "cuda", marks=pytest.mark.gpu),
]


@pytest.mark.parametrize(("precision", "device"), MIXED_PRECISIONS)
def test_gradient_norm_is_the_unscaled_gradients_under_mixed_precision(precision: str, device: str) -> None:
    """16-mixed multiplies the loss by the scaler's scale (here 256) before backward: the monitor divides it
    out, so it reports the hand-computed gradient norms as in float32."""
    monitor = GradientNormMonitor()
    _fit([monitor], epochs=2, precision=precision, device=device)
    assert monitor.history == pytest.approx([4.25, 0.475**2 + 1.6**2], rel=MIXED)
    assert monitor.steps == 2


def test_gradient_norm_leaves_out_the_steps_the_scaler_skips() -> None:
    """A scale of 2¹²⁷ overflows the first scaled loss and its gradients: the scaler skips that step and
    backs off to 2⁷. The monitor counts the two steps taken, at w = 0 and after one step, and the model
    ends where two float32 steps take it."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-120)
    monitor = GradientNormMonitor()
    model = _fit([monitor], epochs=3, precision="16-mixed", scaler=scaler)
    assert scaler.get_scale() == 2.0**7
    assert monitor.steps == 2 and monitor.history == pytest.approx([4.25, 0.475**2 + 1.6**2], rel=MIXED)
    assert _w(model) == pytest.approx(_w(_fit([], epochs=2)), rel=MIXED)


@pytest.mark.parametrize(("precision", "device"), MIXED_PRECISIONS)
def test_every_callback_gives_the_float32_result_under_mixed_precision(precision: str, device: str) -> None:
    """The proximal term (added after unscaling), the drift and the delay-aware rate under mixed precision:
    the same weights, drift and rates as in float32 (CPU), to the precision's rounding; on a GPU too."""

    def callbacks():
        rate = DelayAwareLR(base_lr=0.2, alpha=0.5, delay_fn=lambda trainer, module: 2)  # 0.1 each step
        return [ProximalTerm(mu=2.0), ParameterDrift(), rate, GradientNormMonitor()]

    reference, mixed = callbacks(), callbacks()
    w32 = _w(_fit(reference, epochs=3))
    assert _w(_fit(mixed, epochs=3, precision=precision, device=device)) == pytest.approx(w32, rel=MIXED)
    assert mixed[1].history == pytest.approx(reference[1].history, rel=MIXED)
    assert mixed[2].last_lr == reference[2].last_lr == pytest.approx(0.1)
    assert mixed[3].history == pytest.approx(reference[3].history, rel=MIXED)


def test_drift_is_the_distance_from_the_start() -> None:
    drift = ParameterDrift()
    model = _fit([drift], epochs=2)
    assert drift.history[0] == pytest.approx((0.05**2 + 0.2**2) ** 0.5)
    assert drift.history[1] == pytest.approx(float(torch.linalg.vector_norm(model.w.detach())))
    assert drift.history[1] > drift.history[0]


def test_histories_keep_only_the_last_max_history_values() -> None:
    # two of a kind in one Trainer need distinct state keys: they differ in their prefix
    capped, full = GradientNormMonitor(max_history=2, prefix="a"), GradientNormMonitor(prefix="b")
    capped_drift, full_drift = ParameterDrift(max_history=3, prefix="a"), ParameterDrift(prefix="b")
    _fit([capped, full, capped_drift, full_drift], epochs=6)
    assert len(full.history) == 6 and len(full_drift.history) == 6
    assert capped.history == full.history[-2:]
    assert capped_drift.history == full_drift.history[-3:]
    assert (capped.epochs, capped.steps, capped_drift.epochs) == (6, 6, 6)  # the counters still count
    for make in (GradientNormMonitor, ParameterDrift):
        for bad in (0, -3, 2.5, True):
            with pytest.raises(ValueError, match="^max_history must be an integer >= 1"):
                make(max_history=bad)


def test_state_dicts_hold_only_counters_also_in_a_lightning_checkpoint(tmp_path: Path) -> None:
    lr = DelayAwareLR(base_lr=0.1, alpha=0.5, delay_fn=lambda trainer, pl_module: 0)
    callbacks = [GradientNormMonitor(), ParameterDrift(), lr, ProximalTerm(mu=0.5)]
    trainer = _trainer(callbacks, epochs=3)
    trainer.fit(LinearRegression(), _data())
    expected = [{"steps": 3, "epochs": 3}, {"epochs": 3}, {"updates": 3}, {"steps": 3}]
    assert [cb.state_dict() for cb in callbacks] == expected
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    by_class = {key.split("{")[0]: value for key, value in saved.items()}
    assert by_class == {
        "GradientNormMonitor": expected[0],
        "ParameterDrift": expected[1],
        "DelayAwareLR": expected[2],
        "ProximalTerm": expected[3],
    }
    fresh = [GradientNormMonitor(), ParameterDrift(), ProximalTerm(mu=0.5)]
    for cb, state in zip(fresh, (expected[0], expected[1], expected[3])):
        cb.load_state_dict(state)
        assert cb.state_dict() == state
    with pytest.raises(ValueError, match="norm_type"):
        GradientNormMonitor(norm_type=0)


def test_delay_aware_lr_sets_the_papers_rate_each_step() -> None:
    # τ = the step number, α = 1: step 0 trains at 0.2 / 1, step 1 at 0.2 / 2. The optimizer is built with
    # lr = 5, which would overshoot at once (w₂ would jump to 10), so the numbers show the callback's rate.
    lr = DelayAwareLR(base_lr=0.2, alpha=1.0, delay_fn=lambda trainer, pl_module: trainer.global_step)
    model = LinearRegression(lr=5.0)
    trainer = _trainer([lr], epochs=2)
    trainer.fit(model, _data())
    w1 = tuple(0.0 - 0.2 * g for g in _grad((0.0, 0.0)))  # (0.1, 0.4)
    w2 = tuple(w - 0.1 * g for w, g in zip(w1, _grad(w1)))  # (0.145, 0.52)
    assert _w(model) == pytest.approx(list(w2), rel=1e-6)
    assert trainer.optimizers[0].param_groups[0]["lr"] == lr.last_lr == 0.1
    assert lr.updates == 2


def test_delay_aware_lr_with_rounds_once_per_fit() -> None:
    # r = 3, τ = 2, α = 0.5: 0.4 / (sqrt(4) (1 + 1)) = 0.1 for the whole fit
    lr = DelayAwareLR(0.4, 0.5, delay_fn=lambda t, m: 2, round_fn=lambda t, m: 3, interval="fit")
    model = _fit([lr], epochs=2, lr=5.0)
    assert lr.updates == 1 and lr.last_lr == 0.1
    assert _w(model) == pytest.approx([0.0975, 0.36], rel=1e-6)  # two plain SGD steps at 0.1 from w = 0
    assert delay_aware_lr(0.4, 0.5, 2, round=3) == 0.1
    # the rate falls as the delay grows, and with the round
    rates = [delay_aware_lr(1e-3, 0.1, tau) for tau in range(10)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert delay_aware_lr(1e-3, 0.1, 0, round=99) == pytest.approx(1e-4)


def test_the_callback_and_the_server_compute_the_same_rate() -> None:
    """The callbacks import nothing from afl, so the formula is written twice: in the server's schedule
    (what the simulator trains with) and here; the two must agree exactly (Python floats, the same
    operations in the same order)."""
    from afl.server.lr_schedules import delay_aware_lr as server_rate

    for base, alpha, delay, round in product((1e-3, 0.4, 3.0), (0.0, 0.01, 0.5), (0, 1, 7), (None, 0, 3, 99)):
        assert delay_aware_lr(base, alpha, delay, round) == server_rate(base, alpha, delay, round)
    assert server_rate(0.4, 0.5, 2, round=3) == 0.1


def test_delay_aware_lr_checks_its_arguments_and_the_delay() -> None:
    def tau(trainer, pl_module):
        return 1

    for kwargs, message in (
        (dict(base_lr=0.0, alpha=0.1, delay_fn=tau), "base_lr must be a finite number > 0"),
        (dict(base_lr=0.1, alpha=-0.1, delay_fn=tau), "alpha must be a finite number >= 0"),
        (dict(base_lr=0.1, alpha=math.nan, delay_fn=tau), "alpha must be a finite number >= 0"),
        (dict(base_lr=0.1, alpha=0.1, delay_fn=3), "delay_fn must be callable"),
        (dict(base_lr=0.1, alpha=0.1, delay_fn=tau, round_fn="r"), "round_fn must be None or callable"),
        (dict(base_lr=0.1, alpha=0.1, delay_fn=tau, interval="batch"), "interval must be one of fit, epoch"),
    ):
        with pytest.raises(ValueError, match=f"^{message}"):
            DelayAwareLR(**kwargs)
    negative = DelayAwareLR(base_lr=0.1, alpha=0.1, delay_fn=lambda t, m: -1)
    with pytest.raises(ValueError, match="delay_fn's result must be a finite number >= 0"):
        _fit([negative], epochs=1)


def test_proximal_term_adds_exactly_the_gradient_of_mu_half_squared_distance() -> None:
    # Two SGD steps (lr 0.1) from w₀ = 0 = θ_start. Step 1: θ = θ_start, the term's gradient is 0.
    # Step 2 adds μ (w₁ − w₀): the update of the loss L(w) + μ/2 ‖w − w₀‖², computed by hand.
    mu, lr = 2.0, 0.1
    w1 = tuple(-lr * g for g in _grad((0.0, 0.0)))  # (0.05, 0.2)
    with_term = tuple(w - lr * (g + mu * w) for w, g in zip(w1, _grad(w1)))  # (0.0875, 0.32)
    without = tuple(w - lr * g for w, g in zip(w1, _grad(w1)))  # (0.0975, 0.36)
    prox = ProximalTerm(mu=mu)
    assert _w(_fit([prox], epochs=2, lr=lr)) == pytest.approx(list(with_term), rel=1e-6)
    assert _w(_fit([ProximalTerm(mu=0.0)], epochs=2, lr=lr)) == pytest.approx(list(without), rel=1e-6)
    assert prox.steps == 2
    for bad in (-1.0, math.inf, "1"):
        with pytest.raises(ValueError, match="^mu must be a finite number >= 0"):
            ProximalTerm(mu=bad)


def test_a_large_mu_keeps_the_weights_near_the_start() -> None:
    # SGD on L(w) + μ/2 ‖w‖² converges to its minimiser: ½(w₁ − 1) + μ w₁ = 0 and 2(w₂ − 1) + μ w₂ = 0,
    # so w = (0.5 / (0.5 + μ), 2 / (2 + μ)). With lr 0.1, μ = 5 the error shrinks by 0.45 and 0.3 per step:
    # after 40 steps it is below 1e-13. Without the term, w = (1 − 0.95⁴⁰, 1 − 0.8⁴⁰) after 40 steps.
    # abs=1e-5: 40 float32 steps each round by ≤ 6e-8 and the iteration contracts, so ≤ 2.4e-6 in all.
    mu = 5.0
    near, free = ParameterDrift(), ParameterDrift()
    held = _fit([ProximalTerm(mu=mu), near], epochs=40)
    loose = _fit([free], epochs=40)
    assert _w(held) == pytest.approx([0.5 / (0.5 + mu), 2.0 / (2.0 + mu)], abs=1e-5)
    assert _w(loose) == pytest.approx([1 - 0.95**40, 1 - 0.8**40], abs=1e-5)
    assert near.history[-1] == pytest.approx(math.hypot(0.5 / 5.5, 2 / 7), abs=1e-5)  # 0.30
    assert free.history[-1] > 1.3  # ‖w − w₀‖ ≈ 1.33 without the term


# ---- gradient accumulation, several optimizers, optimizers that unscale themselves -------------------
#
# Below, ``n`` samples in batches of one and ``accumulate_grad_batches=k``: Lightning divides each
# micro-batch's loss by k and steps once per k batches, and once more on the last batch of an epoch when
# n is not a multiple of k (that window's losses are still divided by k). The hand computation runs the
# same SGD in float64 from the same float32 samples in the same order. Lightning runs in float32: each
# step's gradient and update take a few roundings of ≤ 6e-8 relative, and the few steps here add them up
# without amplifying them (lr·‖x‖² < 1), so rel=1e-5 leaves a margin of more than 10× (measured ≤ 1e-6).
ACCUMULATED = 1e-5


def _samples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``y ≈ x·(1, -2)``: residuals of order 1 from w = 0, so no squared norm is a cancellation."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    return x, x @ torch.tensor([1.0, -2.0]) + 0.1 * torch.randn(n, generator=g)


def _fit_accumulated(callbacks, n: int, k: int, epochs: int, lr: float = 0.1) -> L.Trainer:
    trainer = _trainer(callbacks, epochs, accumulate=k)
    trainer.fit(LinearRegression(lr), DataLoader(TensorDataset(*_samples(n)), batch_size=1))
    return trainer


def _hand_accumulated(n: int, k: int, epochs: int, lr=lambda step: 0.1, mu: float = 0.0):
    """SGD on ``Σ_window ½(x·w − y)² / k (+ μ/2 ‖w‖²)`` from w = 0: the loss's ``‖G‖²`` at each step (without
    the proximal term) and the weights at the end of each epoch."""
    xs, ys = (t.tolist() for t in _samples(n))
    w, norms, ends = [0.0, 0.0], [], []
    for _ in range(epochs):
        for start in range(0, n, k):
            g = [0.0, 0.0]
            for x, y in zip(xs[start : start + k], ys[start : start + k]):
                r = x[0] * w[0] + x[1] * w[1] - y
                g = [g[0] + r * x[0] / k, g[1] + r * x[1] / k]
            norms.append(g[0] ** 2 + g[1] ** 2)
            rate = lr(len(norms) - 1)
            w = [w[j] - rate * (g[j] + mu * w[j]) for j in range(2)]
        ends.append(w)
    return norms, ends


class StepValues(L.Callback):
    """The monitor's value at each optimizer step it records. List it after the monitor."""

    def __init__(self, monitor: GradientNormMonitor) -> None:
        self.monitor = monitor
        self.values: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.monitor.steps > len(self.values):
            assert self.monitor.last is not None
            self.values.append(self.monitor.last)


@pytest.mark.parametrize(
    ("n", "epochs", "steps"),
    [(10, 1, 5), (5, 2, 6)],  # 5 full windows; 2 full and 1 cut short by the end of each epoch
    ids=["full-windows", "partial-window-at-epoch-end"],
)
def test_gradient_norm_is_the_accumulated_gradient_at_each_optimizer_step(n, epochs, steps) -> None:
    """At ``accumulate_grad_batches=2`` the monitor reads the mean gradient of the step's micro-batches,
    once per optimizer step (it read every backward pass, partial sums included, before)."""
    monitor = GradientNormMonitor()
    values = StepValues(monitor)
    trainer = _fit_accumulated([monitor, values], n, k=2, epochs=epochs)
    norms, _ = _hand_accumulated(n, k=2, epochs=epochs)
    assert trainer.global_step == monitor.steps == len(norms) == steps
    assert values.values == pytest.approx(norms, rel=ACCUMULATED)
    per_epoch = len(norms) // epochs
    means = [sum(norms[i : i + per_epoch]) / per_epoch for i in range(0, len(norms), per_epoch)]
    assert monitor.history == pytest.approx(means, rel=ACCUMULATED)


@pytest.mark.parametrize("monitor_first", [True, False], ids=["monitor-first", "proximal-first"])
def test_proximal_term_once_per_optimizer_step_and_the_monitor_reads_before_it(monitor_first) -> None:
    """Under accumulation the term ``μ (θ − θ_start)`` is added once per optimizer step (not per
    micro-batch), and the monitor measures the loss's gradient without it in either list order. The drift
    is measured after the step that ends each epoch (the one of the partial window)."""
    mu, n, epochs = 2.0, 5, 2
    monitor, prox, drift = GradientNormMonitor(), ProximalTerm(mu=mu), ParameterDrift()
    values = StepValues(monitor)
    order = [monitor, prox] if monitor_first else [prox, monitor]
    trainer = _fit_accumulated([*order, drift, values], n, k=2, epochs=epochs)
    norms, ends = _hand_accumulated(n, k=2, epochs=epochs, mu=mu)
    assert prox.steps == monitor.steps == trainer.global_step == 6
    assert _w(trainer.lightning_module) == pytest.approx(ends[-1], rel=ACCUMULATED)
    assert values.values == pytest.approx(norms, rel=ACCUMULATED)
    assert drift.history == pytest.approx([math.hypot(*w) for w in ends], rel=ACCUMULATED)
    # without the proximal term the trajectory differs, so the monitor's numbers above are the loss's
    assert _hand_accumulated(n, k=2, epochs=epochs)[0][1:] != pytest.approx(norms[1:], rel=1e-2)


def test_delay_aware_lr_sets_the_rate_once_per_optimizer_step_under_accumulation() -> None:
    """τ = the optimizer step: each of the 6 steps (2 epochs of 2 full windows and a partial one) trains at
    0.2 / (1 + τ); the rate is set at the first micro-batch of each window, not at every batch."""
    asked: list[int] = []

    def delay(trainer, pl_module) -> int:
        asked.append(trainer.global_step)
        return trainer.global_step

    lr = DelayAwareLR(base_lr=0.2, alpha=1.0, delay_fn=delay)
    trainer = _fit_accumulated([lr], n=5, k=2, epochs=2, lr=5.0)
    _, ends = _hand_accumulated(5, k=2, epochs=2, lr=lambda step: 0.2 / (1 + step))
    assert asked == [0, 1, 2, 3, 4, 5] and lr.updates == 6
    assert lr.last_lr == pytest.approx(0.2 / 6)
    assert _w(trainer.lightning_module) == pytest.approx(ends[-1], rel=ACCUMULATED)


class TwoOptimizers(L.LightningModule):
    """The same regression with ``w = (a, b)`` split over two SGD optimizers, stepped one after the other
    by hand (manual optimization) on the gradients of one backward pass: the same weights as one SGD."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.lr = lr
        self.a, self.b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))

    @property
    def w(self) -> torch.Tensor:
        return torch.cat([self.a, self.b])

    def training_step(self, batch, batch_idx):
        x, y = batch
        first, second = self.optimizers()
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(0.5 * ((x @ self.w - y) ** 2).mean())
        first.step()
        second.step()

    def configure_optimizers(self):
        return torch.optim.SGD([self.a], lr=self.lr), torch.optim.SGD([self.b], lr=self.lr)


def test_with_two_optimizers_each_step_is_measured_over_its_own_parameters() -> None:
    """Manual optimization with two optimizers: the monitor records one value per ``optimizer.step()``, the
    squared norm of that optimizer's parameters' gradient, and the proximal term is added once to each."""
    monitor, prox = GradientNormMonitor(), ProximalTerm(mu=2.0)
    values = StepValues(monitor)
    model = TwoOptimizers()
    trainer = _trainer([prox, monitor, values], epochs=2)
    trainer.fit(model, _data())
    # step 1 at w = 0: g = (-0.5, -2); with the term, w₁ = (0.05, 0.2) (the term is 0 at θ_start)
    g2 = _grad((0.05, 0.2))  # (-0.475, -1.6), then the term adds 2 w₁ = (0.1, 0.4) to it
    assert values.values == pytest.approx([0.25, 4.0, g2[0] ** 2, g2[1] ** 2], rel=1e-6)
    assert monitor.history == pytest.approx([2.125, (g2[0] ** 2 + g2[1] ** 2) / 2], rel=1e-6)
    assert monitor.steps == prox.steps == trainer.global_step == 4
    assert _w(model) == pytest.approx([0.0875, 0.32], rel=1e-6)  # as with one optimizer (test above)


def test_fused_adam_under_16_mixed_gives_the_float32_numbers() -> None:
    """A fused optimizer unscales the gradients inside its step, so under 16-mixed they are still scaled
    (by 256 here) in ``on_before_optimizer_step``: the monitor divides the scale out and the proximal term
    is scaled like them, so both agree with float32."""

    def fit(precision: str):
        monitor, prox = GradientNormMonitor(), ProximalTerm(mu=2.0)
        model = LinearRegression(lr=0.1, fused_adam=True)
        _trainer([prox, monitor], epochs=3, precision=precision).fit(model, _data())
        return monitor, _w(model)

    (reference, w32), (mixed, w16) = fit("32-true"), fit("16-mixed")
    assert reference.history[0] == pytest.approx(4.25, rel=1e-6)
    assert mixed.history == pytest.approx(reference.history, rel=MIXED)
    assert w16 == pytest.approx(w32, rel=MIXED)
