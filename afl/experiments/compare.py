"""A fair comparison of AFL with synchronous FedAvg: named arms, seeds, step sizes chosen on validation
data, and time to a target accuracy as the headline.

* An **arm** is a name and a few overrides (:data:`ARMS`). Its own options are scoped to it: the
  preset's ``compare.arms.NAME`` (selected step sizes) and command-line ``NAME:key=value`` apply to that
  arm only; plain ``key=value`` applies to every arm.
* **Seeds**: every arm runs on every seed; a seed fixes the partition, the validation split, the client
  speeds and the delays, so within a seed all arms see the same clients and data.
* **Selection** (:func:`select`): a grid per arm (``client.lr=3e-4,1e-3`` for every arm, or
  ``afl:server.aggregator.server_lr=0.1,0.2`` for one); each point runs on the selection seeds with a
  validation split held out of the training data, and the arm keeps the point with the best mean final
  *validation* accuracy. The test set is reported, never used to choose.
* **Table** (:func:`summarise`): mean ± std over seeds of final and best test accuracy, simulated time,
  simulated time to a target accuracy and its ratio sync ÷ arm, and accuracy at equal simulated time.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from operator import attrgetter
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from afl.arms import ARMS, BASELINE, DEFAULT_ARMS
from afl.config import EMPTY, load_config
from afl.errors import ConfigError
from afl.experiments.components import build_components
from afl.experiments.metrics import (
    FINAL_WINDOW,
    LEVEL,
    PLATEAU_RISE,
    final_mean,
    headline,
    interval,
    late_rise,
    load_run,
    mean_std,
    paired,
    plateau_budget,
    up_to,
    verdict,
)
from afl.experiments.parallel import RayLauncher, run_pending
from afl.experiments.plots import plot_bands
from afl.experiments.records import RunRecord, equal_times, run_records
from afl.experiments.wandb_runs import log_results, new_group, table_rows

DEFAULT_TARGET_FRACTION = 0.95


@dataclass
class Plan:
    """What a comparison runs: the preset, each arm's overrides, the seeds."""

    base: list[str]  # ["experiment=NAME"] or []
    arms: dict[str, list[str]]
    seeds: list[int]
    experiment: str = "default"
    group: str | None = None  # the comparison's own W&B group (set when it starts)

    def arm_overrides(self, arm: str, extra: Sequence[str] = ()) -> list[str]:
        """Overrides of one arm: the preset, the arm's own, then ``extra`` (e.g. ``seed=1``)."""
        return [*self.base, *self.arms[arm], *extra]


def _scoped(item: str) -> tuple[str | None, str]:
    """``"afl:client.lr=1e-3"`` → ``("afl", "client.lr=1e-3")``; an unscoped item → ``(None, item)``."""
    scope, sep, rest = item.partition(":")
    return (scope, rest) if sep and "=" not in scope else (None, item)


def parse_plan(
    overrides: Sequence[str], arms: Sequence[str] | None = None, seeds: Sequence[int] = (0,)
) -> Plan:
    """Each arm's overrides: ``arm=ARM`` (its rule and the preset's ``compare.arms.ARM``, composed by
    :func:`afl.config.load_config` as for a single run), the shared command-line overrides, then the
    arm-scoped ones (``ARM:key=value``).

    ``compare.arms.NAME`` of a built-in arm adds to it (e.g. its selected step sizes); for any other
    ``NAME`` it defines an arm of one's own, which the comparison runs by default beside
    :data:`DEFAULT_ARMS` (``--arms`` picks among both).

    Raises:
        ConfigError: an unknown arm, a scoped override for an arm not in the comparison, or no seeds.
    """
    if not seeds:
        raise ConfigError("--seeds", "give at least one seed, e.g. --seeds 0,1,2")
    base: list[str] = []
    shared: list[str] = []
    scoped: list[tuple[str, str]] = []
    for item in overrides:
        arm, rest = _scoped(item)
        key = item.split("=", 1)[0].lstrip("+")
        if arm is not None:
            scoped.append((arm, rest))
        elif key == "arm":
            raise ConfigError("arm", "a comparison runs the arms of --arms (e.g. --arms afl,sync)")
        elif key == "experiment":
            base = [item]
        elif key != "output_dir":
            shared.append(item)
    # the preset, with what defines arms or imports their components (the rest may not suit every arm)
    setting = [s for s in shared if s.split("=", 1)[0].lstrip("+").split(".")[0] in ("compare", "plugins")]
    preset = load_config([*base, *setting])
    recorded = {str(k): list(v) for k, v in preset.compare.arms.items()}
    own = [n for n in recorded if n not in ARMS]
    names = list(arms) if arms else [*DEFAULT_ARMS, *own]
    from afl.server.aggregators import AGGREGATORS  # (the preset's plug-ins are loaded: an arm each)

    for name in names:
        if name not in ARMS and name not in own and name not in AGGREGATORS.names():
            allowed = ", ".join([*ARMS, *own])
            raise ConfigError(
                "--arms", f"unknown arm {name!r}; allowed: {allowed} (or define one in compare.arms)"
            )
    for arm, rest in scoped:
        if arm not in names:
            raise ConfigError(f"{arm}:{rest}", f"arm {arm!r} is not in this comparison ({', '.join(names)})")
    return Plan(
        base=base,
        arms={n: [f"arm={n}", *shared, *(rest for arm, rest in scoped if arm == n)] for n in names},
        seeds=list(seeds),
        experiment=str(preset.experiment),
    )


