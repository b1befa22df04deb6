"""The comparison harness: arms with scoped options, seeds, selection on validation data, the table."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.configs import TINY
from omegaconf import OmegaConf

from afl.config import load_config
from afl.errors import ConfigError
from afl.experiments.compare import (
    ARMS,
    choose,
    compare,
    format_budgets,
    format_table,
    grid_points,
    parse_plan,
    resummarise,
    summarise,
)
from afl.experiments.metrics import final_mean, keep, plateau_budget, time_to_accuracy

SMALL = [*TINY, "federation.max_updates=9", "federation.eval_every=3", "dataset.val_fraction=0.25"]


def _summary(out: str | Path) -> dict:
    return json.loads((Path(out) / "summary.json").read_text())


def _folders(root: Path) -> dict[str, dict[str, Path]]:
    """Run folders of a comparison, from comparison.json (stored relative to the comparison's folder)."""
    saved = json.loads((root / "comparison.json").read_text())
    return {arm: {seed: root / rel for seed, rel in v.items()} for arm, v in saved["runs"].items()}


def test_table_numbers_equal_the_runs_summary_files(tmp_path: Path) -> None:
    result, selection = compare(
        [*SMALL, f"output_dir={tmp_path / 'cmp'}"], ["afl", "afl-nolr", "sync"], [0, 1]
    )
    assert selection is None
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["arm"] for r in saved["table"]] == ["afl", "afl-nolr", "sync"]
    runs = _folders(tmp_path / "cmp")
    for row in saved["table"]:
        folders = runs[row["arm"]]
        assert sorted(folders) == ["0", "1"]
        summaries = [_summary(folders[s]) for s in ("0", "1")]
        assert {s["seed"] for s in summaries} == {0, 1}
        for column, key in (
            ("final_mean_acc", "final_mean_test_accuracy"),
            ("final_acc", "final_test_accuracy"),
            ("best_acc", "best_test_accuracy"),
            ("sim_time", "sim_time"),
        ):
            values = [s[key] for s in summaries]
            assert row[column] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert row[f"{column}_std"] == pytest.approx(statistics.stdev(values), rel=1e-12, abs=1e-15)
    # the arms share partitions, delays and speeds per seed; sync waits for the slowest of each round
    afl, sync = saved["table"][0], saved["table"][2]
    assert afl["mode"] == "async" and sync["algorithm"] == "fedavg"
    assert sync["sim_time"] > afl["sim_time"]
    for seed in ("0", "1"):
        partitions = [(runs[arm][seed] / "partition.json").read_text() for arm in runs]
        assert len(set(partitions)) == 1
    assert (runs["afl"]["0"] / "partition.json").read_text() != partitions[0]  # seed 1's
    # equal time is the fastest arm's budget time per seed; the target is 0.95 × the best mean final
    for seed, t in saved["equal_time"].items():
        assert t == min(_summary(runs[arm][seed])["sim_time"] for arm in runs)
    assert saved["target_accuracy"] == pytest.approx(0.95 * max(r["final_mean_acc"] for r in saved["table"]))
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    ranked = sorted(saved["table"], key=lambda r: -r["final_mean_acc"])  # best headline first
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == [r["arm"] for r in ranked]
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 20_000
    assert format_table(result).splitlines()[0].startswith("| arm | acc (last 5 evals) | last eval |")
    # the table read back from the run folders alone (afl-compare --from) is the same, to the bit
    again = resummarise(tmp_path / "cmp")
    assert again.table == result.table and again.target_accuracy == result.target_accuracy
    at_zero = resummarise(tmp_path / "cmp", target=0.0)
    assert at_zero.table[0]["updates_to_target"] == 0.0  # the initial model's evaluation
    assert at_zero.table[0]["speedup_vs_sync"] is None  # no ratio of two zeros
    assert "warning: the target 0.000 is at or below chance (1/10 = 0.100)" in format_table(at_zero)
    assert ("warning" in format_table(result)) == (result.target_accuracy <= 0.1)


