"""Figures of evaluation rows: curves against simulated time and client updates, mean ± std over seeds
(matplotlib's Figure API, no global backend)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- figures and run folders
#: The setting a plot title names: (prefix, config key), in order.
_SETTING = (
    ("", "experiment"),
    (": ", "dataset.name"),
    (", ", "model.name"),
    (", C=", "partition.num_clients"),
    (", J=", "federation.concurrency"),
    (", ", "partition.scheme"),
    (" α=", "partition.alpha"),
)


def describe(*cfgs: Any) -> str:
    """A one-line description of the runs' setting, for plot titles: each value once where the runs share
    it, all of them (``a|b``) where they differ.

    Example:
        >>> from omegaconf import OmegaConf
        >>> a = OmegaConf.create({"experiment": "demo", "dataset": {"name": "digits"},
        ...     "model": {"name": "cnn"}, "federation": {"concurrency": 5},
        ...     "partition": {"num_clients": 10, "scheme": "dirichlet", "alpha": 0.5}})
        >>> describe(a)
        'demo: digits, cnn, C=10, J=5, dirichlet α=0.5'
        >>> b = a.copy(); b.federation.concurrency = 3; b.model.name = "lenet"
        >>> describe(a, b)
        'demo: digits, cnn|lenet, C=10, J=5|3, dirichlet α=0.5'
    """
    from omegaconf import OmegaConf

    parts = []
    for prefix, key in _SETTING:
        values = dict.fromkeys(str(OmegaConf.select(c, key)) for c in cfgs)
        parts.append(prefix + "|".join(values))
    return "".join(parts)


def _step_curve(
    history: Sequence[Mapping[str, Any]], xs: Sequence[float], key: str, metric: str = "test_accuracy"
) -> list[float]:
    """``metric`` of the last evaluation at or before each x (NaN before the first)."""
    points = [(float(r[key]), float(r[metric])) for r in history]
    out, j, value = [], 0, math.nan
    for x in xs:
        while j < len(points) and points[j][0] <= x + 1e-9:
            value = points[j][1]
            j += 1
        out.append(value)
    return out


METRIC_LABELS = {"test_accuracy": "test accuracy", "test_loss": "test loss"}


def label_styles(labels: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """A colour and a line style per label: tab10's colours for up to 10 labels, tab20's beyond, reused
    with another line style past 20."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: (cmap(i % cmap.N), ("-", "--", ":")[i // cmap.N % 3]) for i, label in enumerate(labels)}


def _band(
    ax: Any,
    histories: Sequence[Sequence[Mapping[str, Any]]],
    key: str,
    metric: str,
    label: str,
    color: Any,
    style: str = "-",
) -> None:
    """``metric`` against ``key`` on ``ax``: the mean over ``histories`` (seeds) as a line, mean ± std as a
    band, where every seed has a value."""
    n = len(histories)
    name = f"{label} ({n} seeds)" if n > 1 else label
    end = max(float(h[-1][key]) for h in histories)
    xs = sorted({float(r[key]) for h in histories for r in h} | {end})
    few = max(len(h) for h in histories) <= 2  # a line alone would not show one point
    if key == "sim_time" and not few:
        xs = [end * i / 300 for i in range(301)]
    ys = [_step_curve(h, xs, key, metric) for h in histories]
    mean, low, high = [], [], []
    for column in zip(*ys):
        vals = [v for v in column if not math.isnan(v)]
        m = statistics.fmean(vals) if len(vals) == n else math.nan  # where every seed has one
        sd = statistics.stdev(vals) if len(vals) == n and n > 1 else 0.0
        mean.append(m)
        low.append(m - sd)
        high.append(m + sd)
    drawstyle = "steps-post" if key == "sim_time" else "default"
    ax.plot(
        xs, mean, color=color, ls=style, label=name, drawstyle=drawstyle, lw=1.8, marker="o" if few else None
    )
    if n > 1:
        ax.fill_between(xs, low, high, color=color, alpha=0.18, step="post" if key == "sim_time" else None)


