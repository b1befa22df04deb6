"""The AFL-vs-sync dashboard of a comparison or a sweep (``afl-dashboard``, docs/outputs.md): a W&B
workspace view and a W&B report of the folder's W&B group, built with W&B's own library for them,
``wandb-workspaces``, and a preview of the same panels drawn from the local run files.

* **Runs**: the workspace's runset is the group (``Group = <the comparison's or sweep's id>``), grouped by
  job type (the arm; in a sweep with axes, then by each swept config key), so that every panel shows one
  line per arm: the mean over its seeds with a ± 1 std band. The report's curves use the same runset less
  the group's summary run (job type ``comparison`` or ``sweep``), whose ``results`` table the results panel
  shows.
* **Panels** (:data:`PANELS`): test accuracy against simulated time and against client updates, test loss,
  ``‖∇L‖²`` on a log scale, the server learning rate, the staleness histograms, the results table. A panel
  whose key no run of the folder logs (``server/lr`` without a rule that has a server step, ``theory/*``
  with ``theory.enabled=false``) is left out, and the specification says why; ``logged_by`` names the arms
  that log a panel's keys (``server/lr``: not ``sync``).
* **Saving**: online (``--online``, or runs logged online) the view and the report are saved to W&B and
  their URLs returned. Otherwise, or when saving fails (no account, no network), nothing leaves the
  machine: the specification (the library's own serialisation of both objects, and a readable summary)
  is written to a file, with the preview beside it.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afl.errors import ConfigError
from afl.experiments.metrics import FINAL_WINDOW, headline, load_run, mean_std
from afl.experiments.records import reach

#: The files that make a folder a comparison's or a sweep's, and its kind.
KINDS = {"comparison.json": "comparison", "sweep.json": "sweep"}
#: Job types of the group's summary run (one per comparison or sweep), which holds the results table.
SUMMARY_JOB_TYPES = ("comparison", "sweep")
RESULTS_KEY = "results"
#: How the curves aggregate the runs of one arm (W&B's names): mean line, ± 1 std band.
AGGREGATE, BAND = "mean", "stddev"
X_LABELS = {"sim_time": "simulated time (s)", "client_updates": "client updates"}


@dataclass(frozen=True)
class Panel:
    """One panel of the dashboard: which W&B keys it plots, against what, how.

    ``column`` is the metrics.csv column of ``y`` (the preview draws it, and a run logs ``y`` where it has a
    value); the histogram's is ``mean_staleness`` (a window with updates has a staleness histogram).
    """

    section: str
    title: str
    kind: str  # "line", "histogram" (one per run: W&B does not average histograms) or "table"
    y: tuple[str, ...]
    x: str | None = None
    log_y: bool = False
    column: str | None = None


_CURVES = "Test accuracy and loss"
_THEORY = "Convergence, server step, staleness"
PANELS: tuple[Panel, ...] = (
    Panel(
        _CURVES,
        "test accuracy against simulated time",
        "line",
        ("test/accuracy",),
        "sim_time",
        column="test_accuracy",
    ),
    Panel(
        _CURVES,
        "test accuracy against client updates",
        "line",
        ("test/accuracy",),
        "client_updates",
        column="test_accuracy",
    ),
    Panel(_CURVES, "test loss", "line", ("test/loss",), "client_updates", column="test_loss"),
    Panel(
        _THEORY,
        "‖∇L(θ)‖² of the global model (log scale)",
        "line",
        ("theory/grad_norm_sq",),
        "client_updates",
        log_y=True,
        column="grad_norm_sq",
    ),
    Panel(
        _THEORY,
        "server learning rate (rules with a server step)",
        "line",
        ("server/lr",),
        "client_updates",
        column="server_lr",
    ),
    Panel(
        _THEORY,
        "staleness τ of each evaluation window",
        "histogram",
        ("staleness/histogram",),
        "client_updates",
        column="mean_staleness",
    ),
    Panel("Results", "results: one row per arm", "table", (RESULTS_KEY,)),
)


@dataclass
class Run:
    """A finished run of the folder, read back from its files."""

    folder: Path
    summary: dict[str, Any]
    history: list[dict[str, str]]
    config: Any


@dataclass
class Source:
    """A comparison or sweep folder: its W&B group and its finished runs per arm (per cell in a sweep)."""

    folder: Path
    kind: str  # "comparison" or "sweep"
    group: str
    project: str
    entity: str | None
    mode: str
    runs: dict[str, dict[int, Run]]  # label (arm, or a sweep's cell) -> seed -> run
    target: float | None = None
    grouping: list[str] = field(default_factory=lambda: ["JobType"])  # "JobType", then "config.KEY"

    @property
    def title(self) -> str:
        return f"AFL vs sync: {self.kind} {self.group}"


# ----------------------------------------------------------------------------- reading the folder
def load_source(folder: str | Path) -> Source:
    """Reads a comparison folder (``afl-compare``) or a sweep folder (``afl-sweep``) and its finished runs.

    The W&B group, project and entity come from the folder's ``"wandb"`` entry; folders written before it
    existed name the experiment as the group, in every run's config.yaml.

    Raises:
        ConfigError: not such a folder, or no finished run in it.
    """
    root = Path(folder)
    found = [name for name in KINDS if (root / name).is_file()]
    if not found:
        raise ConfigError(
            "folder", f"{root} is not a comparison or sweep folder (no {' or '.join(KINDS)} in it)"
        )
    try:
        saved = json.loads((root / found[0]).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError("folder", f"cannot read {root / found[0]}: {str(err).splitlines()[0]}") from None
    kind = KINDS[found[0]]
    folders = _comparison_runs(root, saved) if kind == "comparison" else _sweep_runs(root, saved)
    runs: dict[str, dict[int, Run]] = {}
    for label, per_seed in folders.items():
        for seed, out in per_seed.items():
            if (out / "summary.json").is_file():
                runs.setdefault(label, {})[seed] = Run(out, *load_run(out))
    if not runs:
        raise ConfigError("folder", f"{root} holds no finished run")
    first = next(iter(next(iter(runs.values())).values())).config
    logged = saved.get("wandb") or {}
    return Source(
        folder=root,
        kind=kind,
        group=str(logged.get("group") or first.experiment),
        project=str(logged.get("project") or first.logging.wandb.project),
        entity=logged.get("entity", first.logging.wandb.entity),
        mode=str(logged.get("mode") or first.logging.wandb.mode),
        runs=runs,
        target=saved.get("target_accuracy" if kind == "comparison" else "target"),
        grouping=["JobType", *(f"config.{key}" for key in _swept_keys(saved.get("axes") or {}))],
    )


def _comparison_runs(root: Path, saved: Mapping[str, Any]) -> dict[str, dict[int, Path]]:
    return {
        arm: {int(seed): root / relative for seed, relative in per_seed.items()}
        for arm, per_seed in (saved.get("runs") or {}).items()
    }


def _sweep_runs(root: Path, saved: Mapping[str, Any]) -> dict[str, dict[int, Path]]:
    """A sweep's run folders, ``<arm>/<axis>=<label>/.../seed<S>`` (afl.experiments.sweep.run_dir)."""
    axes = saved.get("axes") or {}
    runs: dict[str, dict[int, Path]] = {}
    for arm in saved.get("arms") or {}:
        for labels in itertools.product(*(axes[a] for a in axes)):
            cell = [arm, *(f"{a}={v}" for a, v in zip(axes, labels))]
            runs["/".join(cell)] = {int(s): root.joinpath(*cell, f"seed{s}") for s in saved.get("seeds", [])}
    return runs


