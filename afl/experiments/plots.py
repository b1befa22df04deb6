"""Figures of evaluation rows: curves against simulated time and client updates, mean ± std over seeds
(matplotlib's Figure API, no global backend), and the caption that goes with each figure.

How a curve is drawn (:func:`mean_band`), in every panel of every figure alike:

* **Straight lines between evaluations.** An evaluation is a point sample of the global model's accuracy;
  between two of them the model took many updates and its accuracy is unknown. A straight line is the
  plain interpolation between two samples, while a step would claim the accuracy stayed flat and jumped
  when it happened to be evaluated. Both panels use lines, so a figure has one drawing style; and the mean
  of seeds evaluated at different simulated times is exact on the union of their evaluation points.
* **Mean over seeds, ± 1 std band** (sample std; only for two seeds or more), where every seed has values.
* **No seed is carried past its end.** Seeds end at different simulated times: the solid line and band stop
  where the first seed ends; a thin dotted line goes on with the mean of the seeds still running, and a
  small × marks each seed's end (drawn only where a group's seeds end at different x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The file types afl-plot writes (``--format``); matplotlib picks the type from the path's suffix.
FORMATS = ("png", "pdf", "svg")

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


# ----------------------------------------------------------------------------- the setting of a figure
def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(dict(cfg))
    return OmegaConf.select(cfg, key, default=None)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _data(cfg: Any) -> str | None:
    name, subset = _select(cfg, "dataset.name"), _select(cfg, "dataset.train_subset")
    if name is None:
        return None
    return f"{name} (train_subset={subset})" if subset is not None else str(name)


def _partition(cfg: Any) -> str | None:
    scheme = _select(cfg, "partition.scheme")
    if scheme == "dirichlet":
        return f"dirichlet α={_number(_select(cfg, 'partition.alpha'))}"
    if scheme == "shards":
        return f"shards ({_select(cfg, 'partition.shards_per_client')} per client)"
    return None if scheme is None else str(scheme)


def _key(key: str, form: str) -> Callable[[Any], str | None]:
    def read(cfg: Any) -> str | None:
        value = _select(cfg, key)
        return None if value is None else form.format(_number(value))

    return read


#: What a figure's setting names, in order: (name, how a config reads). ``lr``, ``η_g`` and ``α`` are the
#: step sizes (``STEP_SIZES``); a rule without ``server_lr`` / ``alpha`` in its config uses its default.
SETTING_ITEMS: tuple[tuple[str, Callable[[Any], str | None]], ...] = (
    ("data", _data),
    ("model", _key("model.name", "{}")),
    ("C", _key("partition.num_clients", "C={}")),
    ("partition", _partition),
    ("J", _key("federation.concurrency", "J={}")),
    ("I", _key("client.local_epochs", "I={}")),
    ("budget", _key("federation.max_updates", "budget {} client updates")),
    ("mode", _key("federation.mode", "{}")),
    ("lr", _key("client.lr", "lr={}")),
    ("η_g", _key("server.aggregator.server_lr", "η_g={}")),
    ("α", _key("server.aggregator.alpha", "α={}")),
)
STEP_SIZES = ("lr", "η_g", "α")


@dataclass
class Setting:
    """A figure's setting: what all its runs share (said once) and, per label, what differs between labels
    (``a|b`` where the label's own seeds differ), as ``name → text``."""

    shared: dict[str, str]
    per_label: dict[str, dict[str, str]]
    seeds: dict[str, list[str]] = field(default_factory=dict)

    def steps(self, label: str) -> str:
        """The label's own step sizes (those not shared by every label), e.g. ``'lr=0.01, η_g=1'``."""
        return ", ".join(v for k, v in self.per_label.get(label, {}).items() if k in STEP_SIZES)


def setting(configs: Mapping[str, Sequence[Any]]) -> Setting:
    """The setting of a figure whose labels (arms) ran with ``configs`` (a label's configs: one per seed).

    Example:
        >>> from omegaconf import OmegaConf
        >>> def cfg(lr, seed, **server):
        ...     return OmegaConf.create({"seed": seed, "dataset": {"name": "digits"}, "client": {"lr": lr,
        ...         "local_epochs": 2}, "federation": {"concurrency": 5, "max_updates": 300},
        ...         "server": {"aggregator": server}})
        >>> s = setting({"afl": [cfg(3e-3, 0, server_lr=1.0), cfg(3e-3, 1, server_lr=1.0)],
        ...              "sync": [cfg(1e-2, 0)]})
        >>> s.shared
        {'data': 'digits', 'J': 'J=5', 'I': 'I=2', 'budget': 'budget 300 client updates'}
        >>> s.per_label
        {'afl': {'lr': 'lr=0.003', 'η_g': 'η_g=1'}, 'sync': {'lr': 'lr=0.01'}}
        >>> s.seeds, s.steps("afl")
        ({'afl': ['0', '1'], 'sync': ['0']}, 'lr=0.003, η_g=1')
    """
    values = {
        name: {
            label: list(dict.fromkeys(v for c in cfgs if (v := read(c)) is not None))
            for label, cfgs in configs.items()
        }
        for name, read in SETTING_ITEMS
    }
    shared: dict[str, str] = {}
    per_label: dict[str, dict[str, str]] = {label: {} for label in configs}
    for name, by_label in values.items():
        found = [v for v in by_label.values()]
        if all(not v for v in found):
            continue
        if all(v == found[0] and len(v) == 1 for v in found):
            shared[name] = found[0][0]
            continue
        for label, own in by_label.items():
            if own:
                per_label[label][name] = "|".join(own)
    seeds = {label: [str(_select(c, "seed")) for c in cfgs] for label, cfgs in configs.items()}
    return Setting(shared, per_label, seeds)


# ----------------------------------------------------------------------------- run folders grouped by arm
#: Config keys that never split runs of one arm into separate groups (what tells seeds and copies apart, and
#: what does not change results).
IGNORED_KEYS = ("seed", "output_dir", "resume", "arm", "logging", "federation.workers", "federation.executor")
#: Short names of config keys in group labels.
SHORT_NAMES = {
    "dataset.name": "data",
    "partition.num_clients": "C",
    "federation.concurrency": "J",
    "client.local_epochs": "I",
    "federation.max_updates": "budget",
    "client.lr": "lr",
    "server.aggregator.server_lr": "η_g",
    "server.aggregator.alpha": "α",
}


def arm_of(summary: Mapping[str, Any], config: Any) -> str:
    """A run's arm: ``summary.json``'s ``arm``, else the config's, else (runs from before arms were
    recorded) its algorithm, with `` (sync)`` for a synchronous run of a rule other than FedAvg.

    Example:
        >>> arm_of({"arm": "afl-later", "algorithm": "fedbuff"}, {})
        'afl-later'
        >>> [arm_of({"algorithm": a, "mode": "sync"}, {}) for a in ("fedavg", "afl")]
        ['fedavg', 'afl (sync)']
    """
    arm = summary.get("arm") or _select(config, "arm")
    if arm:
        return str(arm)
    algorithm = str(summary.get("algorithm"))
    return f"{algorithm} (sync)" if summary.get("mode") == "sync" and algorithm != "fedavg" else algorithm


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: _number(value)}


