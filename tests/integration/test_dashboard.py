"""``afl-dashboard``: the AFL-vs-sync W&B dashboard of a real tiny comparison (two arms, two seeds, logged to
offline W&B runs), checked in its specification: the real wandb-workspaces objects, no W&B account, no
network. The runs' W&B histories are read back with wandb's own reader (:mod:`helpers.wandb_offline`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import TINY
from helpers.processes import cli
from helpers.wandb_offline import OfflineRun, read_offline_run

from afl.experiments.dashboard import PANELS, build_workspace, load_source, logged_by, make_dashboard

ARMS = ["afl", "sync"]
#: Each panel of the dashboard: x, y, log scale, kind.
EXPECTED = {
    "test accuracy against simulated time": ("sim_time", ["test/accuracy"], False, "line"),
    "test accuracy against client updates": ("client_updates", ["test/accuracy"], False, "line"),
    "test loss": ("client_updates", ["test/loss"], False, "line"),
    "‖∇L(θ)‖² of the global model (log scale)": ("client_updates", ["theory/grad_norm_sq"], True, "line"),
    "server learning rate (rules with a server step)": ("client_updates", ["server/lr"], False, "line"),
    "staleness τ of each evaluation window": ("client_updates", ["staleness/histogram"], False, "histogram"),
    "results: one row per arm": (None, ["results"], False, "table"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished comparison, afl and sync on seeds 0 and 1, with offline W&B runs (about 10 s)."""
    from afl.experiments.compare import compare

    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:  # W&B local and quiet, as the autouse fixture does per test
        for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_ENTITY"):
            mp.delenv(name, raising=False)
        mp.setenv("WANDB_SILENT", "true")
        for name in ("CACHE", "CONFIG", "DATA"):
            mp.setenv(f"WANDB_{name}_DIR", str(root / "wandb_home" / name.lower()))
        overrides = [o for o in TINY if not o.startswith("logging.wandb.mode")]
        compare(
            [
                *overrides,
                "federation.max_updates=10",
                "federation.eval_every=5",
                f"output_dir={root / 'cmp'}",
            ],
            arms=ARMS,
            seeds=[0, 1],
        )
    yield root / "cmp"


@pytest.fixture(scope="module")
def spec(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The dashboard built offline: its specification file."""
    out = tmp_path_factory.mktemp("spec") / "dashboard.json"
    made = make_dashboard(folder, out=out)
    assert made.not_saved and not made.urls
    assert made.preview_path == out.with_suffix(".png") and made.preview_path.stat().st_size > 10_000
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def wandb_runs(folder: Path) -> dict[str, list[OfflineRun]]:
    """Every training run's W&B run, read back from its offline files, per arm (its folder's)."""
    saved = json.loads((folder / "comparison.json").read_text())
    return {
        arm: [read_offline_run(folder / rel) for rel in seeds.values()]
        for arm, seeds in saved["runs"].items()
    }


def _panels(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels of the workspace, as serialised: (section name, panel) in order."""
    sections = spec["workspace"]["spec"]["section"]["panelBankConfig"]["sections"]
    return [panel for section in sections for panel in section["panels"]]


def _has(run: OfflineRun, key: str) -> bool:
    """Whether any history row of the run has ``key`` (the reader flattens a histogram into ``key.bins``,
    ``key.values``, ...)."""
    return any(key in row or any(k.startswith(f"{key}.") for k in row) for row in run.history)


def test_the_specification_names_every_panel_with_its_keys_and_scale(spec: dict[str, Any]) -> None:
    summary = {p["title"]: (p["x"], p["y"], p["log_y"], p["kind"]) for p in spec["panels"]}
    assert summary == EXPECTED
    assert spec["omitted"] == []
    # the workspace as wandb-workspaces serialises it says the same, panel by panel
    lines = [p for p in _panels(spec) if p["viewType"] == "Run History Line Plot"]
    drawn = {p["config"]["chartTitle"]: p["config"] for p in lines}
    for title, (x, y, log_y, kind) in EXPECTED.items():
        if kind == "table":
            continue
        assert drawn[title]["xAxis"] == x and drawn[title]["metrics"] == y, title
        assert drawn[title].get("yLogScale", False) is log_y, title
    (table,) = [p for p in _panels(spec) if p["viewType"] == "Weave"]
    assert json.dumps(table["config"]).count('"val": "results"') == 1  # runs.summary["results"]