def _swept_keys(axes: Mapping[str, Mapping[str, Sequence[str]]]) -> list[str]:
    """The config keys a sweep's axes set, in order (``federation.concurrency`` of ``J: {"3": [...]}``)."""
    keys = (o.split("=", 1)[0].lstrip("+") for labels in axes.values() for ov in labels.values() for o in ov)
    return list(dict.fromkeys(keys))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def logged_by(source: Source, panel: Panel) -> list[str]:
    """The labels (arms) of the runs that log the panel's keys; the summary run's job types for the table."""
    if panel.kind == "table":
        return list(SUMMARY_JOB_TYPES[:1] if source.kind == "comparison" else SUMMARY_JOB_TYPES[1:])
    return [
        label
        for label, per_seed in source.runs.items()
        if any(_finite(row.get(panel.column or "")) for run in per_seed.values() for row in run.history)
    ]


def panels_for(source: Source) -> tuple[list[Panel], list[dict[str, str]]]:
    """The panels the folder's runs fill, and the ones left out with why."""
    kept, omitted = [], []
    for panel in PANELS:
        if logged_by(source, panel):
            kept.append(panel)
        else:
            omitted.append({"title": panel.title, "reason": f"no run logs {', '.join(panel.y)}"})
    return kept, omitted


# ----------------------------------------------------------------------------- the W&B objects
def _wandb_panel(panel: Panel, source: Source, runs: int) -> Any:
    import wandb_workspaces.reports.v2 as wr

    if panel.kind == "table":  # the summary run's wandb.Table
        return wr.WeavePanelSummaryTable(table_name=panel.y[0], layout=wr.Layout(w=24, h=10))
    line: dict[str, Any] = {}
    if panel.kind == "line":  # one line per arm: its seeds' mean, a ± 1 std band
        single = source.grouping == ["JobType"]  # a sweep's nested grouping comes from the runset
        line = dict(
            groupby="JobType" if single else None,
            aggregate=True,
            groupby_aggfunc=AGGREGATE,
            groupby_rangefunc=BAND,
        )
    return wr.LinePlot(
        title=panel.title,
        x=panel.x,
        y=list(panel.y),
        log_y=panel.log_y or None,
        title_x=X_LABELS.get(panel.x or ""),
        smoothing_type="none",
        max_runs_to_show=runs,
        **line,
    )