def _setting_keys(config: Any) -> dict[str, str]:
    """The config as ``dotted.key → value``, less :data:`IGNORED_KEYS`."""
    from omegaconf import OmegaConf

    flat = _flat(OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config)
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in IGNORED_KEYS)}


def group_runs(runs: Sequence[tuple[Mapping[str, Any], Any]]) -> dict[str, list[int]]:
    """Group runs (``(summary, config)`` pairs) by arm and setting: label → the runs' indices, in order of
    first appearance. Runs of one arm whose configs differ in anything but :data:`IGNORED_KEYS` are separate
    groups, labelled with what differs (``afl, J=10``).

    Example:
        >>> def run(arm, seed, j=5):
        ...     return {"arm": arm}, {"seed": seed, "federation": {"concurrency": j, "workers": seed}}
        >>> group_runs([run("afl", 0), run("sync", 0), run("afl", 1), run("afl", 0, j=10)])
        {'afl, J=5': [0, 2], 'sync': [1], 'afl, J=10': [3]}
    """
    keyed = [(arm_of(s, c), _setting_keys(c)) for s, c in runs]
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}
    for i, (arm, keys) in enumerate(keyed):
        groups.setdefault((arm, tuple(sorted(keys.items()))), []).append(i)
    labels: dict[str, list[int]] = {}
    for (arm, items), members in groups.items():
        mine = [dict(k) for a, k in groups if a == arm]
        names = sorted({k for d in mine for k in d})
        differ = [k for k in names if len({d.get(k) for d in mine}) > 1]
        own = dict(items)
        parts = [f"{SHORT_NAMES.get(k, k)}={own.get(k, 'default')}" for k in differ]
        labels[", ".join([arm, *parts])] = members
    return labels