def test_every_curve_is_one_line_per_arm_with_a_band_over_seeds(spec: dict[str, Any]) -> None:
    for panel in spec["panels"]:
        if panel["kind"] == "line":
            assert (panel["groupby"], panel["aggregate"], panel["band"]) == (["JobType"], "mean", "stddev")
    curves = [p for p in _panels(spec) if p["viewType"] == "Run History Line Plot"]
    for config in (p["config"] for p in curves):
        if config["metrics"] == ["staleness/histogram"]:  # W&B does not average histograms: one per run
            assert "groupBy" not in config
        else:
            assert (config["groupBy"], config["groupAgg"], config["groupArea"]) == (
                "jobType",
                "mean",
                "stddev",
            )
            assert config["aggregate"] is True
    report_grid = spec["report"]["spec"]["blocks"]
    report_curves = [
        p["config"]
        for block in report_grid
        if block["type"] == "panel-grid"
        for p in block["metadata"]["panelBankSectionConfig"]["panels"]
        if p["viewType"] == "Run History Line Plot"
    ]
    assert sorted(c["chartTitle"] for c in report_curves) == sorted(c["config"]["chartTitle"] for c in curves)


def test_the_runs_are_the_groups_grouped_by_job_type(
    spec: dict[str, Any], wandb_runs: dict[str, list[OfflineRun]]
) -> None:
    group = spec["group"]
    runs = [run for per_arm in wandb_runs.values() for run in per_arm]
    assert {(run.group, run.project) for run in runs} == {(group, spec["project"])}
    runset = spec["workspace"]["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": group, "disabled": False}
    ]
    assert runset["grouping"] == [{"section": "run", "name": "jobType"}]
    # the report: the curves of the group's training runs, the table of its comparison run
    grids = [
        b["metadata"]["runSets"][0] for b in spec["report"]["spec"]["blocks"] if b["type"] == "panel-grid"
    ]
    curves, results = (
        [(f["key"]["name"], f["op"], f["value"]) for f in g["filters"]["filters"]] for g in grids
    )
    assert curves == [("group", "=", group), ("jobType", "NIN", ["comparison", "sweep"])]
    assert results == [("group", "=", group), ("jobType", "IN", ["comparison", "sweep"])]
    assert grids[0]["grouping"] == [{"section": "run", "name": "jobType"}]


def test_every_key_a_panel_plots_is_in_the_history_of_the_runs_it_applies_to(
    spec: dict[str, Any], wandb_runs: dict[str, list[OfflineRun]]
) -> None:
    """Each panel's x and y keys are in every W&B run of the arms that log them (``logged_by``); the arms
    left out log none of them: ``server/lr`` is the server step, which sync (FedAvg) does not have."""
    for panel in spec["panels"]:
        if panel["kind"] == "table":
            assert panel["logged_by"] == ["comparison"]
            continue
        assert set(panel["logged_by"]) <= set(ARMS)
        for arm, runs in wandb_runs.items():
            for run in runs:
                for key in panel["y"]:
                    assert _has(run, key) is (arm in panel["logged_by"]), (panel["title"], arm, key)
                assert _has(run, panel["x"]), (panel["title"], arm, panel["x"])
    server = next(p for p in spec["panels"] if p["y"] == ["server/lr"])
    assert server["logged_by"] == ["afl"]
    assert all(p["logged_by"] == ARMS for p in spec["panels"] if p["kind"] != "table" and p is not server)