def test_a_stopped_comparison_continues_in_its_folder_from_its_runs_small_files(tmp_path: Path) -> None:
    """Run a comparison, keep its small files elsewhere (``--keep``: what results/ holds under version
    control), read the table back from them, and remove one run, as if stopped before it: the same
    command with that output_dir skips the kept runs, runs the missing one again to the same numbers, and
    writes the same table. Another comparison in that folder is refused."""
    ran = tmp_path / "ran"
    first, _ = compare([*SMALL, "logging.wandb.mode=offline", f"output_dir={ran}"], ["afl", "sync"], [0, 1])
    root = tmp_path / "cmp"
    written = keep(ran, root)  # afl-compare --keep
    assert {p.name for p in written} == {
        "plan.json", "comparison.json", "comparison.md", "comparison.caption.md",
        "summary.json", "metrics.csv", "updates.csv", "config.yaml", "partition.json",
    }  # fmt: skip
    assert len([p for p in written if p.name == "summary.json"]) == 4 and (ran / "comparison.png").exists()
    assert list(ran.rglob("final_model.pt")) and list(ran.rglob("wandb"))  # what was left behind
    for path in root.rglob("*.csv"):
        if path.name == "updates.csv":
            path.unlink()  # not needed to read a run back either
    assert resummarise(root).table == first.table  # afl-compare --from the kept folder
    args = ([*SMALL, "logging.wandb.mode=offline", f"output_dir={root}"], ["afl", "sync"], [0, 1])
    kept = root / "afl" / "seed0" / "summary.json"
    stamp = kept.stat().st_mtime_ns
    gone = json.loads((root / "sync" / "seed1" / "summary.json").read_text())
    shutil.rmtree(root / "sync" / "seed1")
    again, _ = compare(*args)
    assert kept.stat().st_mtime_ns == stamp  # skipped, not run again
    redone = json.loads((root / "sync" / "seed1" / "summary.json").read_text())
    for key in ("final_test_accuracy", "final_mean_test_accuracy", "sim_time", "best_test_accuracy"):
        assert redone[key] == gone[key]  # the same code path on the same machine: bit for bit

    def timeless(table: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.startswith("wall_time")} for row in table]

    assert timeless(again.table) == timeless(first.table)  # wall times aside
    assert json.loads((root / "plan.json").read_text())["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="holds another comparison .its seeds differ"):
        compare(args[0], args[1], [0])
    # stopped part-way (no table yet, one run unfinished): kept without that run, which runs again
    stopped = tmp_path / "stopped"
    shutil.copytree(ran, stopped)
    (stopped / "comparison.json").unlink()
    (stopped / "sync" / "seed1" / "summary.json").unlink()
    part = keep(stopped, tmp_path / "part")
    assert (tmp_path / "part" / "plan.json").is_file() and not (tmp_path / "part" / "sync" / "seed1").exists()
    assert len([p for p in part if p.name == "summary.json"]) == 3
    summary = json.loads((tmp_path / "part" / "afl" / "seed0" / "summary.json").read_text())
    assert summary["output_dir"] == str(tmp_path / "part" / "afl" / "seed0")  # where the copy is
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no comparison to continue"):
        compare([*SMALL, f"output_dir={tmp_path / 'other'}"], ["sync"], [0])


def test_selection_keeps_the_best_validation_point_and_records_it(tmp_path: Path) -> None:
    result, selection = compare(
        [*SMALL, f"output_dir={tmp_path / 'cmp'}"],
        ["afl", "sync"],
        [0],
        grid=["client.lr=0.0003,0.01", "server.aggregator.server_lr=0.3,0.6"],
        select_seeds=[3],
    )
    saved = json.loads((tmp_path / "cmp" / "selection.json").read_text())
    assert saved == json.loads(json.dumps(selection.to_json()))
    assert len(saved["points"]["afl"]) == 4 and len(saved["points"]["sync"]) == 2  # sync has no server_lr
    for arm, points in saved["points"].items():
        # the choice is reproducible from the recorded validation numbers alone
        best = max(points, key=lambda p: statistics.fmean(p["val_accuracy"].values()))
        assert saved["chosen"][arm] == best["overrides"] == choose(points)
        for p in points:  # recorded numbers are the selection runs' own summaries
            label = ",".join(
                o.replace("server.aggregator.", "").replace("client.", "") for o in p["overrides"]
            )
            summary = _summary(tmp_path / "cmp" / "select" / arm / label / "seed3")
            assert summary["final_val_accuracy"] == p["val_accuracy"]["3"]
            assert summary["val_samples"] == 120  # 25% of the 480 training samples, never the test set
            # the model a practitioner would keep: the evaluation with the best validation accuracy
            with (tmp_path / "cmp" / "select" / arm / label / "seed3" / "metrics.csv").open() as f:
                rows = list(csv.DictReader(f))
            kept = max(rows, key=lambda r: float(r["val_accuracy"]))  # the first of equals, as max keeps
            assert summary["val_selected_update"] == int(kept["client_updates"])
            assert summary["val_selected_test_accuracy"] == float(kept["test_accuracy"])
        # and the comparison ran the arm with it
        cfg = OmegaConf.load(Path(result.runs[arm][0]["output_dir"]) / "config.yaml")
        chosen = dict(o.split("=") for o in saved["chosen"][arm])
        assert cfg.client.lr == float(chosen["client.lr"])


def test_a_diverging_grid_point_is_recorded_and_never_chosen(tmp_path: Path) -> None:
    """γ0 = 1e30 gives every client non-finite weights, so every update is rejected: that point is a result
    of the grid (recorded with why), not the end of the selection."""
    _, selection = compare(
        [*SMALL, "federation.max_updates=6", f"output_dir={tmp_path / 'cmp'}"],
        ["afl"],
        [0],
        grid=["client.lr=1e30,0.003"],
    )
    diverged, fine = selection.points["afl"]
    assert diverged["mean_val_accuracy"] is None and diverged["val_accuracy"] == {"0": None}
    assert "every one of the 6 client updates was rejected" in diverged["diverged"]["0"]
    assert fine["mean_val_accuracy"] > 0 and "diverged" not in fine
    assert selection.chosen["afl"] == ["client.lr=0.003"]
    assert choose([diverged, {**fine, "mean_val_accuracy": 0.0}]) == fine["overrides"]  # even at 0


def test_selection_needs_a_validation_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.val_fraction: selection needs a validation split"):
        compare([*TINY, f"output_dir={tmp_path / 'c'}"], ["sync"], [0], grid=["client.lr=0.001,0.01"])


def test_arm_options_are_scoped_to_their_arm(tmp_path: Path) -> None:
    plan = parse_plan(
        ["experiment=demo", "client.lr=0.5", "afl:client.lr=0.7", "afl:server.aggregator.server_lr=0.3"],
        ["afl", "afl-noweight", "sync"],
    )
    afl, noweight, sync = (load_config(plan.arm_overrides(a)) for a in ("afl", "afl-noweight", "sync"))
    assert afl.client.lr == 0.7 and afl.server.aggregator.server_lr == 0.3
    assert noweight.client.lr == 0.5 and noweight.server.aggregator.staleness.name == "constant"
    assert noweight.server.lr_schedule.name == "paper"
    assert (
        sync.client.lr == 0.5 and sync.federation.mode == "sync" and "server_lr" not in sync.server.aggregator
    )
    # an option for one aggregator, given to every arm, breaks the arms without it: checked before any run
    with pytest.raises(
        ConfigError, match="server.aggregator.server_lr: not an option of aggregator 'fedavg'"
    ):
        compare([*TINY, "server.aggregator.server_lr=0.3"], ["afl", "sync"], [0])
    # a value only its component judges, in the last arm: refused before the first arm's run, nothing written
    out = tmp_path / "refused"
    with pytest.raises(ConfigError, match="server.aggregator.buffer_size: must be >= 1, got 0"):
        compare(
            [*TINY, f"output_dir={out}", "fedbuff:server.aggregator.buffer_size=0"], ["afl", "fedbuff"], [0]
        )
    assert not out.exists()
    # without command-line settings the preset's recorded choices (compare.arms) reach their arm only
    recorded = parse_plan(["experiment=demo"], ["afl", "sync"])
    afl, sync = (load_config(recorded.arm_overrides(a)) for a in ("afl", "sync"))
    chosen = OmegaConf.to_container(load_config(["experiment=demo"]).compare.arms)
    for cfg, arm in ((afl, "afl"), (sync, "sync")):
        for override in chosen[arm]:
            key, value = override.split("=")
            assert OmegaConf.select(cfg, key) == float(value), override
    assert "server_lr" not in sync.server.aggregator
    with pytest.raises(ConfigError, match="arm 'fedbuff' is not in this comparison"):
        parse_plan(["fedbuff:server.aggregator.buffer_size=2"], ["afl", "sync"])
    with pytest.raises(ConfigError, match="--arms: unknown arm 'afl-const'"):
        parse_plan([], ["afl-const"])


def test_grid_axes_apply_to_the_arms_that_have_them() -> None:
    plan = parse_plan(TINY, ["afl", "fedasync", "sync"])
    grid = [
        "client.lr=1e-3,1e-2",
        "server.aggregator.server_lr=0.1,0.2,0.4",
        "fedasync:server.aggregator.alpha=0.3,0.6",
    ]
    assert len(grid_points(plan, "afl", grid)) == 6
    assert grid_points(plan, "sync", grid) == [["client.lr=1e-3"], ["client.lr=1e-2"]]
    assert ["client.lr=1e-2", "server.aggregator.alpha=0.6"] in grid_points(plan, "fedasync", grid)
    assert len(grid_points(plan, "fedasync", grid)) == 4
    with pytest.raises(ConfigError, match="expected key=v1,v2"):
        grid_points(plan, "afl", ["client.lr"])


def _history(points: list[tuple[float, int, float]]) -> list[dict]:
    return [{"sim_time": t, "client_updates": u, "test_accuracy": a} for t, u, a in points]


def _runs(arm_histories: dict[str, list[list[tuple[float, int, float]]]], window: int | None = 1) -> dict:
    """Finished runs of these histories; their headline the mean of the last ``window`` evaluations (1: the
    last alone, as these hand computations assume), or, with None, left to the comparison to compute."""
    runs: dict = {}
    for arm, seeds in arm_histories.items():
        runs[arm] = {}
        for seed, points in enumerate(seeds):
            h = _history(points)
            headline = {} if window is None else {
                "final_mean_test_accuracy": final_mean(h, window)[0],
                "final_window": {"evaluations": window},
            }  # fmt: skip
            runs[arm][seed] = {
                "history": h,
                "summary": {
                    **headline,
                    "algorithm": arm,
                    "mode": "sync" if arm == "sync" else "async",
                    "final_test_accuracy": h[-1]["test_accuracy"],
                    "best_test_accuracy": max(r["test_accuracy"] for r in h),
                    "sim_time": h[-1]["sim_time"],
                    "mean_staleness": 0.0,
                    "wall_time_s": 1.0,
                },
                "output_dir": "",
            }
    return runs


def test_summary_time_to_target_ratio_and_equal_time_by_hand(tmp_path: Path) -> None:
    runs = _runs(
        {
            "afl": [
                [(10, 5, 0.5), (20, 10, 0.8), (30, 15, 0.85)],
                [(12, 5, 0.6), (24, 10, 0.9), (36, 15, 0.9)],
            ],
            "sync": [
                [(30, 5, 0.7), (60, 10, 0.8), (90, 15, 0.9)],
                [(40, 5, 0.5), (80, 10, 0.7), (120, 15, 0.8)],
            ],
        }
    )
    c = summarise(runs, tmp_path, target=0.8)
    afl, sync = c.table
    assert afl["time_to_target"] == pytest.approx(22.0) and afl["time_to_target_std"] == pytest.approx(
        2**0.5 * 2
    )
    assert sync["time_to_target"] == pytest.approx(90.0)  # 60 and 120 s
    assert afl["speedup_vs_sync"] == pytest.approx(90 / 22)
    assert c.equal_time == {0: 30.0, 1: 36.0}
    # at 30 s sync has seed 0's first evaluation (0.7); at 36 s seed 1 has none yet: not counted
    assert sync["acc_at_equal_time"] == pytest.approx(0.7) and afl["acc_at_equal_time"] == pytest.approx(
        0.875
    )
    assert afl["updates_to_target"] == pytest.approx(10.0)
    rows = {line.split("|")[1].strip(): line for line in format_table(c).splitlines()[2:4]}
    assert "| 0.700 (1/2 seeds) |" in rows["sync"] and "seeds)" not in rows["afl"]
    # a default target: 0.95 × the best mean final accuracy (sync 0.85, afl 0.875)
    assert summarise(runs, tmp_path).target_accuracy == pytest.approx(0.95 * 0.875)
    # an arm that misses the target on one seed gets no ratio
    missing = summarise(runs, tmp_path, target=0.88)
    assert missing.table[1]["time_to_target_reached"] == 1 and missing.table[0]["speedup_vs_sync"] is None
    assert "(1/2 reached)" in format_table(missing)


def test_an_arm_that_crossed_the_target_and_ended_below_it_gets_no_speedup(tmp_path: Path) -> None:
    """The issue's case: an arm crossing the target once, ending below it (0.091 vs 0.115), was credited
    a 1.81× speed-up; and sync's "updates to target" showed 50 without "(1/2 reached)"."""
    runs = _runs(
        {
            "afl": [[(10, 50, 0.05), (20, 100, 0.12), (30, 150, 0.091)], [(10, 50, 0.13), (20, 100, 0.2)]],
            "sync": [[(30, 50, 0.12), (60, 100, 0.2)], [(30, 50, 0.05), (60, 100, 0.08)]],
        }
    )
    c = summarise(runs, tmp_path, target=0.115)
    afl, sync = c.table
    assert afl["time_to_target_reached"] == 2 and afl["ends_at_target"] == 1  # seed 0 fell back under
    assert afl["speedup_vs_sync"] is None and sync["speedup_vs_sync"] is None
    rows = {line.split("|")[1].strip(): line.split("|") for line in format_table(c).splitlines()[2:4]}
    assert rows["afl"][7].strip() == "— (ends below: 1/2)"
    assert rows["sync"][7].strip() == "—"  # seed 1 never reached it: not a seed that "ends below"
    assert rows["sync"][9].strip() == "50 (1/2 reached)"  # updates to target: over the seeds that reached it
    assert rows["afl"][9].strip() == "75 ± 35"
    # the same arm ending above the target on both seeds is credited
    runs["afl"][0]["summary"]["final_mean_test_accuracy"] = 0.2
    sync_seed1 = runs["sync"][1]
    sync_seed1["history"][-1]["test_accuracy"] = sync_seed1["summary"]["final_mean_test_accuracy"] = 0.3
    both = summarise(runs, tmp_path, target=0.115)
    assert both.table[0]["speedup_vs_sync"] == pytest.approx(45 / 15)


def test_one_outlying_last_evaluation_moves_neither_the_headline_nor_the_ranking(tmp_path: Path) -> None:
    """Two arms level on their last five evaluations, one of them with an outlying last one (0.60 after
    0.85, 0.86, 0.84, 0.85): the last evaluation alone would rank it far below, the headline (the mean of
    the last 5) moves by a fifth of the dip and keeps the order of a steady arm within that."""
    steady = [(t, 10 * t, a) for t, a in [(1, 0.5), (2, 0.80), (3, 0.80), (4, 0.80), (5, 0.80), (6, 0.80)]]
    dipping = [(t, 10 * t, a) for t, a in [(1, 0.5), (2, 0.85), (3, 0.86), (4, 0.84), (5, 0.85), (6, 0.60)]]
    c = summarise(_runs({"afl": [dipping], "sync": [steady]}, window=None), tmp_path, target=0.7)
    afl, sync = c.table
    assert afl["final_acc"] == pytest.approx(0.60) and sync["final_acc"] == pytest.approx(0.80)
    assert afl["final_mean_acc"] == pytest.approx((0.85 + 0.86 + 0.84 + 0.85 + 0.60) / 5)  # 0.80
    assert sync["final_mean_acc"] == pytest.approx(0.80)
    steady_last = [*dipping[:-1], (6, 60, 0.85)]
    without = summarise(_runs({"afl": [steady_last], "sync": [steady]}, window=None), tmp_path, target=0.7)
    assert without.table[0]["final_mean_acc"] - afl["final_mean_acc"] == pytest.approx(0.25 / 5)
    assert afl["ends_at_target"] == 1  # judged on the headline: it ends at the target despite the dip
    assert [line.split("|")[1].strip() for line in format_table(without).splitlines()[2:4]] == ["afl", "sync"]


def test_paired_differences_separate_what_unpaired_intervals_cannot(tmp_path: Path) -> None:
    """Seeds that move both arms together (0.60, 0.80, 0.90 for sync; afl 0.02 above on each): the two
    arms' own 95% intervals overlap almost entirely, while the paired difference is +0.02 on every seed,
    an interval of width 0 that excludes 0: "above". A third arm that is 0.05 above on one seed and 0.05
    below on another is a tie. The intervals are Student's t by hand: t(0.975, 2) = 4.303."""
    sync_ends, gaps = [0.60, 0.80, 0.90], {"afl": [0.02, 0.02, 0.02], "fedbuff": [0.05, -0.05, 0.0]}
    histories = {"sync": [[(10, 5, 0.1), (20, 10, a)] for a in sync_ends]}
    for arm, gap in gaps.items():
        histories[arm] = [[(5, 5, 0.1), (10, 10, a + g)] for a, g in zip(sync_ends, gap, strict=True)]
    c = summarise(_runs(histories), tmp_path, target=0.5)
    rows = {r["arm"]: r for r in c.table}
    std = statistics.stdev(sync_ends)
    assert rows["sync"]["final_mean_acc_ci"] == pytest.approx(4.302653 * std / 3**0.5, rel=1e-6)
    assert rows["afl"]["final_mean_acc_ci"] == pytest.approx(rows["sync"]["final_mean_acc_ci"])
    assert rows["afl"]["diff_vs_sync"] == pytest.approx(0.02) and rows["afl"][
        "diff_vs_sync_ci"
    ] == pytest.approx(0)
    assert rows["afl"]["verdict_vs_sync"] == "above" and rows["afl"]["best_arm"] == "afl"
    assert rows["fedbuff"]["diff_vs_sync"] == pytest.approx(0.0, abs=1e-12)
    assert rows["fedbuff"]["diff_vs_sync_ci"] == pytest.approx(4.302653 * 0.05 / 3**0.5, rel=1e-6)
    assert rows["fedbuff"]["verdict_vs_sync"] == "tie"
    assert rows["sync"]["verdict_vs_best"] == "below" and rows["sync"]["diff_vs_best"] == pytest.approx(-0.02)
    assert rows["sync"]["verdict_vs_sync"] == "—" and rows["afl"]["verdict_vs_best"] == "—"
    text = format_table(c)
    header = (
        "| arm | headline, 95% interval | val. rise, last fifth | arm − sync, paired | vs sync | arm − afl,"
    )
    assert header + " paired | vs afl |" in text
    line = next(x for x in text.splitlines() if x.startswith("| fedbuff | ") and "[" in x)
    assert line.split("|")[5].strip() == "tie" and line.split("|")[7].strip() == "tie"  # -0.02 ± 0.12
    assert "-0.020 [" in line.split("|")[6] and line.split("|")[3].strip() == "—"  # 2 evaluations: no rise
    # one seed: no interval, no verdict
    single = summarise(_runs({a: h[:1] for a, h in histories.items()}), tmp_path, target=0.5)
    assert {r["verdict_vs_sync"] for r in single.table} == {"—"}
    assert all(r["final_mean_acc_ci"] is None for r in single.table)


def test_the_table_says_which_arms_were_still_rising_when_the_budget_ended(tmp_path: Path) -> None:
    """20 evaluations: sync levels off at 0.8 by update 80 (no rise over the last fifth), afl climbs 0.01
    an evaluation to the end: the mean of its last 5 evaluations minus the mean of the 5 up to update 160
    (80% of 200) is 4 evaluations' climb, +0.04: "rising"."""

    def run(acc) -> list[tuple[float, int, float]]:
        return [(float(i), 10 * i, acc(i)) for i in range(21)]

    runs = _runs({"afl": [run(lambda i: 0.01 * i + 0.5)] * 2, "sync": [run(lambda i: min(0.8, 0.1 * i))] * 2})
    for per_seed in runs.values():
        for r in per_seed.values():
            for row in r["history"]:
                row["val_accuracy"] = row["test_accuracy"]
    c = summarise(runs, tmp_path, target=0.6)
    rows = {r["arm"]: r for r in c.table}
    assert rows["afl"]["late_rise"] == pytest.approx(0.04) and rows["sync"]["late_rise"] == pytest.approx(0.0)
    text = format_table(c)
    cells = {
        line.split(" | ")[0][2:]: line.split(" | ")[2] for line in text.split("\n\n")[2].splitlines()[2:]
    }
    assert cells == {"sync": "+0.000", "afl": "+0.040 (rising)"}


def test_the_plateau_rule_cuts_long_runs_at_each_budget_and_picks_where_sync_levels_off() -> None:
    """sync climbs 0.01 an evaluation up to update 80, then stays at 0.58: cut at 100 it still rises over
    its last fifth, cut at 150 and 200 it is flat; afl climbs to the end. The rule: sync's first budget
    under 0.005 and again at the next: 150."""

    def run(acc) -> list[tuple[float, int, float]]:
        return [(float(i), 10 * i, acc(i)) for i in range(21)]

    runs = _runs(
        {"afl": [run(lambda i: 0.2 + 0.01 * i)] * 2, "sync": [run(lambda i: 0.5 + 0.01 * min(i, 8))] * 2}
    )
    for per_seed in runs.values():
        for r in per_seed.values():
            for row in r["history"]:
                row["val_accuracy"] = row["test_accuracy"]
    text = format_budgets(runs, [100, 150, 200])
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in text.splitlines()[2:4]}
    # cut at 100: evaluations 1-10; the last 5 (6-10: 0.574) minus the 5 up to update 80 (4-8: 0.56)
    assert rows["sync"] == ["0.574 (+0.014)", "0.580 (+0.000)", "0.580 (+0.000)", "150 |"]
    # afl cut at 200: the mean of evaluations 16-20 (0.38) minus that of 12-16 (0.34)
    assert rows["afl"] == ["0.280 (+0.020)", "0.330 (+0.030)", "0.380 (+0.040)", "not reached |"]
    assert text.endswith("and again at the next budget here, for sync: **150 client updates**.")
    assert plateau_budget({100: 0.02, 150: 0.0, 200: 0.01}) is None  # levelled, then rose again
    assert plateau_budget({100: 0.02, 150: 0.0}) is None  # the largest budget alone: not confirmed
    assert plateau_budget({100: None, 150: 0.001, 200: 0.004, 250: 0.02}) == 150  # a later rise: still 150