# ----------------------------------------------------------------------------- one group's curve
def _points(history: Sequence[Mapping[str, Any]], key: str, metric: str) -> list[tuple[float, float]]:
    """``(x, metric)`` of the rows that have both, in order of x."""
    out = []
    for r in history:
        try:
            x, y = float(r[key]), float(r[metric])
        except (KeyError, TypeError, ValueError):
            continue
        if not (math.isnan(x) or math.isnan(y)):
            out.append((x, y))
    return sorted(out)


@dataclass
class Curve:
    """One group's curve in one panel (:func:`mean_band`): ``xs``, ``mean`` and ``std`` where every seed
    runs (``std`` None for one seed), ``tail``: the mean of the seeds still running after the first ended
    (one ``(xs, ys)`` piece per set of them), ``ends``: ``(x, y)`` of each seed's end on the drawn line
    (empty where all seeds end at the same x)."""

    xs: list[float]
    mean: list[float]
    std: list[float] | None
    tail: list[tuple[list[float], list[float]]]
    ends: list[tuple[float, float]]


def mean_band(
    histories: Sequence[Sequence[Mapping[str, Any]]], key: str, metric: str = "test_accuracy"
) -> Curve:
    """The mean over ``histories`` (seeds) of ``metric`` against ``key``, each seed linearly interpolated
    between its evaluations; never a seed past its last evaluation.

    Example: two seeds, the first ends at x = 2, the second at 4:
        >>> a = [{"t": 0, "acc": 0.1}, {"t": 2, "acc": 0.5}]
        >>> b = [{"t": 0, "acc": 0.3}, {"t": 1, "acc": 0.5}, {"t": 4, "acc": 0.8}]
        >>> c = mean_band([a, b], "t", "acc")
        >>> c.xs, [round(m, 3) for m in c.mean], [round(s, 3) for s in c.std]
        ([0.0, 1.0, 2.0], [0.2, 0.4, 0.55], [0.141, 0.141, 0.071])
        >>> c.tail, c.ends
        ([([2.0, 4.0], [0.6, 0.8])], [(2.0, 0.55), (4.0, 0.8)])
    """
    import numpy as np

    seeds = [p for h in histories if (p := _points(h, key, metric))]
    if not seeds:
        return Curve([], [], None, [], [])
    xs_of = [np.array([x for x, _ in p]) for p in seeds]
    ys_of = [np.array([y for _, y in p]) for p in seeds]
    start = max(float(x[0]) for x in xs_of)
    ends = sorted({float(x[-1]) for x in xs_of})
    bounds = [start, *(e for e in ends if e > start)]
    pieces: list[tuple[list[float], list[float], list[float] | None]] = []
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:] or bounds)):
        alive = [i for i, x in enumerate(xs_of) if x[-1] >= hi]
        grid = sorted({lo, hi} | {float(v) for i in alive for v in xs_of[i] if lo <= v <= hi})
        values = np.array([np.interp(grid, xs_of[i], ys_of[i]) for i in alive])
        std = list(values.std(axis=0, ddof=1)) if len(alive) > 1 and k == 0 else None
        pieces.append((grid, [float(v) for v in values.mean(axis=0)], std))
    (xs, mean, std), tail = pieces[0], [(x, y) for x, y, _ in pieces[1:]]
    marks = [(x[-1], y[-1]) for x, y, _ in pieces] if len(ends) > 1 else []
    return Curve(xs, mean, None if std is None else [float(s) for s in std], tail, marks)