PLAN_FILE = "plan.json"  # what a comparison's folder was started with: a continued one must match it


def output_root(overrides: Sequence[str], experiment: str, what: str) -> Path:
    """The comparison's folder: ``output_dir=`` if given (new, empty, or a comparison's folder to
    continue: one with ``plan.json``), else a stamped one."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("output_dir=")]
    if given and not given[-1].strip():
        raise ConfigError("output_dir", EMPTY["output_dir"])
    if given and given[-1] != "null":
        root = Path(given[-1])
        fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
        if not (fresh or (root / PLAN_FILE).is_file()):
            raise ConfigError(
                "output_dir",
                f"{root} already exists and holds no comparison to continue; choose another folder",
            )
        return root
    return Path("runs") / experiment / f"{what}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------- step-size selection
def grid_points(plan: Plan, arm: str, grid: Sequence[str]) -> list[list[str]]:
    """The grid points that apply to ``arm``: every combination of the axes it accepts.

    An axis is ``key=v1,v2,...`` (every arm that has the key) or ``ARM:key=v1,...`` (that arm only). An
    unscoped axis is skipped for an arm whose config rejects that key (e.g. ``server_lr`` for ``sync``).
    """
    axes: list[list[str]] = []
    for item in grid:
        scope, axis = _scoped(item)
        if scope is not None:
            if scope not in plan.arms:
                raise ConfigError(f"--grid {item}", f"arm {scope!r} is not in this comparison")
            if scope != arm:
                continue
        key, eq, values = axis.partition("=")
        choices = [v for v in values.split(",") if v]
        if not eq or not choices:
            raise ConfigError(f"--grid {axis}", "expected key=v1,v2,... (e.g. client.lr=3e-4,1e-3,3e-3)")
        probe = [f"{key}={choices[0]}"]
        try:
            load_config(plan.arm_overrides(arm, probe))
        except ConfigError as err:
            if scope is None and err.key.startswith(key):
                continue  # this arm has no such option
            raise
        axes.append([f"{key}={v}" for v in choices])
    return [list(p) for p in product(*axes)] if axes else [[]]


@dataclass
class Selection:
    """Validation results of the grid, per arm, and the chosen point."""

    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    chosen: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"points": self.points, "chosen": self.chosen}


def choose(points: Sequence[Mapping[str, Any]]) -> list[str]:
    """The point with the best mean final validation accuracy (the first of equals, in grid order); a
    point where a run diverged (``mean_val_accuracy`` None) is never chosen over one that finished."""

    def score(i: int) -> tuple[float, int]:
        mean = points[i]["mean_val_accuracy"]
        return (-math.inf if mean is None else mean, -i)

    return list(points[max(range(len(points)), key=score)]["overrides"])


#: What a diverging step size raises (afl.sim.loop): a result of the grid, never chosen.
DIVERGED = ("NonFiniteModel", "AllUpdatesRejected")


def select(
    plan: Plan,
    grid: Sequence[str],
    seeds: Sequence[int],
    root: Path,
    jobs: int = 1,
    launcher: RayLauncher | None = None,
) -> Selection:
    """Run each arm's grid on ``seeds`` (``jobs`` at a time) and choose its step sizes by validation
    accuracy. A point whose run diverged, or failed otherwise, is recorded with why and never chosen.

    Raises:
        ConfigError: no validation split.
        RuntimeError: every point of an arm failed for a reason other than divergence.
    """
    selection = Selection()
    tasks: list[Any] = []  # (index, label, folder, config): every config composed and checked before any run
    runs: list[tuple[dict[str, Any], int]] = []  # each task's grid point and seed
    for arm in plan.arms:
        for point in grid_points(plan, arm, grid):
            entry: dict[str, Any] = {"overrides": point, "val_accuracy": {}, "test_accuracy": {}}
            selection.points.setdefault(arm, []).append(entry)
            label = ",".join(p.replace("server.aggregator.", "").replace("client.", "") for p in point)
            for seed in seeds:
                cfg = load_config(plan.arm_overrides(arm, [*point, f"seed={seed}"]))
                if cfg.dataset.val_fraction <= 0:
                    raise ConfigError(
                        "dataset.val_fraction",
                        "selection needs a validation split held out of the training data: set it > 0 "
                        "(e.g. dataset.val_fraction=0.1)",
                    )
                cfg.output_dir = str(root / "select" / arm / (label or "base") / f"seed{seed}")
                _in_group(cfg, plan, "selection")
                runs.append((entry, seed))
                name = f"select {arm} {label or 'base'} seed {seed}"
                tasks.append((len(tasks), name, Path(cfg.output_dir), _given(cfg)))
    outcomes = run_pending(tasks, jobs, launcher=launcher)
    for index, (entry, seed) in enumerate(runs):
        outcome = outcomes[index]
        if outcome.ok:
            summary = load_run(outcome.output_dir)[0]
        else:  # a step size that diverges is a result; so is a run that failed, with why
            why = "diverged" if outcome.error_type in DIVERGED else "failed"
            entry.setdefault(why, {})[str(seed)] = outcome.error
            summary = {"final_val_accuracy": None, "final_test_accuracy": None}
        entry["val_accuracy"][str(seed)] = summary["final_val_accuracy"]
        entry["test_accuracy"][str(seed)] = summary["final_test_accuracy"]  # reported, never used
        values = list(entry["val_accuracy"].values())
        entry["mean_val_accuracy"] = None if None in values else statistics.fmean(values)
    for arm, points in selection.points.items():
        if all("failed" in p for p in points):
            raise RuntimeError(f"every selection run of {arm} failed: {points[0]['failed']}")
        selection.chosen[arm] = choose(points)
    (root / "selection.json").write_text(json.dumps(selection.to_json(), indent=1))
    return selection


def preset_snippet(selection: Selection, command: str) -> str:
    """YAML to paste into a preset so later comparisons reuse the selected step sizes."""
    lines = [f"# selected by validation accuracy: {command}", "compare:", "  arms:"]
    for arm, chosen in selection.chosen.items():
        lines.append(f"    {arm}: [{', '.join(chosen)}]")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the comparison
@dataclass
class Comparison:
    """Every run's summary and evaluation rows, per arm and seed, and the table over seeds."""

    runs: Mapping[str, Mapping[int, Mapping[str, Any]]]  # arm -> seed -> {summary, history, output_dir}
    table: list[dict[str, Any]]
    target_accuracy: float
    output_dir: Path
    equal_time: dict[int, float]
    records: Mapping[str, Mapping[int, RunRecord]]  # arm -> seed -> what the run measured
    warnings: list[str] = field(default_factory=list)  # said under the table


