"""The reusable callbacks on a plain Lightning project (not ours): real Trainers, SGD, known numbers."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks import GradientNormMonitor, ParameterDrift


class LinearRegression(L.LightningModule):
    """``y = w·x`` with a squared loss: gradients we can compute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 0.5 * ((x @ self.w - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callbacks, epochs: int = 2) -> LinearRegression:
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([1.0, 2.0])
    model = LinearRegression()
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=2))  # one full batch per epoch
    return model


def test_gradient_norm_matches_the_hand_computed_gradient() -> None:
    monitor = GradientNormMonitor()
    _fit([monitor], epochs=2)
    # epoch 1 at w=0: grad = mean((x·w - y) x) = ((-1)(1,0) + (-2)(0,2)) / 2 = (-0.5, -2) → ‖g‖² = 4.25
    # after w ← w - 0.1 g = (0.05, 0.2): residuals (-0.95, -1.6) → g = (-0.475, -1.6) → 2.785625
    assert monitor.history == pytest.approx([4.25, 0.475**2 + 1.6**2])


def test_drift_is_the_distance_from_the_start() -> None:
    drift = ParameterDrift()
    model = _fit([drift], epochs=2)
    assert drift.history[0] == pytest.approx((0.05**2 + 0.2**2) ** 0.5)
    assert drift.history[1] == pytest.approx(float(torch.linalg.vector_norm(model.w.detach())))
    assert drift.history[1] > drift.history[0]


def test_state_dict_round_trip_and_argument_checks() -> None:
    monitor = GradientNormMonitor()
    _fit([monitor], epochs=1)
    fresh = GradientNormMonitor()
    fresh.load_state_dict(monitor.state_dict())
    assert fresh.history == monitor.history == pytest.approx([4.25])
    with pytest.raises(ValueError, match="norm_type"):
        GradientNormMonitor(norm_type=0)