def _filters(source: Source, summary_runs: bool | None) -> list[Any]:
    """The group; with ``summary_runs`` False its training runs only, True its summary run only."""
    from wandb_workspaces import expr

    group = [expr.Metric("Group") == source.group]
    if summary_runs is None:
        return group
    job = expr.Metric("JobType")
    return [*group, job.isin(list(SUMMARY_JOB_TYPES)) if summary_runs else job.notin(list(SUMMARY_JOB_TYPES))]


def _run_count(source: Source) -> int:
    return max(10, sum(len(per_seed) for per_seed in source.runs.values()) + 1)


def build_workspace(source: Source, panels: Sequence[Panel], entity: str | None = None) -> Any:
    """The workspace view (``wandb_workspaces.workspaces.Workspace``): the group's runs grouped by arm, a
    section per panel group. The runset keeps the group's summary run, for the results table; it logs no
    curve, so it draws no line."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    runs = _run_count(source)
    sections = []
    for name in dict.fromkeys(p.section for p in panels):
        members = [p for p in panels if p.section == name]
        sections.append(
            ws.Section(
                name=name,
                panels=[_wandb_panel(p, source, runs) for p in members],
                is_open=True,
                layout_settings=ws.SectionLayoutSettings(columns=min(3, len(members)), rows=1),
            )
        )
    groupby: list[expr.MetricType] = [
        expr.Metric(key) if key == "JobType" else expr.Config(key.removeprefix("config."))
        for key in source.grouping
    ]
    return ws.Workspace(
        entity=entity or source.entity or "",
        project=source.project,
        name=source.title,
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis="client_updates", max_runs=runs),
        runset_settings=ws.RunsetSettings(filters=_filters(source, None), groupby=groupby),
    )


def build_report(
    source: Source, panels: Sequence[Panel], entity: str | None = None, bind: bool = False
) -> Any:
    """The report (``wandb_workspaces.reports.v2.Report``): the curves of the group's training runs, then
    the results table of its summary run. ``bind``: the runsets name the entity and project (saving looks
    the project up on W&B); otherwise they are the report's own project's, as offline."""
    import wandb_workspaces.reports.v2 as wr

    entity = entity or source.entity or ""
    where, project = (entity, source.project) if bind else ("", "")
    runs = _run_count(source)
    curves = [_wandb_panel(p, source, runs) for p in panels if p.kind != "table"]
    tables = [_wandb_panel(p, source, runs) for p in panels if p.kind == "table"]
    blocks: list[Any] = [
        wr.P(
            f"The runs of W&B group {source.group}, one line per arm ({', '.join(source.runs)}): the mean "
            "over its seeds, a band of ± 1 standard deviation. Made by afl-dashboard."
        ),
        wr.PanelGrid(
            runsets=[
                wr.Runset(
                    entity=where,
                    project=project,
                    name="training runs",
                    filters=_filters(source, False),
                    groupby=source.grouping,
                )
            ],
            panels=curves,
        ),
    ]
    if tables:
        blocks += [
            wr.H2("Results"),
            wr.PanelGrid(
                runsets=[
                    wr.Runset(
                        entity=where,
                        project=project,
                        name=f"{source.kind} run",
                        filters=_filters(source, True),
                    )
                ],
                panels=tables,
            ),
        ]
    return wr.Report(
        project=source.project,
        entity=entity,
        title=source.title,
        description=_setting(source),
        width="fluid",
        blocks=blocks,
    )


def _setting(source: Source) -> str:
    from afl.experiments.plots import describe

    return describe(*(run.config for per_seed in source.runs.values() for run in per_seed.values()))


def _dump(obj: Any) -> dict[str, Any]:
    """The library's own serialisation of a workspace or report: its wire model as JSON."""
    return obj._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def specification(
    source: Source, panels: Sequence[Panel], omitted: Sequence[Mapping[str, str]], workspace: Any, report: Any
) -> dict[str, Any]:
    """What the dashboard is: a readable summary (the runset, each panel's keys and grouping, which arms
    log them) and both objects as wandb-workspaces serialises them."""
    grouped = {"groupby": source.grouping, "aggregate": AGGREGATE, "band": BAND}
    return {
        "kind": source.kind,
        "group": source.group,
        "project": source.project,
        "entity": source.entity,
        "runset": {
            "filters": workspace.runset_settings.filters,
            "groupby": source.grouping,
            "curves_exclude_job_types": list(SUMMARY_JOB_TYPES),
        },
        "panels": [
            {
                "section": p.section,
                "title": p.title,
                "kind": p.kind,
                "x": p.x,
                "y": list(p.y),
                "log_y": p.log_y,
                **(grouped if p.kind == "line" else {}),
                "logged_by": logged_by(source, p),
            }
            for p in panels
        ],
        "omitted": list(omitted),
        "workspace": _dump(workspace),
        "report": _dump(report),
    }