def compare(
    overrides: Sequence[str] = (),
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    grid: Sequence[str] = (),
    select_seeds: Sequence[int] | None = None,
    target: float | None = None,
    target_fraction: float = DEFAULT_TARGET_FRACTION,
    formats: Sequence[str] = ("png",),
    jobs: int = 1,
    launcher: RayLauncher | None = None,
) -> tuple[Comparison, Selection | None]:
    """Select step sizes (if ``grid``), then run every arm on every seed and summarise; ``jobs`` runs at
    once in worker processes (:mod:`afl.experiments.parallel`: the same files as one at a time). A run
    that fails is left out of the table, which says so.

    Every config is composed and checked, and its components built, before the first run starts.
    """
    plan = parse_plan(overrides, arms, seeds)
    for arm in plan.arms:  # check every arm's config, and build its components, up front
        build_components(load_config(plan.arm_overrides(arm, [f"seed={plan.seeds[0]}"])))
    root = output_root(overrides, plan.experiment, "compare")
    plan.group = _start_or_continue(root, plan, grid, select_seeds)
    selection = None
    if grid:
        selection = select(plan, grid, list(select_seeds or plan.seeds[:1]), root, jobs, launcher)
        plan.arms = {arm: [*o, *selection.chosen[arm]] for arm, o in plan.arms.items()}
    configs = {
        (arm, seed): load_config(plan.arm_overrides(arm, [f"seed={seed}"]))
        for seed in plan.seeds
        for arm in plan.arms
    }
    for (arm, seed), cfg in configs.items():
        cfg.output_dir = str(root / arm / f"seed{seed}")
        _in_group(cfg, plan)
    pending = [
        (key, f"{key[0]} seed {key[1]}", Path(cfg.output_dir), _given(cfg)) for key, cfg in configs.items()
    ]
    outcomes = run_pending(pending, jobs, launcher=launcher)
    runs: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in plan.arms}
    failed = []
    for (arm, seed), outcome in ((key, outcomes[key]) for key in configs):  # in the plan's order
        if not outcome.ok:
            failed.append(f"{arm} seed {seed} failed ({outcome.error}): left out of the table")
            continue
        summary, history, _ = load_run(outcome.output_dir)  # however it ran: from its files
        runs[arm][seed] = {"summary": summary, "history": history, "output_dir": outcome.output_dir}
    runs = {arm: per_seed for arm, per_seed in runs.items() if per_seed}
    if not runs:
        raise RuntimeError(f"every run of the comparison failed: {failed[0]}")
    comparison = summarise(runs, root, target=target, target_fraction=target_fraction)
    comparison.warnings.extend(failed)
    write_outputs(comparison, plan, selection, configs[next(iter(configs))], formats)
    return comparison, selection


