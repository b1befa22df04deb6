"""Faulty clients: injected faults are rejected and counted by reason, never applied; the run goes on."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from afl.config import load_config
from afl.experiments.run import run
from afl.sim.loop import NonFiniteModel

# Constant speeds and a 1 s communication delay: a normal job takes 1.0-1.7 s, a slow one (×10) at least
# 10 s, so client.timeout_s = 5 catches exactly the slow ones.
FAULTY = [
    "experiment=demo",
    "arm=afl",  # M = 1: every accepted update is a version
    "server.aggregator.server_lr=0.2",  # η_g = M/J, not the demo's selected 1.0: a steadier model to compare
    "delay.speed.name=constant",
    "delay.comm.name=constant",
    "delay.comm.value=1.0",
    "client.timeout_s=5",
    "server.lr_schedule.name=constant",
    "client.lr=0.01",
    "federation.max_updates=300",
    "logging.wandb.mode=disabled",
    "logging.progress=false",
]
EXPECTED_REASON = {"": "", "raise": "error", "nonfinite": "nonfinite", "slow": "timeout"}


def test_twenty_percent_faulty_jobs_are_rejected_counted_and_cost_little(tmp_path: Path) -> None:
    clean = run(load_config([*FAULTY, f"output_dir={tmp_path / 'clean'}"]))
    faulty = run(load_config([*FAULTY, "faults.rate=0.2", f"output_dir={tmp_path / 'faulty'}"]))
    s = faulty.summary
    assert s["client_updates"] == 300  # the run finished its budget: every slot was refilled
    with (tmp_path / "faulty" / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    faults = Counter(r["fault"] for r in rows)
    assert 0.1 < 1 - faults[""] / 300 < 0.3 and set(faults) == {"", "raise", "nonfinite", "slow"}
    for r in rows:  # every fault is caught, by the right reason, and nothing else is rejected
        assert r["rejected"] == EXPECTED_REASON[r["fault"]], r
        if r["fault"] == "slow":
            assert float(r["arrival_time"]) - float(r["dispatch_time"]) == pytest.approx(5.0)
    rejected = Counter(r["rejected"] for r in rows if r["rejected"])
    assert s["rejected_by_reason"] == {
        "error": rejected["error"],
        "nonfinite": rejected["nonfinite"],
        "timeout": rejected["timeout"],
        "norm": 0,
    }
    assert s["rejected_updates"] == sum(rejected.values()) == faulty.history[-1]["rejected_updates"]
    assert s["version"] == 300 - s["rejected_updates"]  # afl with M = 1: every accepted update is a version
    assert (
        json.loads((tmp_path / "faulty" / "summary.json").read_text())["rejected_updates"]
        == s["rejected_updates"]
    )
    # losing a fifth of the updates costs little: measured 0.825 with faults vs 0.822 without
    assert abs(s["final_test_accuracy"] - clean.summary["final_test_accuracy"]) < 0.05
    assert clean.summary["rejected_updates"] == 0 and clean.summary["final_test_accuracy"] > 0.75


def test_faults_are_the_same_for_every_executor(tiny) -> None:
    runs = [
        run(tiny("faults.rate=0.4", "faults.kinds=[raise,nonfinite]", f"federation.executor={e}"))
        for e in ("serial", "thread")
    ]
    assert runs[0].updates == runs[1].updates
    assert runs[0].summary["rejected_updates"] > 0


def test_an_update_beyond_the_norm_bound_is_never_applied(tiny) -> None:
    with pytest.raises(
        RuntimeError, match=r"every one of the 12 client updates was rejected; the first: norm"
    ):
        run(tiny("server.max_delta_norm=1e-6"))
    loose = run(tiny("server.max_delta_norm=1e6"))
    assert loose.summary["rejected_updates"] == 0


def test_a_global_model_that_becomes_non_finite_stops_the_run_clearly(tiny) -> None:
    # finite client updates (Adam at lr 1 moves weights by several units), a server step that overflows
    # float32 (its largest value is 3.4e38)
    # a buffer of 2: the first arrival is buffered and checkpointed, the second moves to version 1
    cfg = tiny(
        "server.aggregator.name=fedbuff",
        "server.aggregator.buffer_size=2",
        "server.aggregator.server_lr=3e38",
        "client.lr=1.0",
        "checkpoint.every=1",
    )
    with pytest.raises(NonFiniteModel, match="became non-finite at version 1") as err:
        run(cfg)
    assert str(err.value).endswith(  # what to do about it
        "lower the step sizes (client.lr, server.aggregator.server_lr) or bound updates with "
        "server.max_delta_norm"
    )
    out = Path(cfg.output_dir)
    assert (out / "FAILED").read_text().startswith("NonFiniteModel: the global model")
    assert not (out / "summary.json").exists()
    # the last good checkpoint is kept: version 0, finite, one update buffered
    kept = torch.load(out / "checkpoint.pt", weights_only=True)["loop"]
    assert kept["state"]["client_updates"] == 1 and kept["state"]["version"] == 0
    assert all(bool(torch.isfinite(v).all()) for v in kept["state"]["global_state"].values())
    assert kept["aggregator"]["buffer"]["count"] == 1
