"""The virtual-clock loop in whole runs, end to end with real Lightning client Trainers on tiny synthetic
data: the arrival order, the sync barrier, the budget and evaluation schedule, determinism across executors
and seeds, staleness bounds, delays, the paper's LR, BatchNorm statistics under stale updates."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import pytest
import torch
from helpers.models import tiny_cnn
from helpers.runs import summary

from afl.client.runtime import batch_loader
from afl.data.datasets import load_dataset
from afl.data.partition import partition
from afl.experiments.outputs import VOLATILE_SUMMARY_KEYS
from afl.experiments.run import run
from afl.rng import derive_rng, derive_seed


def _in_flight_at(updates: list[dict], t: float) -> int:
    return sum(1 for u in updates if u["dispatch_time"] <= t < u["arrival_time"])


def test_async_applies_arrivals_in_simulated_time_order_with_j_in_flight(tiny) -> None:
    result = run(tiny("federation.max_updates=15"))
    ups = result.updates
    assert [u["client_updates"] for u in ups] == list(range(1, 16))
    times = [u["arrival_time"] for u in ups]
    assert times == sorted(times)
    # AFL with a buffer of one: every arrival is a new version, so staleness = arrivals since dispatch
    for u in ups:
        assert u["staleness"] == u["client_updates"] - 1 - u["dispatched_version"]
    assert max(u["staleness"] for u in ups) >= 2
    # J=3 jobs in flight right after every dispatch, until the budget runs out
    for u in ups[:-3]:
        assert _in_flight_at(ups, u["arrival_time"]) == 3
    # a client is never in flight twice at once
    by_client = defaultdict(list)
    for u in ups:
        by_client[u["client_id"]].append((u["dispatch_time"], u["arrival_time"]))
    for spans in by_client.values():
        spans.sort()
        assert all(end <= nxt_start for (_, end), (nxt_start, _) in zip(spans, spans[1:]))
    assert result.summary["client_updates"] == 15
    assert result.summary["version"] == 15
    assert result.summary["sim_time"] == pytest.approx(times[-1])


def test_sync_is_a_barrier_round_of_j_distinct_clients(tiny) -> None:
    result = run(tiny("federation.mode=sync", "server.aggregator.name=fedavg", "federation.max_updates=12"))
    ups = result.updates
    rounds = [ups[i : i + 3] for i in range(0, 12, 3)]
    previous_end = 0.0
    for r, members in enumerate(rounds):
        assert len({u["client_id"] for u in members}) == 3
        assert {u["dispatched_version"] for u in members} == {r}
        assert all(u["staleness"] == 0 for u in members)
        assert all(u["dispatch_time"] == previous_end for u in members)
        previous_end = max(u["arrival_time"] for u in members)  # the round lasts as long as its slowest
    assert result.summary["version"] == 4
    assert result.summary["rounds"] == 4
    assert result.summary["sim_time"] == pytest.approx(previous_end)


def test_budget_and_evaluation_schedule(tiny) -> None:
    result = run(tiny("federation.max_updates=10", "federation.eval_every=4"))
    assert [row["client_updates"] for row in result.history] == [0, 4, 8, 10]  # 0: the initial model
    assert result.summary["client_updates"] == 10
    assert len(result.updates) == 10


def _comparable(result) -> tuple:
    summary = {k: v for k, v in result.summary.items() if k not in VOLATILE_SUMMARY_KEYS}
    history = [{k: v for k, v in row.items() if k != "wall_time"} for row in result.history]
    return summary, history, result.updates


def test_same_seed_same_run_whatever_the_executor(tiny) -> None:
    base = run(tiny("federation.workers=2"))
    for overrides in (("federation.workers=1",), ("federation.workers=3",), ("federation.executor=serial",)):
        other = run(tiny(*overrides))
        assert _comparable(other) == _comparable(base)
        for k, v in base.final_state.items():
            assert torch.equal(v, other.final_state[k]), k
        assert summary(other.output_dir) == summary(base.output_dir)
        assert (other.output_dir / "metrics.csv").read_text().count("\n") == len(base.history) + 1
    saved = json.loads((base.output_dir / "summary.json").read_text())
    assert saved["final_test_accuracy"] == base.summary["final_test_accuracy"]


def test_another_seed_gives_another_run(tiny) -> None:
    a, b = run(tiny("seed=1")), run(tiny("seed=2"))
    assert [u["client_id"] for u in a.updates] != [u["client_id"] for u in b.updates]
    assert not torch.equal(a.final_state["classifier.weight"], b.final_state["classifier.weight"])


def test_max_staleness_drop_rejects_and_counts_stale_updates(tiny) -> None:
    result = run(tiny("delay.max_staleness=1", "delay.staleness_policy=drop", "federation.max_updates=15"))
    ups = result.updates
    stale = [u for u in ups if u["staleness"] > 1]
    assert stale, "the test needs some stale arrivals"
    assert [u["dropped"] for u in ups] == [int(u["staleness"] > 1) for u in ups]
    assert result.summary["dropped_updates"] == len(stale)
    assert result.summary["version"] == 15 - len(stale)  # dropped updates never move the model
    kept = run(tiny("delay.max_staleness=1", "delay.staleness_policy=keep", "federation.max_updates=15"))
    assert kept.summary["dropped_updates"] == 0
    assert kept.summary["stale_updates"] >= 1


def test_exponential_delays_are_unbounded_and_drawn_per_job(tiny) -> None:
    result = run(
        tiny(
            "delay.comm.name=exponential",
            "delay.comm.mean=50.0",
            "delay.time_per_sample=0.0",
            "federation.max_updates=15",
        )
    )
    comm = [u["arrival_time"] - u["dispatch_time"] for u in result.updates]
    assert len(set(comm)) == len(comm)
    assert max(comm) > 50.0  # well past the mean: an unbounded tail (15 draws; P(max < 50) ≈ 0.1%)


def test_j1_afl_constant_lr_equals_plain_sequential_training(tiny) -> None:
    """With one client in flight, no delay and τ = 0, AFL is sequential training of the same clients."""
    cfg = tiny(
        "federation.concurrency=1",
        "server.lr_schedule.name=constant",
        "delay.comm.name=constant",
        "delay.comm.value=0.0",
        "federation.max_updates=6",
        "client.local_epochs=2",
    )
    result = run(cfg)
    assert all(u["staleness"] == 0 for u in result.updates)

    # the same clients, data, init and shuffles, trained with a plain PyTorch loop (no Lightning, no server),
    # at the run's torch thread count (a different count changes float summation order, not the algorithm)
    torch.set_num_threads(cfg.federation.torch_threads)
    data = load_dataset("synthetic", root="data", synthetic=dict(cfg.dataset.synthetic))
    parts = partition(
        data.train.y.numpy(),
        6,
        "dirichlet",
        rng=derive_rng(cfg.seed, "partition"),
        alpha=cfg.partition.alpha,
        min_samples=cfg.partition.min_samples,
    )
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = tiny_cnn()
    for u in result.updates:
        idx = torch.as_tensor(parts[u["client_id"]])
        x, y = data.train.x[idx], data.train.y[idx]
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.client.lr)  # Adam, fresh per job
        batches = batch_loader(
            x, y, cfg.client.batch_size, derive_seed(cfg.seed, "shuffle", u["client_id"], u["job_id"])
        )
        for _ in range(cfg.client.local_epochs):  # one loader: every epoch draws a new shuffle
            for xb, yb in batches:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
    # Two float32 code paths (the server's θ + (θ_c − θ) against the plain loop's weights; kernels picked
    # per CPU) agree up to rounding, not bit for bit. Bound: one Adam step moves a parameter by about lr at
    # most (|m̂/√v̂| ≲ 1); a reordered float32 sum of K terms changes a gradient entry, and so the normalised
    # step, by a relative ≲ K · 2^-24 (K ≲ 10^3 here: ≈ 6e-5). Allowing 1e-4 · lr per step, S steps
    # deviate by ≤ S · lr · 1e-4, plus about one ulp of θ per job for the delta round trip (rtol).
    # Measured on an AMD EPYC: 3.6e-6 over S = 36 steps at lr 3e-3, where the bound is 1.1e-5.
    steps = sum(u["steps"] for u in result.updates)
    atol = steps * cfg.client.lr * 1e-4
    for k, v in model.state_dict().items():
        torch.testing.assert_close(result.final_state[k], v, rtol=1e-6, atol=atol)
    # and it did train: the model moved from its initialisation by far more than the tolerance
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    init = tiny_cnn().state_dict()
    moved = (result.final_state["classifier.weight"] - init["classifier.weight"]).abs().max()
    assert moved > 1e-2 and moved > 500 * atol


BN_RUN = (
    "model.name=resnet20",
    "dataset.synthetic.channels=3",
    "dataset.synthetic.image_size=8",
    "dataset.synthetic.train_size=240",
    "client.local_epochs=3",
    "client.lr=0.01",
    "federation.max_updates=15",
    "federation.eval_every=1",
)


@pytest.mark.parametrize(
    "aggregator",
    [
        ("server.aggregator.name=afl", "server.aggregator.server_lr=1.0"),
        (
            "server.aggregator.name=fedbuff",
            "server.aggregator.buffer_size=2",
            "server.aggregator.server_lr=2.0",
        ),
        ("server.aggregator.name=fedasync", "server.aggregator.alpha=0.9"),
    ],
    ids=["afl", "fedbuff", "fedasync"],
)
def test_batchnorm_statistics_stay_valid_under_stale_async_updates(tiny, aggregator) -> None:
    """ResNet-20 (BatchNorm) at 8×8 under stale updates: running variances never go negative, the test
    loss stays finite at every evaluation, and counters are integers."""
    result = run(tiny(*BN_RUN, *aggregator))
    assert max(u["staleness"] for u in result.updates) >= 2
    assert all(math.isfinite(row["test_loss"]) for row in result.history)
    variances = {k: v for k, v in result.final_state.items() if k.endswith("running_var")}
    assert len(variances) == 21  # every BatchNorm layer of ResNet-20: stem, 9 × 2, 2 projections
    assert all(bool((v >= 0).all()) for v in variances.values())
    counters = [v for k, v in result.final_state.items() if k.endswith("num_batches_tracked")]
    assert all(v.dtype == torch.int64 and int(v) > 0 for v in counters)


@pytest.mark.slow
def test_paper_cifar10_preset_learns_on_small_synthetic_images(tmp_path) -> None:
    """The paper's CIFAR setting (ResNet-20, Adam, paper LR, AFL) on 3×32×32 synthetic images, sized down
    (600 images, 2 local epochs, γ0 = 5e-3, 60 updates; about 25 s): the global model beats chance clearly
    and its test loss stays finite (it was NaN from the third update when running variances were
    delta-added). Measured here: 0.545 final accuracy, chance 0.1."""
    from afl.config import load_config

    cfg = load_config(
        [
            "experiment=paper_cifar10",
            "dataset.name=synthetic",
            "dataset.synthetic.channels=3",
            "dataset.synthetic.image_size=32",
            "dataset.synthetic.train_size=600",
            "dataset.synthetic.test_size=200",
            "client.local_epochs=2",
            "client.batch_size=32",
            "client.lr=0.005",
            "federation.max_updates=60",
            "federation.eval_every=10",
            "logging.wandb.mode=disabled",
            "logging.progress=false",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert cfg.model.name == "resnet20" and cfg.server.aggregator.name == "afl"
    result = run(cfg)
    assert all(math.isfinite(row["test_loss"]) for row in result.history)
    assert result.summary["final_test_accuracy"] > 0.4


@pytest.mark.parametrize("delay_at", ["arrival", "dispatch"])
def test_paper_lr_handed_out_and_applied_per_update(tiny, delay_at: str) -> None:
    """updates.csv: the LR each job trained at and the factor the server put on its delta. Job j ≥ J is
    dispatched right after arrival j − J + 1, so its round is r = (j − J + 1) // J (0 for the first J)."""
    alpha, lr0, J = 0.5, 0.003, 3
    result = run(
        tiny(
            "server.lr_schedule.name=paper",
            f"server.lr_schedule.alpha={alpha}",
            f"server.lr_schedule.delay_at={delay_at}",
            "federation.max_updates=15",
        )
    )
    previous: dict[int, int] = {}
    for u in sorted(result.updates, key=lambda u: u["job_id"]):
        j = u["job_id"]
        r = 0 if j < J else (j - J + 1) // J
        if delay_at == "arrival":
            assert u["lr"] == pytest.approx(lr0 / math.sqrt(r + 1), rel=1e-12)
            assert u["delta_scale"] == pytest.approx(1 / (1 + alpha * u["staleness"]), rel=1e-12)
        else:  # the client's previous τ at dispatch (its update before this job), nothing at arrival
            tau_prev = previous.get(u["client_id"], 0)
            assert u["lr"] == pytest.approx(lr0 / (math.sqrt(r + 1) * (1 + alpha * tau_prev)), rel=1e-12)
            assert u["delta_scale"] == 1.0
        previous[u["client_id"]] = u["staleness"]
    assert any(u["staleness"] >= 2 for u in result.updates)
    assert len({u["lr"] for u in result.updates}) >= 3