def _given(cfg: DictConfig) -> Callable[[], DictConfig]:
    """A config maker that hands back ``cfg`` (composed and checked before any run started)."""
    return lambda: cfg


def _start_or_continue(
    root: Path, plan: Plan, grid: Sequence[str], select_seeds: Sequence[int] | None
) -> str:
    """Write ``plan.json`` in a new comparison's folder and return its new W&B group; in a folder that
    holds one (a comparison to continue), check that it is the same comparison and return its group.

    Raises:
        ConfigError: the folder holds another comparison (other arms, overrides, seeds or grid).
    """
    wanted = {
        "experiment": plan.experiment,
        "arms": plan.arms,
        "seeds": plan.seeds,
        "grid": list(grid),
        "select_seeds": None if select_seeds is None else list(select_seeds),
    }
    saved_file = root / PLAN_FILE
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        differs = [key for key, value in wanted.items() if saved.get(key) != value]
        if differs:
            raise ConfigError(
                "output_dir",
                f"{root} holds another comparison (its {', '.join(differs)} differ); choose another folder",
            )
        return str(saved["group"])
    root.mkdir(parents=True, exist_ok=True)
    group = new_group(plan.experiment, root)
    saved_file.write_text(json.dumps({**wanted, "group": group}, indent=1))
    return group


def dry_run(
    overrides: Sequence[str] = (),
    arms: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    *,
    grid: Sequence[str] = (),
    select_seeds: Sequence[int] | None = None,
    jobs: int = 1,
) -> str:
    """What :func:`compare` would run, and about how long it would take here (:mod:`afl.experiments.estimate`:
    one short calibration run); runs nothing else and writes nothing."""
    from afl.experiments.estimate import calibrate, describe

    plan = parse_plan(overrides, arms, seeds)
    runs = [load_config(plan.arm_overrides(arm, [f"seed={s}"])) for s in plan.seeds for arm in plan.arms]
    selection = [
        load_config(plan.arm_overrides(arm, [*point, f"seed={s}"]))
        for arm in plan.arms
        for point in (grid_points(plan, arm, grid) if grid else [])
        for s in (select_seeds or plan.seeds[:1])
    ]
    return describe({"selection": selection, "comparison": runs}, calibrate(runs[0]), jobs)


def _in_group(cfg: DictConfig, plan: Plan, *tags: str) -> None:
    """Puts a run of the comparison in its W&B group (selection runs: in the group's ``-selection``),
    tagged with it."""
    group = f"{plan.group}-selection" if "selection" in tags else plan.group
    cfg.logging.wandb.group = group
    cfg.logging.wandb.tags = [*cfg.logging.wandb.tags, f"compare:{plan.group}", *tags]


def resummarise(
    root: Path, *, target: float | None = None, target_fraction: float = DEFAULT_TARGET_FRACTION
) -> Comparison:
    """The table of a finished comparison folder again, e.g. for another target; runs nothing.

    Raises:
        ConfigError: ``root`` is not a finished comparison folder.
    """
    return summarise(finished_runs(root), Path(root), target=target, target_fraction=target_fraction)


