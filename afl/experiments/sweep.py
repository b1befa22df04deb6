"""Sweeps: a grid of overrides × arms × seeds, run to completion even across interruptions.

A sweep is a YAML file in ``configs/sweep/`` (or any path)::

    description: what it asks
    base: [experiment=fmnist_small, federation.max_updates=200]   # every run
    arms: [afl, sync]               # the comparison's arms, with their presets' overrides
    axes:                           # the grid: every combination of one label per axis
      J: {"3": [federation.concurrency=3], "5": [federation.concurrency=5]}
      client.lr: [1e-3, 3e-3]       # shorthand: KEY: [values] is {"v": [KEY=v], ...}
    seeds: [0, 1, 2]
    target: 0.75                    # test accuracy for "time to target" (null: 0.95 × best cell mean)

Every run has its own folder, ``<out>/<arm>/<axis>=<label>/.../seed<S>``. Running the sweep again
skips runs that are complete, resumes runs that have a checkpoint, and restarts the others, so an
interrupted sweep continues where it stopped. The results are ``results.csv`` (one row per run),
``results.md`` (per cell: mean ± std over seeds), ``curves.png`` (test accuracy against simulated time
and client updates, mean ± std bands; with axes, a row per setting of them, the arms in each) and, with
axes, ``final.png`` (final accuracy along the first axis).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from afl.arms import BASELINE
from afl.config import CONFIG_DIR, load_config
from afl.errors import ConfigError
from afl.experiments.compare import (
    DEFAULT_TARGET_FRACTION,
    bounds_cell,
    interval_cell,
    mean_std_cell,
    parse_plan,
    time_to_target_cell,
)
from afl.experiments.components import build_components
from afl.experiments.metrics import (
    FINAL_WINDOW,
    LEVEL,
    PLATEAU_RISE,
    headline,
    interval,
    load_run,
    mean_std,
    paired,
    verdict,
)
from afl.experiments.parallel import RayLauncher, run_pending
from afl.experiments.plots import label_styles, plot_band_panels, plot_bands
from afl.experiments.records import equal_times, run_records
from afl.experiments.wandb_runs import log_results, new_group, table_rows

SWEEP_DIR = CONFIG_DIR / "sweep"
SPEC_KEYS = {"description", "base", "arms", "axes", "seeds", "target"}


def sweeps(sweep_dir: Path = SWEEP_DIR) -> list[str]:
    """Names of the sweeps in ``configs/sweep/``."""
    return sorted(p.stem for p in sweep_dir.glob("*.yaml"))


@dataclass
class Cell:
    """One point of the grid: an arm and one label per axis."""

    arm: str
    labels: dict[str, str]  # axis -> label
    overrides: list[str]  # the axes' overrides (the arm's own come from the plan)

    @property
    def name(self) -> str:
        return "/".join([self.arm, *(f"{a}={v}" for a, v in self.labels.items())])


@dataclass
class Sweep:
    """A parsed sweep: its cells, seeds and where it writes."""

    name: str
    description: str
    base: list[str]  # ["experiment=NAME"] or []
    arms: dict[str, list[str]]  # arm -> its overrides, the sweep's base included (a comparison's plan)
    axes: dict[str, dict[str, list[str]]]
    seeds: list[int]
    target: float | None
    cells: list[Cell] = field(default_factory=list)

    def overrides(self, cell: Cell, seed: int) -> list[str]:
        """Everything a run of ``cell`` and ``seed`` is composed from, later ones winning."""
        return [
            *self.base,
            *self.arms[cell.arm],
            *cell.overrides,
            f"seed={seed}",
        ]

    def config(self, cell: Cell, seed: int, group: str | None = None) -> DictConfig:
        """The config of a run of ``cell`` and ``seed``, in the sweep's W&B ``group``, tagged with it."""
        cfg = load_config(self.overrides(cell, seed))
        cfg.logging.wandb.group = group
        cfg.logging.wandb.tags = [*cfg.logging.wandb.tags, f"sweep:{self.name}"]
        return cfg