METRIC_LABELS = {"test_accuracy": "test accuracy", "test_loss": "test loss"}
X_LABELS = {"sim_time": "simulated time (s)", "client_updates": "client updates"}
X_NAMES = {"sim_time": "simulated time", "client_updates": "client updates"}


def label_styles(labels: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """A colour and a line style per label: tab10's colours for up to 10 labels, tab20's beyond, reused
    with another line style past 20."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: (cmap(i % cmap.N), ("-", "--", "-.")[i // cmap.N % 3]) for i, label in enumerate(labels)}


def draw_band(
    ax: Any,
    histories: Sequence[Sequence[Mapping[str, Any]]],
    key: str,
    metric: str,
    name: str,
    color: Any,
    style: str = "-",
) -> bool:
    """One group's :func:`mean_band` on ``ax`` (legend entry ``name``); True if it has a tail (seeds that
    end at different x)."""
    curve = mean_band(histories, key, metric)
    few = max(len(h) for h in histories) <= 2  # a line alone would not show one point
    ax.plot(curve.xs, curve.mean, color=color, ls=style, label=name, lw=1.8, marker="o" if few else None)
    if curve.std is not None:
        low = [m - s for m, s in zip(curve.mean, curve.std)]
        high = [m + s for m, s in zip(curve.mean, curve.std)]
        ax.fill_between(curve.xs, low, high, color=color, alpha=0.18, lw=0)
    for xs, ys in curve.tail:
        ax.plot(xs, ys, color=color, ls=":", lw=1.2, label=f"_{name}: seeds still running")
    if curve.ends:
        ex, ey = zip(*curve.ends)
        ax.plot(ex, ey, color=color, ls="none", marker="x", ms=6, mew=1.5, label=f"_{name}: seed ends")
    return bool(curve.tail)


def _legend_name(label: str, n: int, steps: str = "") -> str:
    name = f"{label} ({n} seeds)" if n > 1 else label
    return f"{name}: {steps}" if steps else name


def _end_handles() -> list[Any]:
    """Legend entries explaining the tail and the end marks."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color="0.35", ls=":", lw=1.2, label="after a seed's end: mean of seeds still running"),
        Line2D([], [], color="0.35", ls="none", marker="x", ms=6, mew=1.5, label="a seed's end"),
    ]


# ----------------------------------------------------------------------------- captions
LINES_NOTE = (
    "Each line is the mean over a label's seeds, drawn as straight lines between evaluations (an evaluation "
    "is a point sample of the global model; nothing is known between two of them); the band is ± 1 standard "
    "deviation over seeds (sample std, labels with 2 seeds or more). No seed is carried past its end: where "
    "a label's seeds end at different x (simulated time differs per seed), the solid line and band stop "
    "where its first seed ends, a thin dotted line continues with the mean of the seeds still running, and "
    "a small × marks each seed's end."
)


def caption_path(path: Path) -> Path:
    """Where a figure's caption goes: ``comparison.png`` → ``comparison.caption.md``."""
    return path.with_name(f"{path.stem}.caption.md")


