"""Whole runs with ``federation.executor=cohort``: the thread executor's schedule (arrivals, staleness,
dispatches, rejections), results bit-identical to itself for any number of workers, cohorts formed by
the simulated schedule alone, and the settings it cannot train refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.configs import TINY
from helpers.runs import assert_same_outputs, updates

from afl.config import load_config
from afl.errors import ConfigError
from afl.experiments.build import build, make_executor, make_loop
from afl.experiments.run import run
from afl.sim.executors import CohortExecutor

#: TINY with faults and a schedule with rejections: errors, non-finite weights and slow jobs.
FAULTY = [*TINY, "faults.rate=0.3", "federation.max_updates=18", "client.callbacks=[parameter_drift]"]


SCHEDULE = (
    "client_updates",
    "job_id",
    "client_id",
    "dispatched_version",
    "staleness",
    "dispatch_time",
    "arrival_time",
    "num_samples",
    "steps",
    "fault",
    "rejected",
    "lr",
)


def test_a_cohort_run_keeps_the_thread_runs_schedule_and_repeats_itself_for_any_workers(tmp_path) -> None:
    thread = run(load_config([*FAULTY, f"output_dir={tmp_path / 'thread'}"]))
    cohorts = [
        run(
            load_config(
                [
                    *FAULTY,
                    "federation.executor=cohort",
                    f"federation.workers={w}",
                    f"output_dir={tmp_path / str(w)}",
                ]
            )
        )
        for w in (1, 3)
    ]
    want, got = updates(thread.output_dir), updates(cohorts[0].output_dir)
    assert [[r[k] for k in SCHEDULE] for r in got] == [[r[k] for k in SCHEDULE] for r in want]
    assert {r["rejected"] for r in got} >= {"", "error", "nonfinite"}  # the faults were there
    for a, b in zip(got, want):
        if not b["rejected"] or b["rejected"] == "nonfinite":
            assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3, nan_ok=True)
            # parameter_drift, reported per client by the cohort. ‖θ − θ_dispatched‖ is a difference of two
            # near models: their float differences (1e-4 of ‖θ‖) are 1e-3 of it, ‖θ‖ / ‖Δ‖ ≈ 10 here
            assert (a["client_drift"] == "") == (b["client_drift"] == "")
            if b["client_drift"]:
                assert float(a["client_drift"]) == pytest.approx(float(b["client_drift"]), rel=1e-2)
    summaries = [json.loads((c.output_dir / "summary.json").read_text()) for c in (thread, *cohorts)]
    for key in ("client_updates", "version", "sim_time", "mean_staleness", "rejected_by_reason"):
        assert summaries[1][key] == summaries[0][key], key
    assert summaries[1]["final_test_loss"] == pytest.approx(summaries[0]["final_test_loss"], rel=1e-3)
    assert_same_outputs(cohorts[1].output_dir, cohorts[0].output_dir)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cohorts_follow_the_simulated_schedule_and_the_cap(mode) -> None:
    sync = ["federation.mode=sync", "server.aggregator={name: fedavg}"] if mode == "sync" else []
    sizes = {}
    for cap in (None, 2):
        cfg = load_config([*TINY, *sync, "federation.executor=cohort", f"cohort.max_clients={cap or 'null'}"])
        setup = build(cfg)
        with make_executor(cfg, setup.runtime) as executor:
            assert isinstance(executor, CohortExecutor)
            make_loop(setup, executor, lambda row: None, lambda state: None).run()
            sizes[cap] = executor.cohort_sizes
    assert sum(sizes[None]) == sum(sizes[2]) == 12  # every job trained once
    assert max(sizes[2]) == 2 < max(sizes[None])
    if mode == "sync":  # a round is one cohort of J = 3
        assert sizes[None] == [3, 3, 3, 3]
    else:  # the first J together, then what the schedule queued when a result was needed
        assert sizes[None][0] == 3


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("client.callbacks=[gradient_norm]", "client.callbacks[0]"),
        ("client.prox_mu=0.1", "client.prox_mu"),
        ("trainer.precision=16-mixed", "trainer.precision"),
        ("cohort.max_clients=0", "cohort.max_clients"),
    ],
)
def test_what_a_cohort_cannot_train_is_refused_by_name(override, key) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([*TINY, "federation.executor=cohort", override])  # its checks: nothing built
    assert err.value.key == key
    if key.startswith("client."):  # the thread executor runs them
        load_config([*TINY, override])


def test_a_cohort_trains_in_bf16_mixed_and_hands_the_server_float32_weights(tmp_path) -> None:
    """bf16 keeps 8 significant bits: each rounding is at most about 2e-3 relative, and these losses take a
    few; the bound is the one the thread executor's bf16 test uses against 32-bit."""
    outs = {
        p: run(
            load_config(
                [*TINY, "federation.executor=cohort", f"trainer.precision={p}", f"output_dir={tmp_path / p}"]
            )
        )
        for p in ("32-true", "bf16-mixed")
    }
    mixed, plain = outs["bf16-mixed"], outs["32-true"]
    assert {v.dtype for v in mixed.final_state.values() if v.is_floating_point()} == {torch.float32}
    losses = [[float(r["train_loss"]) for r in o.history[1:]] for o in (mixed, plain)]
    assert losses[0] == pytest.approx(losses[1], rel=0.05)
    assert losses[0] != losses[1]  # bfloat16 products: not the same bits
