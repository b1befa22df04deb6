"""A whole run through run(): its files, its W&B offline run read back, and the comparison script."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from helpers.wandb_offline import read_offline_run
from omegaconf import OmegaConf

from afl.experiments.metrics import load_run
from afl.experiments.outputs import METRIC_COLUMNS
from afl.experiments.run import run


def test_run_writes_its_outputs(tiny) -> None:
    result = run(tiny("federation.max_updates=12", "federation.eval_every=4"))
    out = result.output_dir
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "final_model.pt",
        "metrics.csv",
        "partition.json",
        "summary.json",
        "updates.csv",
    ]
    saved = OmegaConf.load(out / "config.yaml")
    assert saved == result.config
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["client_updates"]) for r in rows] == [0, 4, 8, 12]  # 0: the initial model
    assert [float(r["test_accuracy"]) for r in rows] == [h["test_accuracy"] for h in result.history]
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "algorithm",
        "mode",
        "seed",
        "final_test_accuracy",
        "final_test_loss",
        "best_test_accuracy",
        "client_updates",
        "version",
        "sim_time",
        "wall_time_s",
        "dropped_updates",
    ):
        assert key in summary
    assert summary["algorithm"] == "afl" and summary["mode"] == "async" and summary["client_updates"] == 12
    assert summary["best_test_accuracy"] == max(float(r["test_accuracy"]) for r in rows)
    assert summary["final_test_accuracy"] == float(rows[-1]["test_accuracy"])
    partition = json.loads((out / "partition.json").read_text())
    assert sum(partition["samples"]) == 480  # every training sample is some client's
    assert [sum(c) for c in partition["class_counts"]] == partition["samples"]
    final = torch.load(out / "final_model.pt")
    assert all(torch.equal(final[k], v) for k, v in result.final_state.items())
    with (out / "updates.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 12


def test_wandb_offline_run_holds_the_logged_metrics(tiny) -> None:
    result = run(
        tiny(
            "logging.wandb.mode=offline",
            "logging.wandb.project=afl-test",
            "federation.max_updates=8",
            "federation.eval_every=4",
            "logging.target_accuracy=0.05",
        )
    )
    wb = read_offline_run(result.output_dir)
    assert wb.finished
    assert wb.group == result.config.experiment
    assert wb.job_type == "afl"
    assert wb.project == "afl-test"
    assert wb.config["federation"]["concurrency"] == 3
    assert wb.config["dataset"]["name"] == "synthetic"
    assert len(wb.history) == len(result.history) == 3
    assert [logged["client_updates"] for logged in wb.history] == [0, 4, 8]
    for logged, row in zip(wb.history, result.history):
        assert logged["client_updates"] == row["client_updates"]
        assert logged["sim_time"] == pytest.approx(row["sim_time"])
        assert logged["test/accuracy"] == pytest.approx(row["test_accuracy"])
        assert logged["test/loss"] == pytest.approx(row["test_loss"])
        # the initial model's row has no updates to average: NaN in metrics.csv, not logged to W&B
        assert logged.get("staleness/mean") == (
            None if row["client_updates"] == 0 else pytest.approx(row["mean_staleness"])
        )
    assert wb.summary["final_test_accuracy"] == pytest.approx(result.summary["final_test_accuracy"])
    # time to target in the summary: the first evaluation at or above it
    first = result.history[0]
    assert result.summary["time_to_target"] == wb.summary["time_to_target"] == first["sim_time"]
    assert result.summary["updates_to_target"] == first["client_updates"] == 0  # 0.05: below the start
    # per evaluation window, the staleness of its updates as a histogram with a bin per value
    updates = result.updates
    for logged, row in zip(wb.history[1:], result.history[1:]):
        window = [
            u["staleness"]
            for u in updates
            if row["client_updates"] - 4 < u["client_updates"] <= row["client_updates"]
        ]
        assert row["staleness"] == window
        bins = logged["staleness/histogram.bins"]
        assert bins == [v - 0.5 for v in range(min(window), max(window) + 2)]
        assert logged["staleness/histogram.values"] == [
            window.count(v) for v in range(min(window), max(window) + 1)
        ]
        assert logged["theory/grad_norm_sq"] == pytest.approx(row["grad_norm_sq"])
    # the partition as a table, once, with the first evaluation
    assert wb.history[0]["partition.nrows"] == 6 and wb.history[0]["partition.ncols"] == 2 + 10
    assert "partition.nrows" not in wb.history[1]


def test_run_restores_the_process_torch_thread_count(tiny) -> None:
    torch.set_num_threads(2)
    result = run(tiny("federation.torch_threads=1", "federation.max_updates=3"))
    assert result.summary["client_updates"] == 3
    assert torch.get_num_threads() == 2


def test_plot_script_reads_finished_runs(tiny, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import plot

    a = run(tiny("federation.max_updates=6", "federation.eval_every=3"))
    b = run(
        tiny(
            "server.aggregator.name=fedbuff",
            "server.aggregator.buffer_size=2",
            "federation.max_updates=6",
            "federation.eval_every=3",
        )
    )
    out = tmp_path / "both.png"
    assert plot.main([str(a.output_dir), str(b.output_dir), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    summary, history, config = load_run(b.output_dir)
    assert summary["algorithm"] == "fedbuff" and len(history) == 3 and config.federation.max_updates == 6
    assert plot.main([str(tmp_path), "--out", str(out)]) == 2  # not a run folder


def test_a_run_that_raises_is_marked_failed_never_complete(tiny) -> None:
    """A user's aggregator (a real plug-in, registered by name) raises on its third arrival."""
    from afl.server.aggregators import AGGREGATORS, Aggregator

    @AGGREGATORS.register("explodes-on-third")
    class Explodes(Aggregator):
        def __init__(self) -> None:
            self.seen = 0

        def on_arrival(self, update, global_state) -> bool:
            self.seen += 1
            if self.seen == 3:
                raise RuntimeError("the third update broke the server")
            return True

    try:
        cfg = tiny("server.aggregator.name=explodes-on-third", "federation.eval_every=1")
        with pytest.raises(RuntimeError, match="third update"):
            run(cfg)
    finally:
        AGGREGATORS.unregister("explodes-on-third")
    out = Path(cfg.output_dir)
    assert (out / "FAILED").read_text() == "RuntimeError: the third update broke the server\n"
    assert not (out / "summary.json").exists()
    assert len((out / "metrics.csv").read_text().splitlines()) == 4  # header + the three evaluations before
    with pytest.raises(FileNotFoundError, match="is a failed run: RuntimeError"):
        load_run(out)


@pytest.mark.parametrize(
    "key", [None, "afl-test-key-0123456789abcdef0123456789abcdef"], ids=["no-key", "key"]
)
def test_wandb_online_without_network_still_completes_and_writes_no_key(
    tiny, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    """``logging.wandb.mode=online`` with no key, or a key and a server that does not answer (a closed port
    on this machine): the run completes with every local file, logged offline, and says how to upload."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # never a real server
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    if key is not None:
        monkeypatch.setenv("WANDB_API_KEY", key)
    with pytest.warns(
        RuntimeWarning, match=r"W&B online failed .* Upload later with: wandb sync .*offline-run-"
    ):
        result = run(tiny("logging.wandb.mode=online", "federation.max_updates=6", "federation.eval_every=3"))
    out = result.output_dir
    assert (out / "summary.json").is_file() and not (out / "FAILED").exists()
    wb = read_offline_run(out)
    assert wb.finished and [r["test/accuracy"] for r in wb.history] == [
        h["test_accuracy"] for h in result.history
    ]
    if key is not None:  # the key is in no file the run wrote
        for path in out.rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path