# ----------------------------------------------------------------------------- building and saving
@dataclass
class Dashboard:
    """What :func:`make_dashboard` did: the URLs where it saved, or why it did not, and its files."""

    spec_path: Path
    preview_path: Path
    urls: dict[str, str] = field(default_factory=dict)  # "workspace", "report"
    not_saved: str | None = None  # why, when not saved


def save_online(source: Source, panels: Sequence[Panel]) -> tuple[Any, Any]:
    """Saves the workspace view and the report to W&B; returns both (their ``url``s). Raises what wandb
    raises without an account or a network."""
    import wandb

    entity = source.entity or wandb.Api().default_entity
    workspace = build_workspace(source, panels, entity).save()
    report = build_report(source, panels, entity, bind=True).save()
    return workspace, report


def make_dashboard(folder: str | Path, *, online: bool = False, out: Path | None = None) -> Dashboard:
    """Builds the folder's dashboard: saved to W&B if ``online`` (or its runs were logged online) and that
    works, its specification written to ``out`` (default ``FOLDER/dashboard.json``) either way, and its
    preview beside it (``.png``).

    Raises:
        ConfigError: not a comparison or sweep folder.
    """
    source = load_source(folder)
    spec_path = Path(out) if out is not None else source.folder / "dashboard.json"
    result = Dashboard(spec_path=spec_path, preview_path=spec_path.with_suffix(".png"))
    panels, omitted = panels_for(source)
    workspace = report = None
    if online or source.mode == "online":
        try:
            workspace, report = save_online(source, panels)
            result.urls = {"workspace": workspace.url, "report": report.url}
        except Exception as err:  # no account, no network, a server that refuses: the files still say it all
            first = (str(err).strip().splitlines() or [""])[0]
            result.not_saved = f"{type(err).__name__}: {first}" if first else type(err).__name__
    else:
        result.not_saved = f"its runs were logged {source.mode}; pass --online to save it"
    if workspace is None or report is None:
        workspace, report = build_workspace(source, panels), build_report(source, panels)
    spec = specification(source, panels, omitted, workspace, report)
    spec["saved"] = result.urls or None
    spec_path.write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n")
    plot_preview(source, panels, result.preview_path)
    return result