def load_sweep(
    name_or_path: str,
    seeds: Sequence[int] | None = None,
    extra: Sequence[str] = (),
    sweep_dir: Path = SWEEP_DIR,
) -> Sweep:
    """Read and check a sweep (a name in ``configs/sweep/`` or a YAML path); ``extra`` overrides go after
    ``base`` in every run. Every run's config is composed and checked, and its components built, here,
    before anything runs.

    Raises:
        ConfigError: an unknown sweep, a malformed file, or a run config that fails its checks or
            whose components refuse an option's value.
    """
    path = Path(name_or_path)
    if not path.suffix:
        if name_or_path not in sweeps(sweep_dir):
            raise ConfigError(
                "sweep", f"unknown sweep {name_or_path!r}; available: {', '.join(sweeps(sweep_dir))}"
            )
        path = sweep_dir / f"{name_or_path}.yaml"
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException) as err:
        raise ConfigError("sweep", f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError("sweep", f"{path} must be a mapping of {', '.join(sorted(SPEC_KEYS))}")
    unknown = sorted(set(map(str, raw)) - SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"sweep.{unknown[0]}", f"unknown key in {path}; allowed: {', '.join(sorted(SPEC_KEYS))}"
        )
    base = [*_strings(raw.get("base", []), "sweep.base"), *extra]  # extra: after the file's base
    axes = {str(a): _axis(str(a), v) for a, v in (raw.get("axes") or {}).items()}
    run_seeds = list(seeds) if seeds else [int(s) for s in raw.get("seeds", [0])]
    target = raw.get("target")
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError("sweep.target", f"must be an accuracy in (0, 1], got {target!r}")
    plan = parse_plan(base, _strings(raw.get("arms", ["afl"]), "sweep.arms"), run_seeds)
    sweep = Sweep(
        name=path.stem,
        description=str(raw.get("description", "")),
        base=plan.base,  # the preset; the other base overrides are in every arm's own (parse_plan)
        arms=plan.arms,
        axes=axes,
        seeds=run_seeds,
        target=None if target is None else float(target),
    )
    for arm in plan.arms:
        for combo in itertools.product(*(axis.items() for axis in axes.values())):
            labels = {a: label for a, (label, _) in zip(axes, combo)}
            overrides = [o for _, extra_overrides in combo for o in extra_overrides]
            sweep.cells.append(Cell(arm=arm, labels=labels, overrides=overrides))
    for cell in sweep.cells:  # every config checked before the first run
        try:
            build_components(load_config(sweep.overrides(cell, run_seeds[0])))
        except ConfigError as err:
            raise ConfigError(err.key, f"{err.message} (in sweep cell {cell.name})") from None
    return sweep


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(key, f"must be a list, got {value!r}")
    return [str(v) for v in value]


def _axis(name: str, value: Any) -> dict[str, list[str]]:
    """An axis as label → overrides; ``KEY: [v1, v2]`` is shorthand for ``{v1: [KEY=v1], v2: [KEY=v2]}``."""
    if isinstance(value, list):
        return {_label(v): [f"{name}={_label(v)}"] for v in value}
    if isinstance(value, dict) and value:
        return {str(label): _strings(o, f"sweep.axes.{name}.{label}") for label, o in value.items()}
    raise ConfigError(
        f"sweep.axes.{name}", f"must be a list of values or a mapping label → overrides, got {value!r}"
    )


def _label(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def run_dir(root: Path, cell: Cell, seed: int) -> Path:
    return root.joinpath(cell.arm, *(f"{a}={v}" for a, v in cell.labels.items()), f"seed{seed}")


def run_sweep(
    sweep: Sweep,
    root: Path,
    *,
    log: Callable[[str], None] = print,
    formats: Sequence[str] = ("png",),
    jobs: int = 1,
    launcher: RayLauncher | None = None,
) -> list[dict[str, Any]]:
    """Run every cell and seed not yet complete under ``root``, ``jobs`` at a time
    (:mod:`afl.experiments.parallel`); write and return the results.

    A run folder with ``summary.json`` is skipped, one with a checkpoint is resumed, any other is
    removed and run again. A run that fails is said so and left out of the results; run the sweep again
    to retry it.
    """
    root.mkdir(parents=True, exist_ok=True)
    group = wandb_group_of(root) or new_group("sweep", root)  # a continued sweep keeps its group
    (root / "sweep.json").write_text(
        json.dumps(
            {
                "wandb": {"group": group},
                "name": sweep.name,
                "description": sweep.description,
                "base": sweep.base,
                "arms": sweep.arms,
                "axes": sweep.axes,
                "seeds": sweep.seeds,
                "target": sweep.target,
            },
            indent=1,
        )
    )
    runs = []
    for seed in sweep.seeds:  # seeds outermost: a stopped sweep has every cell on its first seeds
        for cell in sweep.cells:
            out = run_dir(root, cell, seed)

            def make(cell: Cell = cell, seed: int = seed, out: Path = out) -> DictConfig:
                cfg = sweep.config(cell, seed, group)
                cfg.output_dir = str(out)
                cfg.logging.progress = False
                return cfg

            runs.append((f"{cell.name} seed {seed}", f"{cell.name} seed {seed}", out, make))
    outcomes = run_pending(runs, jobs, log=log, launcher=launcher)
    failed = [f"{key}: {o.error}" for key, o in outcomes.items() if not o.ok]
    for line in failed:
        log(f"FAILED {line} (left out of the results; run the sweep again to retry it)")
    report = sweep.config(sweep.cells[0], sweep.seeds[0], group)
    return write_results(sweep, root, report=report, formats=formats)


def wandb_group_of(root: Path) -> str | None:
    """The W&B group a sweep folder's runs were given (sweep.json), or None."""
    try:
        return json.loads((root / "sweep.json").read_text())["wandb"]["group"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def collect(sweep: Sweep, root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Finished runs per cell name and seed: ``{summary, history, output_dir}``."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in sweep.cells:
        for seed in sweep.seeds:
            out = run_dir(root, cell, seed)
            if (out / "summary.json").exists():
                summary, history, _ = load_run(out)
                runs.setdefault(cell.name, {})[seed] = {
                    "summary": summary,
                    "history": history,
                    "output_dir": out,
                }
    return runs


#: results.csv's columns of one run, in order: column -> the RunRecord attribute it holds.
RESULT_COLUMNS = {
    "final_mean_test_accuracy": "headline",  # the mean of the last logging.final_window evaluations
    "final_test_accuracy": "last",
    "best_test_accuracy": "best",
    "acc_at_equal_time": "acc_at_equal_time",
    "sim_time": "sim_time",
    "time_to_target": "to_target.time",
    "updates_to_target": "to_target.updates",
    "mean_staleness": "mean_staleness",
    "max_staleness": "max_staleness",
    "stale_updates": "stale_updates",
    "dropped_updates": "dropped_updates",
    "lost_updates": "lost_updates",
    "final_grad_norm_sq": "final_grad_norm_sq",
    "final_heterogeneity": "final_heterogeneity",
    "late_rise": "late_rise",  # validation accuracy's rise over the last fifth: a plateau below 0.005
}


def result_rows(
    sweep: Sweep, root: Path, runs: Mapping[str, Mapping[int, Mapping[str, Any]]]
) -> tuple[list[dict[str, Any]], float]:
    """One row per finished run (the columns of results.csv) and the target accuracy: the sweep's, or
    0.95 × the best cell's mean headline.

    Raises:
        ConfigError: no finished run.
    """
    if not runs:
        raise ConfigError("sweep", f"no finished runs under {root}")
    finals = [sum(headline(r) for r in per_seed.values()) / len(per_seed) for per_seed in runs.values()]
    target = sweep.target if sweep.target is not None else DEFAULT_TARGET_FRACTION * max(finals)
    # equal time: per seed, the shortest simulated time any cell needed for its budget
    records = run_records(runs, equal_times(runs), target)
    rows = []
    for cell in sweep.cells:
        for seed, r in runs.get(cell.name, {}).items():
            record = records[cell.name][seed]
            rows.append(
                {
                    "cell": cell.name,
                    "arm": cell.arm,
                    **cell.labels,
                    "seed": seed,
                    **{column: attrgetter(path)(record) for column, path in RESULT_COLUMNS.items()},
                    "output_dir": str(Path(r["output_dir"]).relative_to(root)),
                }
            )
    return rows, target


def table_text(sweep: Sweep, root: Path) -> str:
    """results.md's table from the finished runs under ``root``, writing nothing."""
    rows, target = result_rows(sweep, root, collect(sweep, root))
    return format_results(sweep, summarise_cells(sweep, rows), target)


def write_results(
    sweep: Sweep, root: Path, report: DictConfig | None = None, formats: Sequence[str] = ("png",)
) -> list[dict[str, Any]]:
    """results.csv, results.md, curves.png and final.png from the finished runs under ``root``; with
    ``report`` (a config of the sweep's runs, in its W&B group) also the sweep's own W&B run, whose
    ``logging.wandb`` entry lands in sweep.json."""
    runs = collect(sweep, root)
    rows, target = result_rows(sweep, root, runs)
    with (root / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = summarise_cells(sweep, rows)
    (root / "results.md").write_text(format_results(sweep, table, target) + "\n")
    title = f"sweep {sweep.name}: {sweep.description}"
    if sweep.axes:  # a row per setting of the axes, the arms in it: one colour per arm throughout
        panels: dict[str, dict[str, list[Any]]] = {}
        cell_configs: dict[str, dict[str, list[Any]]] = {}
        for cell in sweep.cells:
            if cell.name in runs:
                heading = ", ".join(f"{a}={label}" for a, label in cell.labels.items())
                panels.setdefault(heading, {})[cell.arm] = [r["history"] for r in runs[cell.name].values()]
                cell_configs.setdefault(heading, {})[cell.arm] = [
                    load_run(r["output_dir"])[2] for r in runs[cell.name].values()
                ]
        for fmt in dict.fromkeys(["png", *formats]):
            plot_band_panels(panels, root / f"curves.{fmt}", title=title, configs=cell_configs)
            plot_final(sweep, table, root / f"final.{fmt}")
    else:
        histories = {name: [r["history"] for r in per_seed.values()] for name, per_seed in runs.items()}
        configs = {n: [load_run(r["output_dir"])[2] for r in ps.values()] for n, ps in runs.items()}
        for fmt in dict.fromkeys(["png", *formats]):
            plot_bands(
                histories,
                root / f"curves.{fmt}",
                title=title,
                metrics=("test_accuracy", "test_loss"),
                configs=configs,
            )
    if report is not None:
        _log_sweep(sweep, root, report, table, rows, target)
    return rows


def _log_sweep(
    sweep: Sweep,
    root: Path,
    cfg: DictConfig,
    table: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    target: float,
) -> None:
    """The sweep's own W&B run (job type ``sweep``) in its runs' group: the per-cell table (``results``),
    one row per run (``runs``), the figures, and the target; where it went lands in sweep.json."""
    summary: dict[str, Any] = {"target_accuracy": target}
    for entry in table:
        for key in ("final_mean_test_accuracy", "final_test_accuracy", "time_to_target"):
            summary[f"{entry['cell']}/{key}"] = entry[key]
    figures = {name: root / f"{name}.png" for name in ("curves", "final") if (root / f"{name}.png").exists()}
    where = log_results(
        cfg,
        kind="sweep",
        out=root,
        tags=[f"experiment:{cfg.experiment}", f"sweep:{sweep.name}"],
        config={
            "sweep": sweep.name,
            "description": sweep.description,
            "arms": sweep.arms,
            "seeds": sweep.seeds,
        },
        tables={"results": table_rows([dict(t) for t in table]), "runs": table_rows([dict(r) for r in rows])},
        images=figures,
        summary=summary,
    )
    saved = json.loads((root / "sweep.json").read_text())
    (root / "sweep.json").write_text(
        json.dumps({**saved, "wandb": where, "target_accuracy": target}, indent=1)
    )


def summarise_cells(sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per cell (in grid order): mean, std and count over its seeds of every result column; the 95% t
    interval of the headline (``final_mean_test_accuracy_ci``, its half-width); and, where the same
    setting of the axes has a sync cell, the headline's paired difference from it seed by seed
    (``diff_vs_sync``, ``diff_vs_sync_ci``, ``verdict_vs_sync``: above, below or tie)."""
    headlines = {
        cell.name: {r["seed"]: r["final_mean_test_accuracy"] for r in rows if r["cell"] == cell.name}
        for cell in sweep.cells
    }
    sync_of = {
        tuple(sorted(c.labels.items())): c.name
        for c in sweep.cells
        if c.arm == BASELINE and headlines[c.name]
    }
    table = []
    for cell in sweep.cells:
        mine = [r for r in rows if r["cell"] == cell.name]
        if not mine:
            continue
        entry: dict[str, Any] = {"cell": cell.name, "arm": cell.arm, **cell.labels, "seeds": len(mine)}
        for column in RESULT_COLUMNS:
            mean, std, n = mean_std([r[column] for r in mine])
            entry[column], entry[f"{column}_std"], entry[f"{column}_n"] = mean, std, n
        entry["final_mean_test_accuracy_ci"] = interval(list(headlines[cell.name].values()))[1]
        sync = sync_of.get(tuple(sorted(cell.labels.items())))
        diff = paired(headlines[cell.name], headlines[sync]) if sync and sync != cell.name else None
        entry["diff_vs_sync"] = None if diff is None else diff["mean"]
        entry["diff_vs_sync_ci"] = None if diff is None else diff["half"]
        entry["verdict_vs_sync"] = verdict(diff)
        table.append(entry)
    return table


def format_results(sweep: Sweep, table: Sequence[Mapping[str, Any]], target: float) -> str:
    """The per-cell table as Markdown."""
    axes = list(sweep.axes)
    header = [
        "arm",
        *axes,
        f"acc (last {FINAL_WINDOW} evals)",
        f"{LEVEL:.0%} interval",
        "− sync, paired",
        "last eval",
        "best acc",
        "val. rise, last fifth",
        "acc at equal time",
        "sim time (s)",
        f"time to {target:.3f} (s)",
        "mean τ",
        "max τ",
        "lost",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table:
        ttt = time_to_target_cell(
            r["time_to_target"], r["time_to_target_std"], r["time_to_target_n"], r["seeds"]
        )
        cells = [
            r["arm"],
            *(str(r[a]) for a in axes),
            mean_std_cell(r["final_mean_test_accuracy"], r["final_mean_test_accuracy_std"], ".3f"),
            bounds_cell(r["final_mean_test_accuracy"], r.get("final_mean_test_accuracy_ci")),
            _paired_cell(r),
            mean_std_cell(r["final_test_accuracy"], r["final_test_accuracy_std"], ".3f"),
            mean_std_cell(r["best_test_accuracy"], r["best_test_accuracy_std"], ".3f"),
            "—" if r["late_rise"] is None else f"{r['late_rise']:+.3f}",
            mean_std_cell(r["acc_at_equal_time"], r["acc_at_equal_time_std"], ".3f"),
            mean_std_cell(r["sim_time"], r["sim_time_std"], ".0f"),
            ttt,
            f"{r['mean_staleness']:.2f}",
            "—" if r["max_staleness"] is None else f"{r['max_staleness']:.0f}",
            f"{r['lost_updates']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = max(r["seeds"] for r in table)
    lines += [
        "",
        f"{seeds} seed(s) per cell; mean ± std over seeds. The headline is each run's mean test accuracy "
        f'over its last {FINAL_WINDOW} evaluations ("last eval": the last alone); target {target:.3f} test '
        'accuracy. "Equal time": per seed, the shortest simulated time any cell needed for its budget. Lost: '
        "jobs whose client went offline before they finished (mean per run). Intervals: Student's t over "
        "seeds at 95% (an accuracy's cut to [0, 1]); \"− sync, paired\": the cell's headline minus sync's in "
        "the same setting, seed by seed (a seed fixes partition, speeds and clock), with its interval and "
        'whether it excludes 0 (above, below) or not (tie). "Val. rise": how much validation accuracy (the '
        f"mean of {FINAL_WINDOW} evaluations) rose over the last fifth of the budget, mean over seeds; at "
        f"{PLATEAU_RISE} or more the runs stopped before a plateau.",
    ]
    return "\n".join(lines)


def _paired_cell(entry: Mapping[str, Any]) -> str:
    """``+0.012 [-0.010, +0.034] tie``; ``—`` for sync itself or a setting without sync."""
    if entry.get("diff_vs_sync") is None:
        return "—"
    text = interval_cell(entry["diff_vs_sync"], entry["diff_vs_sync_ci"], signed=True)
    return f"{text} {entry['verdict_vs_sync']}" if entry["verdict_vs_sync"] != "—" else text


def plot_final(sweep: Sweep, table: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Final test accuracy (mean ± std over seeds) along the first axis: one colour per arm, one line style
    per combination of the other axes' labels."""
    from matplotlib.figure import Figure

    first, *others = list(sweep.axes)
    labels = list(sweep.axes[first])
    colours = label_styles(list(dict.fromkeys(r["arm"] for r in table)))
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.add_subplot()
    series: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for r in table:
        key = (r["arm"], " ".join(f"{a}={r[a]}" for a in others))
        series.setdefault(key, {})[r[first]] = (
            r["final_mean_test_accuracy"],
            r["final_mean_test_accuracy_std"] or 0.0,
        )
    rest = list(dict.fromkeys(rest for _, rest in series))
    spread = 0.25 / max(len(series), 1)  # points of one x side by side, not on top of each other
    for index, ((arm, other), points) in enumerate(series.items()):
        xs = [i for i, label in enumerate(labels) if label in points]
        ax.errorbar(
            [x + (index - len(series) / 2) * spread for x in xs],
            [points[labels[i]][0] for i in xs],
            yerr=[points[labels[i]][1] for i in xs],
            color=colours[arm][0],
            ls=("-", "--", ":", "-.")[rest.index(other) % 4],
            marker="os^D"[rest.index(other) % 4],
            capsize=3,
            label=" ".join(x for x in (arm, other) if x),
        )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(first)
    ax.set_ylabel(f"test accuracy, last {FINAL_WINDOW} evaluations (mean ± std over seeds)")
    ax.set_title(f"sweep {sweep.name}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper")
    fig.savefig(path, dpi=120)