def finished_runs(root: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """The runs of a finished comparison folder by arm and seed: ``{summary, history, output_dir}``.

    Raises:
        ConfigError: ``root`` is not a finished comparison folder.
    """
    saved = Path(root) / "comparison.json"
    if not saved.is_file():
        raise ConfigError("--from", f"{root} is not a finished comparison folder (no comparison.json)")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, folders in json.loads(saved.read_text())["runs"].items():
        for seed, relative in folders.items():
            folder = str(Path(root) / relative)
            summary, history, _ = load_run(folder)
            runs.setdefault(arm, {})[int(seed)] = {
                "summary": summary,
                "history": history,
                "output_dir": folder,
            }
    return runs


def format_budgets(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], budgets: Sequence[int]) -> str:
    """The plateau rule on a comparison of long runs: per arm and shorter budget (each run cut there:
    :func:`~afl.experiments.metrics.up_to`), the headline and the late rise of validation accuracy, means
    over seeds; and the smallest budget at which sync's (else every arm's) mean late rise is under
    :data:`~afl.experiments.metrics.PLATEAU_RISE`: the budget the rule chooses."""
    lines = ["| arm | " + " | ".join(f"{b} updates" for b in budgets) + " | plateau from |"]
    lines.append("|" + "---|" * (len(budgets) + 2))
    chosen: dict[str, int | None] = {}
    for arm, per_seed in runs.items():
        cells, rises = [], {}
        for budget in budgets:
            cut = [up_to(run["history"], budget) for run in per_seed.values()]
            heads = [final_mean(h)[0] for h in cut if h]
            rise = [r for r in (late_rise(h) for h in cut) if r is not None]
            rises[budget] = statistics.fmean(rise) if rise else None
            shown = "—" if rises[budget] is None else f"{rises[budget]:+.3f}"
            cells.append(f"{statistics.fmean(heads):.3f} ({shown})" if heads else "—")
        chosen[arm] = plateau_budget(rises)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {chosen[arm] or 'not reached'} |")
    if BASELINE in chosen:
        rule: float | None = chosen[BASELINE]
    else:  # no sync: the budget at which every arm levelled off
        rule = max((b or math.inf for b in chosen.values()), default=None)
    seeds = ", ".join(map(str, sorted({s for per_seed in runs.values() for s in per_seed})))
    whose = BASELINE if BASELINE in chosen else "every arm"
    answer = "none of these" if rule in (None, math.inf) else f"**{rule} client updates**"
    lines += [
        "",
        f"Each cell: the headline (mean test accuracy of the last {FINAL_WINDOW} evaluations) and, in "
        "brackets, the late rise (validation accuracy's rise over the last fifth) of the runs cut at that "
        f"budget; means over seeds {seeds}. The plateau rule: the smallest budget at which the late rise is "
        f"under {PLATEAU_RISE}, and again at the next budget here, for {whose}: {answer}.",
    ]
    return "\n".join(lines)


def summarise(
    runs: Mapping[str, Mapping[int, Mapping[str, Any]]],
    root: Path,
    *,
    target: float | None = None,
    target_fraction: float = DEFAULT_TARGET_FRACTION,
) -> Comparison:
    """The comparison table from finished runs (``summary`` and ``history`` per arm and seed).

    The headline, by which arms are ranked and judged, is each run's mean test accuracy over its last
    ``logging.final_window`` evaluations (:func:`~afl.experiments.metrics.headline`), never one
    evaluation. The target accuracy is ``target`` or ``target_fraction`` × the best arm's mean headline.
    "Equal time" for a seed is the shortest simulated time any arm took for the budget on that seed.
    """
    if target is None:
        target = target_fraction * max(
            statistics.fmean(headline(r) for r in v.values()) for v in runs.values()
        )
    equal_time = equal_times(runs)
    records = run_records(runs, equal_time, target)
    table = [_arm_row(arm, runs[arm], records[arm]) for arm in runs]
    baseline = next((r for r in table if r["arm"] == BASELINE), None)
    for row in table:
        row["speedup_vs_sync"] = speedup(row, baseline)
    _add_intervals(table, {a: {s: r.headline for s, r in v.items()} for a, v in records.items()})
    return Comparison(
        runs=runs,
        table=table,
        target_accuracy=target,
        output_dir=root,
        equal_time=equal_time,
        records=records,
        warnings=_target_warnings(runs, target),
    )


#: The table's columns averaged over seeds: column -> the RunRecord attribute it averages.
TABLE_COLUMNS = {
    "final_mean_acc": "headline",
    "final_acc": "last",
    "best_acc": "best",
    "sim_time": "sim_time",
    "time_to_target": "to_target.time",
    "updates_to_target": "to_target.updates",
    "acc_at_equal_time": "acc_at_equal_time",
    "mean_staleness": "mean_staleness",
    "wall_time_s": "wall_time_s",
    "late_rise": "late_rise",
}


