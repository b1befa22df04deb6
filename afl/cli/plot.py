"""``afl-plot``: finished runs side by side (``python scripts/plot.py`` is the same command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Plot finished runs side by side: test accuracy against simulated time and against client updates.

Each RUN_DIR is a run's output_dir (with metrics.csv, summary.json, config.yaml), e.g. two runs of
afl-train with different aggregators.

examples:
  %(prog)s runs/demo/afl-* runs/demo/fedbuff-* --out afl-vs-fedbuff.png
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run output folders")
    p.add_argument(
        "--out", type=Path, default=Path("runs.png"), help="the image to write (default: %(default)s)"
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    if not args.out.parent.is_dir():
        return _error(f"--out: no folder {args.out.parent} to write {args.out.name} in")
    from afl.experiments.metrics import load_run
    from afl.experiments.plots import describe, plot_curves

    try:
        loaded = [load_run(run_dir) for run_dir in args.runs]
    except FileNotFoundError as err:
        return _error(str(err))
    names = labels([summary for summary, _, _ in loaded], args.runs)
    curves = {name: history for name, (_, history, _) in zip(names, loaded)}
    try:
        plot_curves(curves, args.out, title=describe(*(c for _, _, c in loaded)), references=args.reference)
    except (OSError, ValueError) as err:  # not writable; a format matplotlib does not know (x.pnj)
        return _error(f"--out: cannot write {args.out}: {str(err).splitlines()[0]}")
    print(f"plot: {args.out}")
    return 0


def labels(summaries: Sequence[dict], folders: Sequence[Path]) -> list[str]:
    """A legend label per run: its algorithm, mode and seed; with its folder where that is not unique.

    Example:
        >>> a = {"algorithm": "afl", "mode": "async", "seed": 0}
        >>> labels([a, {**a, "seed": 1}, a], [Path("x"), Path("y"), Path("z")])
        ['afl (async, seed 0): x', 'afl (async, seed 1)', 'afl (async, seed 0): z']
    """
    plain = [f"{s['algorithm']} ({s['mode']}, seed {s['seed']})" for s in summaries]
    named = [f"{p}: {f}" if plain.count(p) > 1 else p for p, f in zip(plain, folders)]
    return [n + "'" * named[:i].count(n) for i, n in enumerate(named)]  # the same folder twice


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # python -m afl.cli.plot
    sys.exit(main())
