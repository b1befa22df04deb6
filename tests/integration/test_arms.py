"""The arm as the unit of every surface: single runs compose what comparisons run, defaults that learn,
a rule named on the command line runs its own arm, and W&B tells the compared arms apart."""

from __future__ import annotations

import csv
import fnmatch
import json
from pathlib import Path

import pytest
from helpers.configs import QUIET, TINY
from helpers.runs import assert_same_outputs, updates
from helpers.wandb_offline import find_run_log, inspect_records, read_offline_run
from omegaconf import OmegaConf

from afl.arms import ARMS, DEFAULT_ARMS
from afl.cli import sync as sync_cli
from afl.cli import train as train_cli
from afl.config import load_config
from afl.experiments.compare import compare, parse_plan


def _train(capsys: pytest.CaptureFixture[str], *overrides: str) -> dict:
    """``afl-train`` itself (its ``main``), the printed summary back."""
    assert train_cli.main(list(overrides)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arm", list(ARMS))
def test_afl_train_composes_what_afl_compare_runs_for_every_arm(arm: str) -> None:
    single = load_config(["experiment=demo", f"arm={arm}", "seed=1"])
    plan = parse_plan(["experiment=demo"], [arm], [1])
    assert single == load_config(plan.arm_overrides(arm, ["seed=1"]))
    assert single.arm == arm
    # the arm's rule, then the preset's selected step sizes for it, are what the run has
    for item in [*ARMS[arm].overrides, *single.compare.arms.get(arm, [])]:
        key = item.partition("=")[0]
        assert OmegaConf.select(single, key) == OmegaConf.select(OmegaConf.from_dotlist([item]), key), item


def test_every_built_in_arm_has_selected_step_sizes_on_demo_and_fmnist_small() -> None:
    for preset in ("demo", "fmnist_small"):
        recorded = load_config([f"experiment={preset}"]).compare.arms
        missing = [arm for arm in ARMS if arm not in recorded]
        assert not missing, f"{preset}: no selected step sizes for {missing}"
        assert all(any(o.startswith("client.lr=") for o in recorded[a]) for a in ARMS), preset


def test_a_short_run_of_afl_train_equals_its_arm_in_afl_compare(tmp_path: Path, capsys) -> None:
    short = ["federation.max_updates=20", "federation.eval_every=10", *QUIET]
    _train(capsys, "experiment=demo", "arm=afl-later", "seed=1", *short, f"output_dir={tmp_path / 'train'}")
    compare(["experiment=demo", *short, f"output_dir={tmp_path / 'compare'}"], ["afl-later"], [1])
    assert_same_outputs(tmp_path / "train", tmp_path / "compare" / "afl-later" / "seed1")


def test_afl_train_without_arguments_learns(tmp_path: Path, monkeypatch, capsys) -> None:
    """The default run (the offline digits, its default arm and budget) ends well above chance: it ended at
    0.077 (chance 0.10) when the defaults were our reading at γ0 = 1e-3, I = 1."""
    monkeypatch.chdir(tmp_path)
    summary = _train(capsys, *QUIET)
    assert summary["arm"] == load_config([]).arm and summary["client_updates"] == 300
    assert summary["final_test_accuracy"] >= 0.85, summary["final_test_accuracy"]
    assert Path(summary["output_dir"]).name.startswith(f"{summary['arm']}-seed0-")


def test_naming_a_rule_runs_its_own_arm(tmp_path: Path, capsys) -> None:
    """``server.aggregator.name=fedbuff`` is plain FedBuff: a constant client rate and no delay factor
    (it kept the paper's decaying rate and delay factor, lr 0.003 → 0.00113, delta_scale 0.909 at τ = 1)."""
    out = tmp_path / "fedbuff"
    summary = _train(capsys, *TINY, "server.aggregator.name=fedbuff", f"output_dir={out}")
    assert summary["arm"] == "fedbuff" and summary["algorithm"] == "fedbuff"
    rows = updates(out)
    assert {float(r["lr"]) for r in rows} == {0.003}  # TINY's client.lr, at every update
    assert max(int(r["staleness"]) for r in rows) >= 1  # stale updates were there to be discounted
    cfg = load_config([*TINY, "server.aggregator.name=fedbuff"])
    assert cfg.server.lr_schedule.name == "constant"
    assert load_config([*TINY, "federation.mode=sync"]).arm == "sync"
    assert load_config([*TINY, "server.aggregator.name=fedavg"]).arm == "sync"


@pytest.mark.parametrize(("rule", "floor"), [("ca2fl", 0.35), ("fadas", 0.15), ("dc", 0.5)])
def test_the_compensation_rules_learn_on_the_demo(tmp_path: Path, capsys, rule: str, floor: float) -> None:
    """These commands (150 updates, seed 4) ended at 0.14 / 0.07 / 0.16: the single run ignored the step
    sizes selected for each rule. At their own they reach 0.53 / 0.20 / 0.78 here (best of the run; FADAS's
    AMSGrad server step, selected at η = 0.003, learns slowly on the demo: 0.42 validation at 300 updates).
    The floors leave room for another CPU kind's rounding."""
    summary = _train(
        capsys,
        "experiment=demo",
        f"server.aggregator.name={rule}",
        "federation.max_updates=150",
        "seed=4",
        *QUIET,
        f"output_dir={tmp_path / rule}",
    )
    assert summary["arm"] == rule
    assert summary["best_test_accuracy"] >= floor, summary["best_test_accuracy"]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory):
    """A 2-arm × 2-seed comparison with offline W&B runs."""
    root = tmp_path_factory.mktemp("compare") / "c"
    tiny = [o for o in TINY if not o.startswith("logging.wandb")]
    result, _ = compare([*tiny, "logging.wandb.mode=offline", f"output_dir={root}"], ["afl", "sync"], [0, 1])
    return result