def _arm_row(
    arm: str, per_seed: Mapping[int, Mapping[str, Any]], records: Mapping[int, RunRecord]
) -> dict[str, Any]:
    """One arm's row of the table: mean and std over its seeds of every column (:data:`TABLE_COLUMNS`,
    from each run's record), how many seeds reached the target, ended at or above it
    (``ends_at_target``), or crossed it and fell below (``fell_below``)."""
    summaries = [r["summary"] for r in per_seed.values()]
    row: dict[str, Any] = {
        "arm": arm,
        "algorithm": summaries[0]["algorithm"],
        "mode": summaries[0]["mode"],
        "seeds": list(per_seed),
        "final_window": max(r.window for r in records.values()),
    }
    for name, attribute in TABLE_COLUMNS.items():
        mean, std, n = mean_std([attrgetter(attribute)(r) for r in records.values()])
        row[name], row[f"{name}_std"] = mean, std
        if name in ("time_to_target", "updates_to_target"):
            row[f"{name}_reached"] = n
        if name == "acc_at_equal_time":  # None for a seed with no evaluation by then
            row[f"{name}_seeds"] = n
    # the seeds that end at or above the target (a speed-up is credited only where every seed does), and
    # those that reached it, then ended under it on the headline
    row["ends_at_target"] = sum(r.to_target.ends_at for r in records.values())
    row["fell_below"] = sum(r.to_target.fell_below for r in records.values())
    return row


def _target_warnings(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], target: float) -> list[str]:
    """A warning when the target is at or below chance accuracy (reaching it says nothing)."""
    summaries = [r["summary"] for per_seed in runs.values() for r in per_seed.values()]
    classes = [int(s["num_classes"]) for s in summaries if "num_classes" in s]  # runs before 0.1 lack it
    if classes and target <= 1 / min(classes):
        chance = f"1/{min(classes)} = {1 / min(classes):.3f}"
        return [
            f"the target {target:.3f} is at or below chance ({chance}): reaching it says nothing; give one "
            "with --target"
        ]
    return []


def _add_intervals(table: Sequence[dict[str, Any]], per_seed: Mapping[str, Mapping[int, float]]) -> None:
    """Per row: the 95% t interval of the mean headline (``final_mean_acc_ci``, its half-width) and the
    paired differences of the headline, seed by seed, against sync and against the best arm (the
    highest mean headline): ``diff_vs_sync``, ``diff_vs_sync_ci``, ``verdict_vs_sync`` (above, below or
    tie: whether the interval excludes 0), and the same ``…_vs_best`` with ``best_arm``."""
    best = max(table, key=lambda r: r["final_mean_acc"])["arm"]
    for row in table:
        row["final_mean_acc_ci"] = interval(list(per_seed[row["arm"]].values()))[1]
        row["best_arm"] = best
        for name, other in (("sync", BASELINE), ("best", best)):
            diff = None
            if other in per_seed and other != row["arm"]:
                diff = paired(per_seed[row["arm"]], per_seed[other])
            row[f"diff_vs_{name}"] = None if diff is None else diff["mean"]
            row[f"diff_vs_{name}_ci"] = None if diff is None else diff["half"]
            row[f"diff_vs_{name}_seeds"] = None if diff is None else diff["n"]
            row[f"verdict_vs_{name}"] = verdict(diff)


def holds_target(row: Mapping[str, Any]) -> bool:
    """Whether every seed of a table row reached the target and ended at or above it."""
    n = len(row["seeds"])
    return row["time_to_target_reached"] == n and row.get("ends_at_target", n) == n