def test_time_to_accuracy() -> None:
    history = _history([(1.0, 5, 0.2), (2.5, 10, 0.6), (4.0, 15, 0.5)])
    assert time_to_accuracy(history, 0.55) == 2.5
    assert time_to_accuracy(history, 0.55, "client_updates") == 10
    assert (
        type(time_to_accuracy(history, 0.55, "client_updates")) is int
    )  # a count (summary.json: 10, not 10.0)
    assert time_to_accuracy(history, 0.9) is None


def test_compare_script_exits_2_on_bad_input(tmp_path: Path, capsys) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import compare as script

    assert script.main(["--arms", "afl,nope", f"output_dir={tmp_path / 'x'}"]) == 2
    expected = (
        f"error: --arms: unknown arm 'nope'; allowed: {', '.join(ARMS)} (or define one in compare.arms)"
    )
    assert capsys.readouterr().err.strip() == expected
    assert not (tmp_path / "x").exists()


def test_plots_leave_matplotlib_global_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    from afl.experiments.plots import plot_bands

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a user's (notebook's) choice: a library that forces Agg would change it
    try:
        histories = [_history([(1.0, 5, 0.2), (2.0, 10, 0.5)]), _history([(1.5, 5, 0.3), (2.5, 10, 0.6)])]
        plot_bands({"afl": histories}, tmp_path / "p.png", title="t")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_band_panels_give_a_label_one_colour_in_every_row(tmp_path: Path) -> None:
    """A sweep's curves with axes: a row per setting, each arm in the same colour in every row."""
    from matplotlib.colors import to_hex

    from afl.experiments.plots import plot_band_panels

    afl = [_history([(1.0, 5, 0.2), (2.0, 10, 0.5)]), _history([(1.0, 5, 0.4), (2.0, 10, 0.7)])]
    sync = [_history([(2.0, 5, 0.1), (4.0, 10, 0.3)])]
    fig = plot_band_panels(
        {"J=5": {"afl": afl, "sync": sync}, "J=20": {"sync": sync, "afl": afl}}, tmp_path / "p.png"
    )
    rows = [fig.axes[0:2], fig.axes[2:4]]
    assert [row[0].get_title(loc="left") for row in rows] == ["J=5", "J=20"]
    colours = [
        {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()} for row in rows for ax in row
    ]
    assert all(c == colours[0] for c in colours) and len(set(colours[0].values())) == 2
    by_updates = {line.get_label(): line for line in rows[1][1].get_lines()}
    assert list(by_updates["afl (2 seeds)"].get_xdata()) == [5.0, 10.0]
    assert list(by_updates["afl (2 seeds)"].get_ydata()) == pytest.approx([0.3, 0.6])  # the seeds' mean
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["afl (2 seeds)", "sync"]
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_reference_accuracies_are_dashed_lines_on_both_panels(tmp_path: Path) -> None:
    """``afl-plot --reference 0.9198:...`` (e.g. what the authors report beside a shortened run)."""
    from afl.cli.plot import _reference
    from afl.experiments.plots import plot_curves

    assert _reference("0.9198:the authors, 500 rounds") == (0.9198, "the authors, 500 rounds")
    assert _reference("0.5") == (0.5, "0.5")
    with pytest.raises(argparse.ArgumentTypeError, match="expected VALUE"):
        _reference("high:x")
    history = _history([(1.0, 5, 0.2), (2.0, 10, 0.5)])
    fig = plot_curves({"afl": history}, tmp_path / "p.png", references=[(0.9198, "reported")])
    for ax in fig.axes:
        dashed = [line for line in ax.get_lines() if line.get_label() == "reported"]
        assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [0.9198, 0.9198]
        assert dashed[0].get_linestyle() == "--"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["afl", "reported"]