# ----------------------------------------------------------------------------- the preview
def _staleness(run: Run) -> list[int]:
    """The staleness of each applied update of a run (its updates.csv)."""
    path = run.folder / "updates.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [int(float(r["staleness"])) for r in csv.DictReader(f) if not r.get("rejected")]


#: A sweep without a target aims at this share of its best cell's mean final accuracy (as afl-sweep does).
TARGET_FRACTION = 0.95


def results_table(source: Source) -> tuple[list[dict[str, Any]], float]:
    """Per arm (cell): seeds, the headline accuracy (the mean of each run's last evaluations, as the
    comparison's table ranks them), simulated time and client updates to the target, mean staleness, each
    as (mean, std, how many seeds have one); and the target. What the W&B results table holds, computed
    from the run files (plain Python: no torch, unlike afl.experiments.compare)."""
    finals = {
        label: [headline({"summary": r.summary, "history": r.history}) for r in per.values()]
        for label, per in source.runs.items()
    }
    target = source.target
    if target is None:
        target = TARGET_FRACTION * max(sum(v) / len(v) for v in finals.values())
    rows = []
    for label, per_seed in source.runs.items():
        runs = list(per_seed.values())
        reached = [reach(r.history, final, target) for r, final in zip(runs, finals[label], strict=True)]
        rows.append(
            {
                "arm": label,
                "seeds": len(runs),
                "final_acc": mean_std(finals[label]),
                "time_to_target": mean_std([x.time for x in reached]),
                "updates_to_target": mean_std([x.updates for x in reached]),
                "mean_staleness": mean_std([r.summary.get("mean_staleness") for r in runs]),
            }
        )
    return rows, target


def mean_std_cell(stats: tuple[float | None, float | None, int], spec: str, seeds: int | None = None) -> str:
    mean, std, n = stats
    text = "—" if mean is None else f"{mean:{spec}} ± {std:{spec}}" if std else f"{mean:{spec}}"
    return text if seeds is None or n == seeds else f"{text} ({n}/{seeds} reached)"


