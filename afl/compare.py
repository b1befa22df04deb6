"""AFL vs synchronous FedAvg on the same config: runs both, prints a table, writes a plot.

``python scripts/compare.py experiment=demo [key=value ...]`` — the overrides apply to every arm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from afl.config import load_config
from afl.errors import ConfigError
from afl.run import RunResult, run

# Each arm: the overrides that make it that algorithm. "afl" is the paper's method (staleness-aware
# aggregation and the delay-aware LR); "afl-const" is the same aggregation at the constant base LR (an
# ablation of the LR rule); "sync" is synchronous FedAvg at the base LR, the paper's baseline.
ARMS: dict[str, list[str]] = {
    "afl": ["federation.mode=async", "server.aggregator.name=afl", "server.lr_schedule.name=paper"],
    "afl-const": ["federation.mode=async", "server.aggregator.name=afl", "server.lr_schedule.name=constant"],
    "sync": ["federation.mode=sync", "server.aggregator.name=fedavg", "server.lr_schedule.name=constant"],
}


@dataclass
class Comparison:
    results: dict[str, RunResult]
    table: list[dict[str, Any]]
    target_accuracy: float
    output_dir: Path


def time_to_accuracy(
    history: Sequence[Mapping[str, Any]], target: float, key: str = "sim_time"
) -> float | None:
    """The first ``key`` (sim_time or client_updates) at which test accuracy reached ``target``."""
    for row in history:
        if row["test_accuracy"] >= target:
            return float(row[key])
    return None


def compare(
    overrides: Sequence[str] = (), arms: Mapping[str, Sequence[str]] | Sequence[str] = ARMS
) -> Comparison:
    """Run every arm with the same base overrides; all configs are checked before any run starts.

    Args:
        overrides: ``key=value`` strings for every arm (``output_dir`` names the comparison's folder).
        arms: name → overrides of each arm, or names of arms from :data:`ARMS`.
    """
    if not isinstance(arms, Mapping):
        unknown = [a for a in arms if a not in ARMS]
        if unknown:
            raise ConfigError("--arms", f"unknown arm {unknown[0]!r}; allowed: {', '.join(ARMS)}")
        arms = {a: ARMS[a] for a in arms}
    overrides = list(overrides)
    root_override = [o for o in overrides if o.startswith("output_dir=")]
    overrides = [o for o in overrides if not o.startswith("output_dir=")]
    configs = {name: load_config([*overrides, *arm]) for name, arm in arms.items()}
    first = next(iter(configs.values()))
    if root_override and root_override[-1].split("=", 1)[1] not in ("", "null"):
        root = Path(root_override[-1].split("=", 1)[1])
        if root.exists() and any(root.iterdir()):
            raise ConfigError("output_dir", f"{root} already exists and is not empty; choose another folder")
    else:
        root = Path("runs") / first.experiment / f"compare-seed{first.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    results: dict[str, RunResult] = {}
    for name, cfg in configs.items():
        cfg.output_dir = str(root / name)
        results[name] = run(cfg)
    target = min(r.summary["best_test_accuracy"] for r in results.values())
    table = []
    for name, r in results.items():
        s = r.summary
        table.append(
            {
                "arm": name,
                "algorithm": s["algorithm"],
                "mode": s["mode"],
                "final_acc": s["final_test_accuracy"],
                "best_acc": s["best_test_accuracy"],
                "sim_time": s["sim_time"],
                "sim_time_to_target": time_to_accuracy(r.history, target),
                "updates_to_target": time_to_accuracy(r.history, target, "client_updates"),
                "mean_staleness": s["mean_staleness"],
                "wall_time_s": s["wall_time_s"],
            }
        )
    (root / "comparison.json").write_text(json.dumps({"target_accuracy": target, "table": table}, indent=1))
    plot_comparison(results, root / "comparison.png")
    return Comparison(results=results, table=table, target_accuracy=target, output_dir=root)


def format_table(table: Sequence[Mapping[str, Any]], target: float) -> str:
    """A plain-text table of the comparison."""

    def fmt(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    lines = [
        f"{'arm':<9} {'algorithm':<9} {'mode':<5} {'final acc':>9} {'best acc':>8} {'sim time':>9} "
        f"{'t→' + format(target, '.3f'):>9} {'upd→tgt':>7} {'staleness':>9} {'wall s':>7}"
    ]
    for r in table:
        lines.append(
            f"{r['arm']:<9} {r['algorithm']:<9} {r['mode']:<5} {r['final_acc']:>9.4f} {r['best_acc']:>8.4f} "
            f"{r['sim_time']:>9.1f} {fmt(r['sim_time_to_target'], '.1f'):>9} "
            f"{fmt(r['updates_to_target'], '.0f'):>7} {r['mean_staleness']:>9.2f} {r['wall_time_s']:>7.1f}"
        )
    return "\n".join(lines)


def plot_comparison(results: Mapping[str, RunResult], path: Path) -> None:
    """Test accuracy against simulated time and against client updates, one line per arm."""
    curves = {
        f"{name} ({r.summary['algorithm']}, {r.summary['mode']})": r.history for name, r in results.items()
    }
    plot_curves(curves, path, title=describe(next(iter(results.values())).config))


def describe(cfg: Any) -> str:
    """A one-line description of a run's setting, for plot titles."""
    return (
        f"{cfg.experiment}: {cfg.dataset.name}, {cfg.model.name}, C={cfg.partition.num_clients}, "
        f"J={cfg.federation.concurrency}, {cfg.partition.scheme} α={cfg.partition.alpha}"
    )


def plot_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, title: str = "") -> None:
    """Plot evaluation rows (``test_accuracy`` against ``sim_time`` and ``client_updates``) per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, history in curves.items():
        acc = [float(row["test_accuracy"]) for row in history]
        axes[0].plot([float(row["sim_time"]) for row in history], acc, marker=".", label=label)
        axes[1].plot([int(row["client_updates"]) for row in history], acc, marker=".", label=label)
    axes[0].set_xlabel("simulated time (s)")
    axes[1].set_xlabel("client updates")
    axes[0].set_ylabel("test accuracy")
    fig.suptitle(title)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_run(output_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, str]], Any]:
    """Read a finished run's ``summary.json``, ``metrics.csv`` rows and ``config.yaml``."""
    import csv

    from omegaconf import OmegaConf

    out = Path(output_dir)
    missing = [f for f in ("summary.json", "metrics.csv", "config.yaml") if not (out / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{out} is not a finished run folder (missing {', '.join(missing)})")
    with (out / "metrics.csv").open() as f:
        history = list(csv.DictReader(f))
    return json.loads((out / "summary.json").read_text()), history, OmegaConf.load(out / "config.yaml")