def caption(
    title: str,
    configs: Mapping[str, Sequence[Any]],
    panels: str,
    tails: Mapping[str, Sequence[str]] | None = None,
    references: Sequence[tuple[float, str]] = (),
) -> str:
    """A figure's caption (Markdown): the setting, each label's own values and seeds, what line and band
    are, how seeds' ends are marked (and where that happened: ``tails``), the reference lines."""
    s = setting(configs)
    lines = [f"# {title.splitlines()[0] if title else 'Figure'}", "", panels, ""]
    lines += [f"**Setting.** {', '.join(s.shared.values()) or '(no config)'}.", "", "**Curves.**", ""]
    for label in configs:
        own = ", ".join(s.per_label[label].values())
        seeds = s.seeds[label]
        lines.append(f"- {label}: {own + '; ' if own else ''}{len(seeds)} seed(s) ({', '.join(seeds)})")
    lines += ["", LINES_NOTE]
    if tails:
        where = "; ".join(f"{', '.join(dict.fromkeys(labels))} ({panel})" for panel, labels in tails.items())
        lines += ["", f"Seeds end at different x for: {where}."]
    if references:
        refs = "; ".join(f"{label} ({value:g})" for value, label in references)
        lines += ["", f"Dashed horizontal lines: {refs}."]
    lines.append(
        "\nStep sizes said once under Setting are every curve's; a rule without η_g or α in the setting "
        "uses its default."
    )
    return "\n".join(lines) + "\n"


def _title(title: str, configs: Mapping[str, Sequence[Any]] | None, steps_in: str = "the legend") -> str:
    """The caller's title; with configs, a second line of what all runs share (and where the step sizes
    that differ between curves are: ``steps_in``)."""
    if configs is None:
        return title
    s = setting(configs)
    parts = list(s.shared.values())
    if any(s.steps(label) for label in configs):
        parts.append(f"step sizes per curve: {steps_in}")
    return "\n".join(x for x in (title, ", ".join(parts)) if x)


def _save(fig: Any, path: Path) -> None:
    """PNG at 120 dpi; PDF and SVG without a creation date (the same figure, the same bytes)."""
    suffix = path.suffix.lower()
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(suffix[1:])
    fig.savefig(path, dpi=120, metadata=metadata)


# ----------------------------------------------------------------------------- figures
def plot_band_panels(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]],
    path: Path,
    title: str = "",
    metric: str = "test_accuracy",
    *,
    configs: Mapping[str, Mapping[str, Sequence[Any]]] | None = None,
) -> Any:
    """One row of two panels (against simulated time, against client updates) per entry of ``panels``
    (its title → label → the label's runs), curves as :func:`mean_band` computes them; a label has one
    colour in every row. For many labels in several settings (a sweep's arms in each cell of its other
    axes). ``configs`` (the same shape, each run's config): the title's second line says what all runs
    share and ``<path stem>.caption.md`` is written next to the figure (each row's labels' own values)."""
    from matplotlib.figure import Figure

    styles = label_styles(list(dict.fromkeys(label for curves in panels.values() for label in curves)))
    fig = Figure(figsize=(12, 3.2 * len(panels) + 1.2), layout="constrained")
    grid = fig.subplots(len(panels), 2, squeeze=False, sharey=True)
    tails: dict[str, list[str]] = {}
    for axes, (heading, curves) in zip(grid, panels.items()):
        for label, histories in curves.items():
            for ax, key in zip(axes, ("sim_time", "client_updates")):
                name = _legend_name(label, len(histories))
                if draw_band(ax, histories, key, metric, name, *styles[label]):
                    tails.setdefault(f"against {X_NAMES[key]}", []).append(f"{heading}: {label}")
        axes[0].set_title(heading, fontsize=10, loc="left")
        for ax, key in zip(axes, ("sim_time", "client_updates")):
            ax.set_xlabel(X_LABELS[key])
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.tick_params(axis="y", labelleft=True)
            ax.grid(alpha=0.3)
    handles = {label: h for ax in grid.flat for h, label in zip(*ax.get_legend_handles_labels())}
    if tails:
        handles.update({h.get_label(): h for h in _end_handles()})
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 5))
    flat = None
    if configs is not None:
        flat = {f"{h}: {label}": list(cfgs) for h, per in configs.items() for label, cfgs in per.items()}
    seeds = any(len(h) > 1 for curves in panels.values() for h in curves.values())
    fig.suptitle(
        _title(title, flat, "the caption") + ("\n(line: mean over seeds; band: ± 1 std)" if seeds else "")
    )
    _save(fig, path)
    if flat is not None:
        shown = METRIC_LABELS.get(metric, metric)
        panels_note = (
            f"{shown[0].upper() + shown[1:]} against simulated time (left) and client updates (right), "
            "one row per setting."
        )
        caption_path(path).write_text(caption(title, flat, panels_note, tails))
    return fig


