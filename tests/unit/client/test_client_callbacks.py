"""``client.callbacks`` and ``client.prox_mu``: the callbacks of callbacks/ in our own client Trainers."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from afl_callbacks.grad_norm import squared_grad_norm
from helpers.models import tiny_cnn

from afl.cli.train import main as train
from afl.client.callbacks import Drift, GradientNorm
from afl.client.runtime import ClientRuntime, batch_loader
from afl.experiments.build import build
from afl.experiments.run import run
from afl.messages import ClientJob, is_parameter

MONITORS = "client.callbacks=[gradient_norm, parameter_drift]"


def _without(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in keys} for row in rows]


def test_monitors_change_nothing_and_report_per_update(tiny) -> None:
    plain = run(tiny("client.prox_mu=0.0"))
    monitored = run(tiny(MONITORS))
    serial = run(tiny(MONITORS, "federation.executor=serial"))
    # reading gradients and weights leaves training bit for bit as it was
    for k, v in plain.final_state.items():
        assert torch.equal(v, monitored.final_state[k]), k
    assert _without(monitored.updates, ("grad_sq_norm", "client_drift")) == plain.updates
    # fresh callbacks per job: threads and the serial executor give the same numbers
    assert serial.updates == monitored.updates
    for u in monitored.updates:
        assert u["grad_sq_norm"] > 0 and math.isfinite(u["grad_sq_norm"])
        assert u["client_drift"] > 0
    assert "grad_sq_norm" not in plain.updates[0]
    with (monitored.output_dir / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["client_drift"]) for r in rows] == [u["client_drift"] for u in monitored.updates]


def test_client_job_reports_the_mean_squared_gradient_and_the_norm_of_its_delta() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))

    def factory():
        return tiny_cnn()

    start = factory().state_dict()
    runtime = ClientRuntime(
        [(x, y)], factory, num_classes=10, local_epochs=2, batch_size=16, callbacks=[GradientNorm(), Drift()]
    )
    job = ClientJob(job_id=0, client_id=0, state=start, lr=1e-2, seed=7)
    result = runtime(job)
    delta = sum(
        float(((v.double() - start[k].double()) ** 2).sum())
        for k, v in result.state.items()
        if is_parameter(k, v)
    )
    # the same float32 weights, squared and summed in float64 in the same order: equal up to rounding
    assert result.metrics["client_drift"] == pytest.approx(math.sqrt(delta), rel=1e-12)

    # the same job as a plain PyTorch loop: ‖∇L‖² at every step, averaged over the 2 × 3 steps
    model = factory()
    model.load_state_dict(start)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    norms = []
    batches = batch_loader(x, y, 16, 7)
    for _ in range(2):
        for xb, yb in batches:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            norms.append(squared_grad_norm(model.parameters()))
            optimizer.step()
    assert len(norms) == result.steps == 6
    # Lightning runs the same float32 operations; reductions may be ordered differently on another
    # path, which moves a squared norm by a few ulps per step (rel 1e-5 is about 100 float32 ulps).
    assert result.metrics["grad_sq_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_a_large_prox_mu_moves_the_global_model_less(tiny) -> None:
    # SGD at lr 0.05 with μ = 20: lr·μ = 1, so each step cancels the client's whole displacement so far
    # and leaves only that step's own data-gradient step; without the term the 6 local steps add up.
    # Measured: drifts 0.32 vs 1.32 in total, global model moved 0.025 vs 0.10 (the bound is 0.5×).
    sgd = (
        "client.optimizer=sgd",
        "client.lr=0.05",
        "client.local_epochs=2",
        "client.callbacks=[parameter_drift]",
    )
    free = run(tiny(*sgd))
    held = run(tiny(*sgd, "client.prox_mu=20.0"))
    cfg = tiny(*sgd)
    start = build(cfg).global_state

    def moved(state) -> float:
        return math.sqrt(
            sum(float(((state[k] - v) ** 2).sum()) for k, v in start.items() if is_parameter(k, v))
        )

    drift_free = [u["client_drift"] for u in free.updates]
    drift_held = [u["client_drift"] for u in held.updates]
    assert sum(drift_held) < 0.5 * sum(drift_free)
    assert moved(held.final_state) < 0.5 * moved(free.final_state)
    assert moved(held.final_state) > 0  # it still trains


@pytest.mark.parametrize("decay", ["sqrt", "none"])
def test_delay_aware_lr_in_the_client_is_the_papers_rate_at_dispatch(tiny, decay: str) -> None:
    """The callback in the client Trainer and the server's paper schedule (delay_at: dispatch) give the
    same rate, as the same float, so the same run bit for bit."""
    server = run(
        tiny(
            "server.lr_schedule.name=paper",
            "server.lr_schedule.delay_at=dispatch",
            "server.lr_schedule.alpha=0.5",
            f"server.lr_schedule.decay={decay}",
        )
    )
    client = run(
        tiny(
            "server.lr_schedule.name=constant",
            f"client.callbacks=[{{name: delay_aware_lr, alpha: 0.5, decay: {decay}}}]",
        )
    )
    assert [u["effective_lr"] for u in client.updates] == [u["lr"] for u in server.updates]
    assert {u["lr"] for u in client.updates} == {0.003}  # the job's LR before the callback: γ0
    assert min(u["effective_lr"] for u in client.updates) < 0.003 / (1 + 0.5)  # some client was late
    assert [u["last_lr"] for u in server.updates] == [u["lr"] for u in server.updates]  # no per-epoch rates
    assert _without(client.updates, ("effective_lr", "lr", "last_lr")) == _without(
        server.updates, ("lr", "last_lr")
    )
    for k, v in server.final_state.items():
        assert torch.equal(v, client.final_state[k]), k


BAD = [
    ("client.callbacks=[bogus]", "client.callbacks[0].name", "allowed: delay_aware_lr, gradient_norm"),
    ("client.callbacks=[{name: proximal, mu: -1}]", "client.callbacks[0].mu", "must be a finite number >= 0"),
    (
        "client.callbacks=[gradient_norm, {name: parameter_drift, log: true}]",
        "client.callbacks[1].log",
        "none",
    ),
    (
        "client.callbacks=[{name: gradient_norm, norm_type: 0}]",
        "client.callbacks[0].norm_type",
        "must be > 0",
    ),
    # (with the constant server schedule it needs: the checks of the config come before the callback's own)
    (
        ("client.callbacks=[{name: delay_aware_lr, alpha: -1}]", "server.lr_schedule.name=constant"),
        "client.callbacks[0].alpha",
        ">= 0",
    ),
    (
        ("client.callbacks=[{name: delay_aware_lr, decay: exp}]", "server.lr_schedule.name=constant"),
        "client.callbacks[0].decay",
        "sqrt, none",
    ),
    ("client.callbacks=[delay_aware_lr]", "client.callbacks[0].name", "server.lr_schedule.name=constant"),
    ("client.callbacks=[7]", "client.callbacks[0]", "expected a mapping with a 'name'"),
    ("client.callbacks=[parameter_drift, parameter_drift]", "client.callbacks[1].name", "list it once"),
    ("client.prox_mu=-0.5", "client.prox_mu", "must be >= 0"),
    ("client.prox_mu=nan", "client.prox_mu", "finite"),
]


@pytest.mark.parametrize(
    ("arg", "key", "text"), BAD, ids=[a if isinstance(a, str) else a[0] for a, _, _ in BAD]
)
def test_bad_client_callbacks_exit_2_naming_the_key(arg, key, text, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = train([*([arg] if isinstance(arg, str) else arg), f"output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {key}: "), err
    assert text in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_prox_mu_and_a_listed_proximal_term_conflict(tmp_path, capsys) -> None:
    code = train(["client.callbacks=[proximal]", "client.prox_mu=0.1", f"output_dir={tmp_path / 'o'}"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: client.prox_mu: client.callbacks[0] already adds")
