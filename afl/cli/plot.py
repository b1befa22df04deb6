"""``afl-plot``: finished runs side by side (``python scripts/plot.py`` is the same command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Plot finished runs: test accuracy against simulated time and against client updates, one curve per arm.

Each RUN_DIR is a run's output_dir (with metrics.csv, summary.json, config.yaml). Runs are grouped by arm
(summary.json's "arm"; runs from before arms were recorded: their algorithm) and, within an arm, by
setting: runs whose configs differ in anything but seed, output_dir, resume, logging.*,
federation.workers and federation.executor are separate curves, labelled with what differs (afl, J=10).
A curve is the mean over its seeds with a ± 1 std band; where seeds end at different simulated times,
the band stops at the first seed's end, a dotted line goes on with the seeds still running and × marks
each seed's end. Next to the figure goes OUT_STEM.caption.md: the setting (data, C, J, I, budget), each
curve's step sizes and seeds, and what the lines, bands and marks are.

examples:
  %(prog)s runs/demo/afl-* runs/demo/fedbuff-* --out afl-vs-fedbuff.pdf
  %(prog)s runs/authors_fmnist/* --reference "0.9198:the authors, 500 rounds" --out authors.png
"""


def _reference(text: str) -> tuple[float, str]:
    value, _, label = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected VALUE[:LABEL], e.g. 0.92:reported, got {text!r}"
        ) from None
    return number, label or f"{number:g}"


#: The file types afl-plot writes (afl.experiments.plots.FORMATS; not imported: it would import matplotlib)
FORMATS = ("png", "pdf", "svg")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run output folders")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the figure to write (default: runs.FORMAT); a name without a suffix gets .FORMAT",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="the file type (default: --out's suffix, else png); must match --out's suffix",
    )
    p.add_argument(
        "--reference",
        type=_reference,
        action="append",
        default=[],
        metavar="VALUE[:LABEL]",
        help="a test accuracy to draw as a dashed line, e.g. one a paper reports (repeatable)",
    )
    return p


def output(out: Path | None, fmt: str | None) -> Path:
    """The figure's path from ``--out`` and ``--format``; ValueError where they disagree.

    Example:
        >>> [str(output(None, None)), str(output(None, "pdf")), str(output(Path("a/fig"), "svg"))]
        ['runs.png', 'runs.pdf', 'a/fig.svg']
        >>> str(output(Path("fig.PDF"), None))
        'fig.PDF'
        >>> output(Path("fig.png"), "pdf")
        Traceback (most recent call last):
        ...
        ValueError: --format pdf does not match --out fig.png: give fig.pdf, or leave --format out
    """
    if out is None:
        return Path(f"runs.{fmt or 'png'}")
    suffix = out.suffix[1:].lower()
    if not suffix:
        return out.with_name(f"{out.name}.{fmt or 'png'}")
    if suffix not in FORMATS:
        raise ValueError(f"--out: {out}: unknown suffix .{suffix}; use .png, .pdf or .svg")
    if fmt is not None and suffix != fmt:
        fixed = out.with_suffix(f".{fmt}")
        raise ValueError(f"--format {fmt} does not match --out {out}: give {fixed}, or leave --format out")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        out = output(args.out, args.format)
    except ValueError as err:
        return _error(str(err))
    if not out.parent.is_dir():
        return _error(f"--out: no folder {out.parent} to write {out.name} in")
    try:
        plot_runs(args.runs, out, args.reference)
    except FileNotFoundError as err:  # not a run folder
        return _error(str(err))
    except (OSError, ValueError) as err:  # not writable
        return _error(f"--out: cannot write {out}: {str(err).splitlines()[0]}")
    from afl.experiments.plots import caption_path

    print(f"plot: {out}\ncaption: {caption_path(out)}")
    return 0


def plot_runs(runs: Sequence[Path], out: Path, references: Sequence[tuple[float, str]] = ()) -> Any:
    """Plot finished run folders grouped by arm and setting (:func:`afl.experiments.plots.group_runs`)
    into ``out`` and its caption file; returns the figure. FileNotFoundError for a folder that is not a
    finished run; a folder given twice counts once."""
    from afl.experiments.metrics import load_run
    from afl.experiments.plots import group_runs, plot_bands

    loaded = [load_run(folder) for folder in dict.fromkeys(run_dir.resolve() for run_dir in runs)]
    groups = group_runs([(summary, config) for summary, _, config in loaded])
    curves = {label: [loaded[i][1] for i in members] for label, members in groups.items()}
    configs = {label: [loaded[i][2] for i in members] for label, members in groups.items()}
    for label, cfgs in configs.items():
        seeds = [str(c.get("seed")) for c in cfgs]
        for seed in dict.fromkeys(s for s in seeds if seeds.count(s) > 1):
            print(f"warning: {label}: seed {seed} in {seeds.count(seed)} folders, averaged as if apart")
    experiments = ", ".join(dict.fromkeys(str(c.get("experiment", "")) for _, _, c in loaded))
    return plot_bands(curves, out, title=f"experiment {experiments}", references=references, configs=configs)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # python -m afl.cli.plot
    sys.exit(main())