def test_wandb_tells_the_compared_arms_apart(comparison) -> None:
    root = comparison.output_dir
    group = json.loads((root / "comparison.json").read_text())["wandb"]["group"]
    assert group.startswith("default-c-") and group != "default"
    for arm in ("afl", "sync"):
        for seed in (0, 1):
            run = read_offline_run(root / arm / f"seed{seed}")
            assert (run.job_type, run.name, run.group) == (arm, f"{arm}-seed{seed}", group)
            assert {f"compare:{group}", "experiment:default"} <= set(run.tags)
            assert ("reading:ours" in run.tags) == (arm == "afl")
            assert run.config["arm"] == arm
            summary = json.loads((root / arm / f"seed{seed}" / "summary.json").read_text())
            assert summary["arm"] == arm and summary["wandb_run_id"] == run.run_id


def test_wandb_holds_the_target_and_each_arms_time_to_it(comparison) -> None:
    """The comparison's own W&B run, in its runs' group: the target (decided after the runs), the table,
    and per arm and run the time and updates to the target."""
    root = comparison.output_dir
    saved = json.loads((root / "comparison.json").read_text())
    run = read_offline_run(root)
    assert (run.job_type, run.name, run.group) == ("comparison", "comparison", saved["wandb"]["group"])
    assert run.run_id == saved["wandb"]["run_id"]
    assert run.summary["target_accuracy"] == pytest.approx(comparison.target_accuracy)
    for row in comparison.table:
        for key in ("time_to_target", "updates_to_target", "final_acc", "speedup_vs_sync"):
            value = run.summary.get(f"{row['arm']}/{key}")
            assert value is None if row[key] is None else value == pytest.approx(row[key])
    assert run.summary.get("afl/final_acc") is not None
    assert run.history[0]["results.nrows"] == 2 and run.history[0]["runs.nrows"] == 4


def test_every_logged_key_is_defined_against_client_updates(comparison) -> None:
    log = find_run_log(comparison.output_dir / "afl" / "seed0")
    records, _ = inspect_records(log)
    defined = [r["metric"] for r in records if r["type"] == "metric"]
    stepped = [m.get("name") or m["glob_name"] for m in defined if m.get("step_metric") == "client_updates"]
    run = read_offline_run(log)
    keys = {k.split(".")[0] for row in run.history for k in row if not k.startswith("_")}
    keys -= {"client_updates", "partition"}  # the x-axis itself; the partition table (row 0)
    assert {"server/lr", "updates/dropped", "progress/version", "sim_time", "test/accuracy"} <= keys
    undefined = [k for k in keys if not any(fnmatch.fnmatchcase(k, pattern) for pattern in stepped)]
    assert not undefined


def test_afl_sync_finds_every_offline_run_of_a_comparison(comparison, capsys) -> None:
    """One command, no shell glob: the four runs and the comparison's own run."""
    assert sync_cli.main([str(comparison.output_dir), "--dry-run"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "offline-run-" in line]
    assert len(listed) == 5 and all(Path(line).is_dir() for line in listed)
    assert sync_cli.main([str(comparison.output_dir / "nothing-here")]) == 2


def test_metrics_csv_leaves_missing_values_empty(comparison) -> None:
    with (comparison.output_dir / "afl" / "seed0" / "metrics.csv").open() as f:
        first = next(csv.DictReader(f))
    assert first["client_updates"] == "0" and first["mean_staleness"] == "" and first["train_loss"] == ""
    assert "nan" not in (comparison.output_dir / "afl" / "seed0" / "metrics.csv").read_text()


def test_default_arms_are_the_readings_and_sync() -> None:
    assert DEFAULT_ARMS == ("afl", "afl-released", "afl-later", "sync")
    assert {ARMS[a].reading for a in DEFAULT_ARMS} == {"ours", "released", "later", None}


def test_the_headline_is_the_mean_of_the_last_evaluations_and_says_its_window(comparison) -> None:
    """summary.json's headline accuracy: the mean test accuracy of the last ``logging.final_window``
    evaluations after update 0 (here all three: 4, 8, 12), with the window it covers; the last evaluation
    alone stays ``final_test_accuracy``."""
    out = comparison.output_dir / "afl" / "seed1"
    summary = json.loads((out / "summary.json").read_text())
    with (out / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["client_updates"]) > 0][-5:]
    assert [int(r["client_updates"]) for r in rows] == [4, 8, 12]
    assert summary["final_mean_test_accuracy"] == pytest.approx(
        sum(float(r["test_accuracy"]) for r in rows) / 3
    )
    assert summary["final_window"] == {"evaluations": 5, "from_update": 4, "to_update": 12}
    assert summary["final_test_accuracy"] == float(rows[-1]["test_accuracy"])
    assert summary["val_selected_test_accuracy"] is None  # no validation split: nothing chosen on it
    assert read_offline_run(out).summary["final_mean_test_accuracy"] == summary["final_mean_test_accuracy"]