def speedup(row: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float | None:
    """The baseline's time to target ÷ the arm's: only where both reached the target on every seed and
    ended there (an arm that crossed it once and fell back is credited nothing), the arm after time 0."""
    if baseline is None or not (holds_target(row) and holds_target(baseline)) or row["time_to_target"] <= 0:
        return None
    return float(baseline["time_to_target"]) / float(row["time_to_target"])


def _speedup_cell(row: Mapping[str, Any]) -> str:
    if row["speedup_vs_sync"] is not None:
        return f"{row['speedup_vs_sync']:.2f}×"
    n, fell = len(row["seeds"]), row.get("fell_below", 0)
    return f"— (ends below: {fell}/{n})" if fell else "—"


def mean_std_cell(mean: float | None, std: float | None, spec: str) -> str:
    """``mean ± std`` in ``spec`` (the mean alone where std is 0 or None; ``—`` without a mean)."""
    if mean is None:
        return "—"
    return f"{mean:{spec}} ± {std:{spec}}" if std else f"{mean:{spec}}"


def time_to_target_cell(mean: float | None, std: float | None, reached: int, runs: int) -> str:
    """A table cell for the time to target: mean ± std over the runs that reached it, and how many did."""
    text = mean_std_cell(mean, std, ".0f")
    return text if reached == runs else f"{text} ({reached}/{runs} reached)"


def _seeds_note(row: Mapping[str, Any]) -> str:
    """``" (k/n seeds)"`` when a mean covers fewer seeds than the arm ran."""
    k, n = row.get("acc_at_equal_time_seeds", len(row["seeds"])), len(row["seeds"])
    return f" ({k}/{n} seeds)" if k < n else ""


def format_table(comparison: Comparison) -> str:
    """The table as Markdown, best headline first: mean ± std over seeds."""
    c = comparison
    n_seeds = max(len(r["seeds"]) for r in c.table)
    k = max(r.get("final_window", FINAL_WINDOW) for r in c.table)
    header = (
        f"| arm | acc (last {k} evals) | last eval | best acc | sim time (s) | time to "
        f"{c.target_accuracy:.3f} (s) | sync ÷ arm | acc at equal time | updates to target | mean τ |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in sorted(c.table, key=lambda r: -r.get("final_mean_acc", r["final_acc"])):
        ttt = time_to_target_cell(
            r["time_to_target"], r["time_to_target_std"], r["time_to_target_reached"], len(r["seeds"])
        )
        speed = _speedup_cell(r)
        cells = [
            r["arm"],
            mean_std_cell(r.get("final_mean_acc"), r.get("final_mean_acc_std"), ".3f"),
            mean_std_cell(r["final_acc"], r["final_acc_std"], ".3f"),
            mean_std_cell(r["best_acc"], r["best_acc_std"], ".3f"),
            mean_std_cell(r["sim_time"], r["sim_time_std"], ".0f"),
            ttt,
            speed,
            mean_std_cell(r["acc_at_equal_time"], r["acc_at_equal_time_std"], ".3f") + _seeds_note(r),
            time_to_target_cell(
                r["updates_to_target"],
                r["updates_to_target_std"],
                r["updates_to_target_reached"],
                len(r["seeds"]),
            ),
            f"{r['mean_staleness']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    times = ", ".join(f"{t:.0f}" for t in c.equal_time.values())
    lines.append("")
    lines.append(
        f"{n_seeds} seed(s); mean ± std. Ranked by the headline, each run's mean test accuracy over its last "
        f'{k} evaluations ("last eval": the last alone). Target {c.target_accuracy:.3f} test accuracy; "(k/n '
        'reached)": the mean is over the k seeds that reached it; a speed-up only where every seed of both '
        'arms reached the target and ends at or above it on the headline ("ends below": seeds that crossed '
        'it and ended under). "Equal time": per seed, the shortest simulated time any arm needed for the '
        f"budget ({times} s)."
    )
    differences = format_differences(c)
    if differences:
        lines += ["", *differences]
    lines.extend(f"warning: {w}" for w in c.warnings)
    return "\n".join(lines)


def interval_cell(mean: float | None, half: float | None, signed: bool = False) -> str:
    """``mean [low, high]`` (``—`` without a mean; the mean alone without an interval). An accuracy's
    interval (``signed`` False) is cut to [0, 1], a difference's to [−1, 1]: the values they can take.

    Example:
        >>> interval_cell(0.9, 0.15), interval_cell(-0.02, 0.01, signed=True)
        ('0.900 [0.750, 1.000]', '-0.020 [-0.030, -0.010]')
    """
    if mean is None:
        return "—"
    spec = "+.3f" if signed else ".3f"
    bounds = bounds_cell(mean, half, signed)
    return f"{mean:{spec}}" if half is None else f"{mean:{spec}} {bounds}"


def bounds_cell(mean: float | None, half: float | None, signed: bool = False) -> str:
    """``[low, high]`` of :func:`interval_cell` alone (``—`` without an interval)."""
    if mean is None or half is None:
        return "—"
    spec, floor = ("+.3f", -1.0) if signed else (".3f", 0.0)
    return f"[{max(floor, mean - half):{spec}}, {min(1.0, mean + half):{spec}}]"


def format_differences(comparison: Comparison) -> list[str]:
    """The headline's 95% intervals and the paired differences (arm − sync, arm − the best arm), as
    Markdown lines: the table a claim that one arm beats another must rest on."""
    rows = sorted(comparison.table, key=lambda r: -r["final_mean_acc"])
    if not rows or "diff_vs_best" not in rows[0]:
        return []  # a table from before the intervals existed
    best = rows[0]["best_arm"]
    arms = {r["arm"] for r in rows}
    against = ["sync"] if BASELINE in arms else []  # the columns of differences: to sync, to the best arm
    if best != BASELINE and len(arms) > 1:
        against.append("best")
    level = f"{LEVEL:.0%}"
    header = [f"arm | headline, {level} interval | val. rise, last fifth"]
    for name in against:
        arm = BASELINE if name == "sync" else best
        header.append(f"arm − {arm}, paired | vs {arm}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * (3 + 2 * len(against))]
    for r in rows:
        rise = r.get("late_rise")
        cells = [
            r["arm"],
            interval_cell(r["final_mean_acc"], r["final_mean_acc_ci"]),
            "—" if rise is None else f"{rise:+.3f}" + ("" if rise < PLATEAU_RISE else " (rising)"),
        ]
        for name in against:
            cells.append(interval_cell(r[f"diff_vs_{name}"], r[f"diff_vs_{name}_ci"], signed=True))
            cells.append(r[f"verdict_vs_{name}"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{level} Student's t intervals over seeds (n − 1 degrees of freedom; an accuracy's cut to [0, 1]). "
        "Paired: the difference of "
        "the headlines seed by seed (a seed fixes the partition, the speeds and the clock for every arm), "
        'then its interval; "above"/"below": the interval excludes 0; "tie": it holds 0 (the seeds '
        'do not separate the two); "—": fewer than two seeds, or the arm itself. "Val. rise, last fifth": '
        f"the mean over seeds of how much validation accuracy (the mean of {FINAL_WINDOW} evaluations) rose "
        f'over the last fifth of the budget; at {PLATEAU_RISE} or more ("rising") the budget stopped '
        "before a plateau, and the table compares the arms before they converged.",
    ]
    return lines


def write_outputs(
    comparison: Comparison,
    plan: Plan,
    selection: Selection | None,
    cfg: DictConfig | None = None,
    formats: Sequence[str] = ("png",),
) -> None:
    """comparison.md, comparison.png (and the figure in the other ``formats``, with its caption
    comparison.caption.md), the comparison's own W&B run (with ``cfg``, a config of one of its runs: the
    table, the target, each run's time and updates to it, the figure) and comparison.json (the table, the
    target, each run's folder and overrides, where the W&B runs are)."""
    root = comparison.output_dir
    (root / "comparison.md").write_text(format_table(comparison) + "\n")
    histories = {a: [r["history"] for r in v.values()] for a, v in comparison.runs.items()}
    configs = {a: [load_run(r["output_dir"])[2] for r in v.values()] for a, v in comparison.runs.items()}
    for fmt in dict.fromkeys(["png", *formats]):
        plot_bands(
            histories, root / f"comparison.{fmt}", title=f"afl-compare {plan.experiment}", configs=configs
        )
    wandb = None if cfg is None else log_comparison(comparison, plan, cfg)
    payload = {
        "wandb": wandb,
        "target_accuracy": comparison.target_accuracy,
        "equal_time": {str(k): v for k, v in comparison.equal_time.items()},
        "table": comparison.table,
        "arms": plan.arms,
        # run folders relative to the comparison's folder, so that it can be moved as a whole
        "runs": {
            a: {str(s): os.path.relpath(r["output_dir"], root) for s, r in v.items()}
            for a, v in comparison.runs.items()
        },
        "selection": None if selection is None else selection.to_json(),
    }
    (root / "comparison.json").write_text(json.dumps(payload, indent=1))


def per_run_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per run: arm, seed, its final and best accuracy, its time and updates to the target."""
    rows = []
    for arm, per_seed in comparison.runs.items():
        for seed, r in per_seed.items():
            record = comparison.records[arm][seed]
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "final_test_accuracy": record.last,
                    "best_test_accuracy": record.best,
                    "time_to_target": record.to_target.time,
                    "updates_to_target": record.to_target.updates,
                    "wandb_run_id": r["summary"].get("wandb_run_id"),
                }
            )
    return rows


def log_comparison(comparison: Comparison, plan: Plan, cfg: DictConfig) -> dict[str, Any]:
    """The comparison's own W&B run (job type ``comparison``) in its runs' group: the table (``results``),
    one row per run (``runs``), the figure, and in its summary the target and per arm its time and
    updates to the target and speed-up over sync (``ARM/time_to_target``, …)."""
    summary: dict[str, Any] = {"target_accuracy": comparison.target_accuracy}
    for row in comparison.table:
        for key in (
            "final_mean_acc",
            "final_mean_acc_ci",
            "final_acc",
            "time_to_target",
            "updates_to_target",
            "speedup_vs_sync",
            "diff_vs_sync",
            "diff_vs_sync_ci",
            "verdict_vs_sync",
        ):
            summary[f"{row['arm']}/{key}"] = row[key]
    root = comparison.output_dir
    return log_results(
        cfg,
        kind="comparison",
        out=root,
        tags=[f"experiment:{plan.experiment}", f"compare:{plan.group}"],
        config={"experiment": plan.experiment, "arms": plan.arms, "seeds": plan.seeds, "base": plan.base},
        tables={"results": table_rows(comparison.table), "runs": table_rows(per_run_rows(comparison))},
        images={"figure": root / "comparison.png"},
        summary=summary,
    )