def plot_preview(source: Source, panels: Sequence[Panel], path: Path) -> Any:
    """The dashboard's panels drawn from the local files (metrics.csv, updates.csv) with matplotlib: one
    line per arm, mean over seeds and a ± 1 std band, as W&B draws them; the results table below."""
    from matplotlib.figure import Figure

    from afl.experiments.plots import label_styles

    charts = [p for p in panels if p.kind != "table"]
    table = any(p.kind == "table" for p in panels)
    rows_of_charts = -(-len(charts) // 3)
    results, target = results_table(source)
    table_height = 0.6 + 0.32 * len(results) if table else 0
    fig = Figure(figsize=(16, 4.2 * rows_of_charts + table_height + 1.2), layout="constrained")
    grid = fig.add_gridspec(
        rows_of_charts + table, 3, height_ratios=[4.2] * rows_of_charts + [table_height] * table
    )
    styles = label_styles(list(source.runs))
    for index, panel in enumerate(charts):
        _draw_chart(fig.add_subplot(grid[index // 3, index % 3]), source, panel, styles)
    if table:
        _draw_results_table(fig.add_subplot(grid[rows_of_charts, :]), source, results, target)
    _add_legend(fig)
    fig.suptitle(
        f"{source.title} (W&B project {source.project}): the dashboard's panels, drawn from the local files\n"
        f"{_setting(source)}. Line: mean over seeds, band: ± 1 std; past the first seed's end (×) a dotted "
        "line goes on with the seeds still running",
        fontsize=11,
    )
    fig.savefig(path, dpi=100)
    return fig


def _draw_chart(ax: Any, source: Source, panel: Panel, styles: Mapping[str, tuple[Any, str]]) -> None:
    """One chart panel on ``ax``: the staleness histogram, or a curve per arm that logged the panel's
    column; titled with the W&B keys it shows and the arms that did not log them."""
    arms = logged_by(source, panel)
    if panel.kind == "histogram":
        _staleness_bars(ax, source, arms, styles)
    else:
        _draw_curves(ax, source, panel, arms, styles)
        ax.set_xlabel(X_LABELS.get(panel.x or "", panel.x or ""))
    if panel.log_y:
        _powers_of_ten(ax)
    missing = [label for label in source.runs if label not in arms]
    note = f" (not logged by {', '.join(missing)})" if missing else ""
    band = "; band: ± 1 std of log10" if panel.log_y else ""
    ax.set_title(f"{panel.title}\nW&B: {', '.join(panel.y)}{note}{band}", fontsize=10, loc="left")
    ax.grid(alpha=0.3)


def _draw_curves(
    ax: Any, source: Source, panel: Panel, arms: Sequence[str], styles: Mapping[str, tuple[Any, str]]
) -> None:
    """A line per arm on ``ax``, mean over seeds with a ± 1 std band (of log10 on a log panel); the first
    arms are drawn widest, so that equal curves stay visible."""
    from afl.experiments.plots import draw_band

    for order, label in enumerate(arms):
        histories = [run.history for run in source.runs[label].values()]
        if panel.log_y:
            histories = [_log10(h, panel.column or "") for h in histories]
        drawn = len(ax.get_lines())
        draw_band(ax, histories, panel.x or "", panel.column or "", label, *styles[label])
        for line in ax.get_lines()[drawn:]:  # the first arms widest: equal curves stay visible
            line.set_linewidth(line.get_linewidth() * (1 + 0.8 * (len(arms) - 1 - order) / len(arms)))


def _draw_results_table(ax: Any, source: Source, results: Sequence[Mapping[str, Any]], target: float) -> None:
    """The results table on ``ax`` (its axes hidden): a row per arm, mean ± std over the seeds."""
    ax.axis("off")
    header = [
        "arm",
        "seeds",
        f"test accuracy, last {FINAL_WINDOW} evaluations",
        f"simulated time to {target:.3f} (s)",
        "client updates to target",
        "mean staleness τ",
    ]
    cells = [
        [
            r["arm"],
            str(r["seeds"]),
            mean_std_cell(r["final_acc"], ".3f"),
            mean_std_cell(r["time_to_target"], ".0f", r["seeds"]),
            mean_std_cell(r["updates_to_target"], ".0f", r["seeds"]),
            mean_std_cell(r["mean_staleness"], ".2f"),
        ]
        for r in results
    ]
    shown = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="center")
    shown.auto_set_font_size(False)
    shown.set_fontsize(9)
    shown.scale(1, 1.3)
    ax.set_title(f"results (W&B: the {source.kind} run's table '{RESULTS_KEY}')", fontsize=10, loc="left")


def _add_legend(fig: Any) -> None:
    """One legend below the figure, an entry per arm: the curves' lines first, then the histogram's bars
    for arms without a curve."""
    handles: dict[str, Any] = {}
    for ax in fig.axes:  # the curves' lines first, then the histogram's bars for arms without a curve
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 6))


def _log10(history: Sequence[Mapping[str, Any]], column: str) -> list[dict[str, Any]]:
    """``column`` as log10 (NaN where not positive): a log panel's mean and band are taken over the seeds'
    logarithms, so the band never reaches 0 on a log axis."""
    positive = [_finite(row.get(column)) and float(row[column]) > 0 for row in history]
    return [
        {**row, column: math.log10(float(row[column])) if ok else math.nan}
        for row, ok in zip(history, positive)
    ]


def _powers_of_ten(ax: Any) -> None:
    """Ticks of a log10-valued axis labelled as powers of ten, as a log axis reads."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{int(v)}}}$"))


def _staleness_bars(ax: Any, source: Source, arms: Sequence[str], styles: Mapping[str, Any]) -> None:
    """Per arm, the share of its applied updates (all seeds, all windows) at each staleness τ."""
    pooled = {label: [t for run in source.runs[label].values() for t in _staleness(run)] for label in arms}
    pooled = {label: values for label, values in pooled.items() if values}
    if not pooled:
        return
    top = max(max(v) for v in pooled.values())
    width = 0.8 / len(pooled)
    for i, (label, values) in enumerate(pooled.items()):
        taus = list(range(top + 1))
        shares = [values.count(t) / len(values) for t in taus]
        ax.bar(
            [t - 0.4 + width * (i + 0.5) for t in taus], shares, width, color=styles[label][0], label=label
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("staleness τ (all windows, all seeds)")
    ax.set_ylabel("share of updates")
