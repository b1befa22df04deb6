"""The mutation score of the last ``mutmut run`` (``make mutate``), per module and in all.

Reads mutmut's results under ``mutants/`` and the equivalent mutants named (in backquotes, each with why)
in ``docs/mutants.md``. Prints killed / total per module: "total" counts the mutants run, "killed"
includes timeouts (a mutant that makes the tests hang is caught: a hung suite fails CI), "equivalent"
the survivors listed as equivalent, "other" mutants with no tests and the like. Exits 1 if fewer than
90% of the mutants run are killed, if a surviving mutant is neither killed nor listed as equivalent, or if
the list names a mutant that a test kills or that mutmut no longer makes (it renumbers a function's
mutants when the function changes, so such an entry has gone stale; a listed mutant that timed out, e.g.
on a busy machine, or has not run yet is let stand).

    python scripts/mutation_score.py [--mutants mutants] [--equivalent docs/mutants.md]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

TARGET = 0.90
# mutmut's exit codes (mutmut/stats.py): 1 and 3 are a failing test run, i.e. the mutant is killed
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped"}
TIMEOUT = {24, -24, 36, 152, 255}


def status(exit_code: int | None) -> str:
    if exit_code is None:
        return "not run"
    if exit_code in TIMEOUT:
        return "timeout"
    return STATUS.get(exit_code, "suspicious")


def equivalent_names(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return set(re.findall(r"`([^`\s]+__mutmut_\d+)`", path.read_text()))


def row(
    name: str, killed: object, survived: object, listed: object, other: object, run: object, score: str
) -> str:
    return f"{name:<28} {killed:>7} {survived:>9} {listed:>11} {other:>6} {run:>6} {score:>7}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--equivalent", type=Path, default=Path("docs/mutants.md"))
    args = parser.parse_args(argv)

    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.mutants}/: run `make mutate` first", file=sys.stderr)
        return 2
    equivalent = equivalent_names(args.equivalent)
    survivors: list[str] = []
    killed_outright: set[str] = set()
    known: set[str] = set()
    totals: Counter[str] = Counter()
    print(row("module", "killed", "survived", "equivalent", "other", "total", "score"))
    for meta in metas:
        results = json.loads(meta.read_text())["exit_code_by_key"]
        if not results:
            continue
        counts = Counter(status(code) for code in results.values())
        survived = [name for name, code in results.items() if status(code) == "survived"]
        survivors += survived
        killed_outright.update(name for name, code in results.items() if status(code) == "killed")
        known.update(results)
        listed = sum(name in equivalent for name in survived)
        counts["killed"] += counts["timeout"]
        run = len(results) - counts["not run"]
        other = run - counts["killed"] - counts["survived"]
        module = str(meta.relative_to(args.mutants)).removesuffix(".meta")
        shown = f"{counts['killed'] / run:.1%}" if run else "-"
        print(row(module, counts["killed"], counts["survived"], listed, other, run, shown))
        totals.update(counts)
        totals["listed"] += listed
        totals["run"] += run
    run, killed = totals["run"], totals["killed"]
    other = run - killed - totals["survived"]
    score = killed / run if run else 0.0
    print(row("all", killed, totals["survived"], totals["listed"], other, run, f"{score:.1%}"))
    if totals["not run"]:
        print(f"{totals['not run']} mutants not run yet (a partial `mutmut run`)")
    for kind in ("timeout", "no tests", "suspicious", "skipped"):
        if totals[kind]:
            print(f"{totals[kind]} {kind}")
    unexplained = [name for name in survivors if name not in equivalent]
    if unexplained:
        print(f"\n{len(unexplained)} surviving mutants are neither killed nor listed in {args.equivalent}:")
        for name in unexplained:
            print(f"  mutmut show '{name}'")
    stale = sorted((equivalent & killed_outright) | (equivalent - known))
    if stale:
        print(f"\n{len(stale)} mutants listed in {args.equivalent} are killed or no longer exist (stale):")
        for name in stale:
            print(f"  mutmut show '{name}'")
    ok = run > 0 and score >= TARGET and not unexplained and not stale
    print(f"\nmutation score {score:.1%} (target {TARGET:.0%}): {'ok' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