@pytest.mark.parametrize(
    ("aggregator", "versions"),
    [
        (("server.aggregator.name=fedbuff", "server.aggregator.buffer_size=4"), 3),  # 4 + 4 + the last 2
        (("server.aggregator.name=afl", "server.aggregator.buffer_size=3"), 4),  # 3 + 3 + 3 + the last 1
    ],
    ids=["fedbuff-K4", "afl-M3"],
)
def test_a_partly_filled_buffer_is_applied_at_the_end_of_the_run(tiny, aggregator, versions: int) -> None:
    result = run(tiny(*aggregator, "federation.max_updates=10", "federation.eval_every=100"))
    assert result.summary["version"] == versions
    assert result.history[-1]["version"] == versions  # the final evaluation sees the flushed model


def test_job_durations_follow_the_delay_formula(tiny) -> None:
    """duration = samples · epochs · time_per_sample / speed[c] + comm, the speed drawn once per client."""
    from afl.sim.delays import Constant as ConstantDelay
    from afl.sim.delays import DelayModel, LogNormalSpeed

    cfg = tiny(
        "delay.comm.name=constant",
        "delay.comm.value=0.25",
        "delay.time_per_sample=0.01",
        "client.local_epochs=2",
        "federation.max_updates=15",
    )
    result = run(cfg)
    model = DelayModel(
        speed=LogNormalSpeed(sigma=1.0), comm=ConstantDelay(0.0), time_per_sample=1.0, num_clients=6, seed=0
    )
    assert len(set(model.speeds)) == 6  # heterogeneous
    for u in result.updates:
        expected = u["num_samples"] * 2 * 0.01 / model.speeds[u["client_id"]] + 0.25
        assert u["arrival_time"] - u["dispatch_time"] == pytest.approx(expected, rel=1e-9)


def test_a_run_never_draws_from_torchs_global_generator(tiny) -> None:
    """Client jobs run in worker threads that share torch's global generator: they must not touch it, so
    reseeding it (or a user drawing from it) between runs changes nothing."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = run(tiny("federation.workers=2"))
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(999)
    torch.rand(17)
    second = run(tiny("federation.workers=2"))
    assert _comparable(second) == _comparable(first)
    for k, v in first.final_state.items():
        assert torch.equal(v, second.final_state[k]), k