def test_the_comparison_run_holds_the_results_table_the_table_panel_shows(
    folder: Path, spec: dict[str, Any]
) -> None:
    """The comparison's own W&B run (in the group, job type ``comparison``, logged in the comparison's
    folder) has the ``results`` table that the results panel reads from the runs' summary."""
    (log,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    run = read_offline_run(log)
    assert (run.group, run.job_type) == (spec["group"], "comparison")
    assert _has(run, "results") and run.summary["results._type"] == "table-file"  # flattened by the reader


def test_the_specification_reads_back_into_the_librarys_objects(spec: dict[str, Any]) -> None:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.reports.v2.internal import ReportViewspec
    from wandb_workspaces.workspaces.internal import View

    workspace = ws.Workspace._from_model(View.model_validate(spec["workspace"]))
    assert [s.name for s in workspace.sections] == list(dict.fromkeys(p["section"] for p in spec["panels"]))
    plots = [p for s in workspace.sections for p in s.panels if isinstance(p, wr.LinePlot)]
    read = [(p.x.name, [y.name for y in p.y]) for p in plots]  # wr.Metric: keys of the runs' history
    assert read == [(p["x"], p["y"]) for p in spec["panels"] if p["kind"] != "table"]
    report = wr.Report._from_model(ReportViewspec.model_validate(spec["report"]))
    assert report.title == workspace.name == f"AFL vs sync: comparison {spec['group']}"


def test_offline_the_command_writes_the_specification_and_says_so_in_one_line(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "spec.json"
    proc = cli("afl-dashboard", str(folder), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == (
        "dashboard: not saved to W&B (its runs were logged offline; pass --online to save it); "
        f"its specification is in {out}, a preview in {tmp_path / 'spec.png'}\n"
    )
    assert json.loads(out.read_text())["saved"] is None and (tmp_path / "spec.png").is_file()


def test_online_without_an_account_it_writes_the_specification_instead(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "spec.json"
    proc = cli("afl-dashboard", str(folder), "--online", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith("dashboard: not saved to W&B (UsageError: ") and line.endswith(
        f"its specification is in {out}, a preview in {tmp_path / 'spec.png'}"
    )
    assert out.is_file()


def test_a_folder_that_is_no_comparison_or_sweep_exits_2(tmp_path: Path) -> None:
    proc = cli("afl-dashboard", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        f"error: folder: {tmp_path} is not a comparison or sweep folder "
        "(no comparison.json or sweep.json in it)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_folders_wandb_entry_names_the_group(folder: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(folder, tmp_path / "cmp", ignore=shutil.ignore_patterns("wandb", "*.pt"))
    saved = json.loads((copy / "comparison.json").read_text())
    saved["wandb"] = {"project": "p", "entity": "e", "group": "compare-123", "mode": "offline"}
    (copy / "comparison.json").write_text(json.dumps(saved))
    source = load_source(copy)
    assert (source.group, source.project, source.entity, source.mode) == ("compare-123", "p", "e", "offline")
    workspace = build_workspace(source, PANELS)
    assert (workspace.entity, workspace.project) == ("e", "p")
    assert workspace.runset_settings.filters == "Metric(\"Group\") == 'compare-123'"


def test_a_sweep_groups_by_arm_then_by_its_swept_keys(folder: Path, tmp_path: Path) -> None:
    """A sweep folder (``<arm>/<axis>=<label>/seed<S>``, sweep.json): one line per cell."""
    sweep = tmp_path / "sweep"
    for arm in ARMS:
        for seed in (0, 1):
            shutil.copytree(
                folder / arm / f"seed{seed}",
                sweep / arm / "J=3" / f"seed{seed}",
                ignore=shutil.ignore_patterns("wandb", "*.pt"),
            )
    axes = {"J": {"3": ["federation.concurrency=3"]}}
    (sweep / "sweep.json").write_text(
        json.dumps({"name": "s", "arms": {a: [] for a in ARMS}, "axes": axes, "seeds": [0, 1], "target": 0.2})
    )
    source = load_source(sweep)
    assert (source.kind, list(source.runs), source.target) == ("sweep", ["afl/J=3", "sync/J=3"], 0.2)
    assert source.grouping == ["JobType", "config.federation.concurrency"]
    panel = next(p for p in PANELS if p.y == ("server/lr",))
    assert logged_by(source, panel) == ["afl/J=3"]
    made = make_dashboard(sweep)
    spec = json.loads(made.spec_path.read_text())
    assert made.spec_path == sweep / "dashboard.json" and (sweep / "dashboard.png").is_file()
    assert spec["workspace"]["spec"]["section"]["runSets"][0]["grouping"] == [
        {"section": "run", "name": "jobType"},
        {"section": "config", "name": "federation.value.concurrency"},
    ]
    lines = [p["config"] for p in _panels(spec) if p["config"].get("metrics") == ["test/accuracy"]]
    assert lines and all(c["aggregate"] and "groupBy" not in c for c in lines)  # the runset's grouping
    assert next(p for p in spec["panels"] if p["kind"] == "table")["logged_by"] == ["sweep"]