def plot_band_panels(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]],
    path: Path,
    title: str = "",
    metric: str = "test_accuracy",
) -> Any:
    """One row of two panels (against simulated time, against client updates) per entry of ``panels``
    (its title → label → the label's runs), bands as :func:`plot_bands` draws them; a label has one colour
    in every row. For many labels in several settings (a sweep's arms in each cell of its other axes)."""
    from matplotlib.figure import Figure

    styles = label_styles(list(dict.fromkeys(label for curves in panels.values() for label in curves)))
    fig = Figure(figsize=(12, 3.2 * len(panels) + 0.8), layout="constrained")
    grid = fig.subplots(len(panels), 2, squeeze=False, sharey=True)
    for axes, (heading, curves) in zip(grid, panels.items()):
        for label, histories in curves.items():
            for ax, key in zip(axes, ("sim_time", "client_updates")):
                _band(ax, histories, key, metric, label, *styles[label])
        axes[0].set_title(heading, fontsize=10, loc="left")
        axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
        for ax in axes:
            ax.grid(alpha=0.3)
    grid[-1][0].set_xlabel("simulated time (s)")
    grid[-1][1].set_xlabel("client updates")
    handles = {label: h for ax in grid.flat for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 5))
    seeds = any(len(h) > 1 for curves in panels.values() for h in curves.values())
    fig.suptitle(title + ("  (line: mean over seeds; band: ± 1 std)" if seeds else ""))
    fig.savefig(path, dpi=120)
    return fig


def plot_bands(
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: Path,
    title: str = "",
    metrics: Sequence[str] = ("test_accuracy",),
    references: Sequence[tuple[float, str]] = (),
) -> Any:
    """Each of ``metrics`` (a row of panels) against simulated time and against client updates: per label,
    the mean over its runs (seeds) as a line and mean ± std as a band. Up to 20 labels get their own
    colour, more reuse them with another line style. ``references``: ``(value, label)`` pairs drawn as
    dashed horizontal lines on the first metric's panels (e.g. an accuracy a paper reports). Uses
    matplotlib's Figure API (no global backend); returns the figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2 * len(metrics) + 0.4 * (len(curves) // 5)))
    grid = fig.subplots(len(metrics), 2, sharex="col", squeeze=False)
    styles = label_styles(list(curves))
    for label, histories in curves.items():
        for axes, metric in zip(grid, metrics):
            for ax, key in zip(axes, ("sim_time", "client_updates")):
                _band(ax, histories, key, metric, label, *styles[label])
    for index, (value, label) in enumerate(references):
        for ax in grid[0]:
            ax.axhline(value, color="0.25", ls=("--", ":", "-.")[index % 3], lw=1.2, label=label)
    for axes, metric in zip(grid, metrics):
        axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
        axes[1].sharey(axes[0])
        for ax in axes:
            ax.grid(alpha=0.3)
    grid[-1][0].set_xlabel("simulated time (s)")
    grid[-1][1].set_xlabel("client updates")
    handles, labels = grid[0][0].get_legend_handles_labels()
    longest = max(len(label) for label in labels)
    columns = max(1, min(len(labels), 6, 150 // (longest + 8)))  # 12 inches hold ~150 characters at 9 pt
    rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=9, frameon=False)
    fig.suptitle(
        title
        + ("  (line: mean over seeds; band: ± 1 std)" if any(len(h) > 1 for h in curves.values()) else "")
    )
    fig.tight_layout(rect=(0, min(0.04 + 0.035 * rows / len(metrics), 0.45), 1, 1))
    fig.savefig(path, dpi=120)
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    title: str = "",
    references: Sequence[tuple[float, str]] = (),
) -> Any:
    """Plot single runs' evaluation rows side by side (one line per label); returns the figure."""
    return plot_bands(
        {label: [history] for label, history in curves.items()}, path, title, references=references
    )
