"""The kept results cannot drift from the pages that quote them: every comparison and sweep under
results/ (its runs' small files, under version control) is read back with today's code, and each line of
the tables it gives must stand verbatim in docs/results.md. A change of a table's columns or of a
statistic therefore fails here until the page is written again from the kept runs (``afl-compare --from
results/NAME``, ``afl-sweep NAME --results --out results/sweeps/NAME``), and a page's number cannot be
edited by hand. Reading back is plain Python over CSV and JSON: the same on any machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT

from afl.experiments.compare import finished_runs, format_budgets, format_table, resummarise
from afl.experiments.sweep import load_sweep, table_text

RESULTS = ROOT / "results"
RESULTS_PAGE = ROOT / "docs" / "results.md"
#: the kept comparisons and the page that quotes each one's tables (a kept folder missing here would be
#: a page quoting runs nobody can re-read)
KEPT_COMPARISONS = {
    "demo": ROOT / "README.md",
    "demo_ablations": RESULTS_PAGE,
    "demo_later_nodecay": RESULTS_PAGE,
    "dc_lambda": RESULTS_PAGE,
    "fmnist_readings": RESULTS_PAGE,
}
KEPT_SWEEPS = ("alpha", "baseline", "compensation", "concurrency", "unbounded")
#: the kept comparisons of long runs whose plateau table (``afl-compare --from DIR --budgets ...``) the
#: results page quotes, with its budgets
KEPT_BUDGETS = {"budget_readings": [300, 450, 600, 750, 900, 1050, 1200, 1350, 1500]}


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def _missing(text: str, page: Path = RESULTS_PAGE) -> list[str]:
    quoted = page.read_text()
    return [line for line in _table_lines(text) if line not in quoted]


@pytest.mark.parametrize("name", KEPT_COMPARISONS)
def test_a_kept_comparison_reads_back_to_its_tables_in_the_results_page(name: str) -> None:
    folder = RESULTS / name
    comparison = resummarise(folder)
    assert sum(len(per_seed) for per_seed in comparison.runs.values()) >= 1
    text = format_table(comparison)
    assert len(_table_lines(text)) >= 4, text
    missing = _missing(text, KEPT_COMPARISONS[name])
    page = KEPT_COMPARISONS[name].name
    assert not missing, f"{page} lacks these lines of afl-compare --from {folder}:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", KEPT_BUDGETS)
def test_a_kept_budget_study_reads_back_to_its_plateau_table_in_the_results_page(name: str) -> None:
    text = format_budgets(finished_runs(RESULTS / name), KEPT_BUDGETS[name])
    assert len(_table_lines(text)) >= 3, text
    assert text.splitlines()[-1] in RESULTS_PAGE.read_text()  # the budget the rule chose
    missing = _missing(text)
    assert not missing, (
        f"docs/results.md lacks these lines of afl-compare --from results/{name} --budgets:\n"
        + ("\n".join(missing))
    )


@pytest.mark.parametrize("name", KEPT_SWEEPS)
def test_a_kept_sweep_reads_back_to_its_table_in_the_results_page(name: str) -> None:
    folder = RESULTS / "sweeps" / name
    text = table_text(load_sweep(name), folder)
    assert len(_table_lines(text)) >= 3, text
    missing = _missing(text)
    assert not missing, f"docs/results.md lacks these lines of afl-sweep {name} --results:\n" + "\n".join(
        missing
    )


def test_every_kept_folder_is_quoted_and_holds_only_small_files() -> None:
    """Nothing under results/ that no test reads back; no model, checkpoint or W&B folder committed."""
    kept = {p.parent for p in RESULTS.glob("*/comparison.json")} | {
        p.parent for p in RESULTS.glob("sweeps/*/sweep.json")
    }
    expected = {RESULTS / n for n in [*KEPT_COMPARISONS, *KEPT_BUDGETS]}
    expected |= {RESULTS / "sweeps" / n for n in KEPT_SWEEPS}
    assert kept == expected
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    for path in RESULTS.rglob("summary.json"):  # no path of the machine that ran it: where the copy is
        output_dir = json.loads(path.read_text())["output_dir"]
        assert output_dir == str(path.parent.relative_to(ROOT)), path
    names = {Path(t).name for t in tracked}
    allowed = {"summary.json", "metrics.csv", "updates.csv", "config.yaml", "partition.json"}
    allowed |= {"comparison.json", "comparison.md", "comparison.caption.md", "plan.json", "selection.json"}
    allowed |= {"sweep.json", "results.csv", "results.md", "curves.caption.md", "final.caption.md", "FAILED"}
    assert names <= allowed, names - allowed