def plot_bands(
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: Path,
    title: str = "",
    metrics: Sequence[str] = ("test_accuracy",),
    references: Sequence[tuple[float, str]] = (),
    *,
    configs: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """Each of ``metrics`` (a row of panels) against simulated time and against client updates: per label,
    the mean over its runs (seeds) as a line and mean ± std as a band (:func:`mean_band`). Up to 20 labels
    get their own colour, more reuse them with another line style. ``references``: ``(value, label)`` pairs
    drawn as dashed horizontal lines on the first metric's panels (e.g. an accuracy a paper reports).
    ``configs`` (label → its runs' configs): the title's second line says what all runs share, the legend
    each label's own step sizes, and ``<path stem>.caption.md`` is written next to the figure. The file
    type follows ``path``'s suffix (:data:`FORMATS`). Uses matplotlib's Figure API (no global backend);
    returns the figure."""
    from matplotlib.figure import Figure

    s = setting(configs) if configs is not None else None
    names = {
        label: _legend_name(label, len(h), s.steps(label) if s is not None else "")
        for label, h in curves.items()
    }
    longest = max([len(n) for n in names.values()] + [len(label) for _, label in references] + [1])
    columns = max(1, min(len(names) + len(references), 6, 150 // (longest + 8)))  # ~150 characters at 9 pt
    rows = -(-(len(names) + len(references) + 2) // columns)
    fig = Figure(figsize=(12, 3.8 * len(metrics) + 1.0 + 0.25 * rows), layout="constrained")
    grid = fig.subplots(len(metrics), 2, sharex="col", squeeze=False)
    styles = label_styles(list(curves))
    tails: dict[str, list[str]] = {}
    for label, histories in curves.items():
        for axes, metric in zip(grid, metrics):
            for ax, key in zip(axes, ("sim_time", "client_updates")):
                if draw_band(ax, histories, key, metric, names[label], *styles[label]):
                    tails.setdefault(f"against {X_NAMES[key]}", []).append(label)
    for index, (value, label) in enumerate(references):
        for ax in grid[0]:
            ax.axhline(value, color="0.25", ls=("--", ":", "-.")[index % 3], lw=1.2, label=label)
    for axes, metric in zip(grid, metrics):
        axes[1].sharey(axes[0])
        for ax, key in zip(axes, ("sim_time", "client_updates")):
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.set_xlabel(X_LABELS[key])
            ax.tick_params(axis="x", labelbottom=True)
            ax.grid(alpha=0.3)
    handles, labels = grid[0][0].get_legend_handles_labels()
    if tails:
        extra = _end_handles()
        handles, labels = handles + extra, labels + [h.get_label() for h in extra]
    columns = max(1, min(len(labels), columns))
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=9, frameon=False)
    seeds = any(len(h) > 1 for h in curves.values())
    fig.suptitle(_title(title, configs) + ("\n(line: mean over seeds; band: ± 1 std)" if seeds else ""))
    _save(fig, path)
    if configs is not None:
        shown = " and ".join(METRIC_LABELS.get(m, m) for m in metrics)
        note = f"{shown[0].upper() + shown[1:]} against simulated time (left) and client updates (right)."
        caption_path(path).write_text(caption(title, configs, note, tails, references))
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    title: str = "",
    references: Sequence[tuple[float, str]] = (),
    *,
    configs: Mapping[str, Any] | None = None,
) -> Any:
    """Plot single runs' evaluation rows side by side (one line per label); ``configs``: label → its run's
    config (see :func:`plot_bands`). Returns the figure."""
    return plot_bands(
        {label: [history] for label, history in curves.items()},
        path,
        title,
        references=references,
        configs=None if configs is None else {label: [c] for label, c in configs.items()},
    )
