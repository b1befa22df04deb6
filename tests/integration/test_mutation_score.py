"""``scripts/mutation_score.py`` (``make mutate``'s verdict) on results in mutmut's own ``.meta`` format."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import mutation_score  # noqa: E402  (scripts/mutation_score.py)

M = "afl.sim.x\u01c1Loop\u01c1run__mutmut_"  # mutmut's name for a method's mutants: module.xǁClassǁmethod


def _score(tmp_path: Path, codes: dict[int, int | None], listed: list[int]) -> int:
    meta = tmp_path / "mutants" / "afl" / "sim" / "x.py.meta"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": {f"{M}{k}": c for k, c in codes.items()}}, indent=4))
    equivalent = tmp_path / "mutants.md"
    equivalent.write_text("".join(f"- `{M}{k}` — why\n" for k in listed))
    argv = ["--mutants", str(tmp_path / "mutants"), "--equivalent", str(equivalent)]
    return mutation_score.main(argv)


def test_score_counts_timeouts_as_killed_and_needs_every_survivor_explained(tmp_path, capsys) -> None:
    killed = {k: 1 for k in range(1, 9)}  # 8 killed
    code = _score(tmp_path, {**killed, 9: -24, 10: 0, 11: None}, listed=[10])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "afl/sim/x.py" in out and " 90.0%" in out  # (8 + 1 timeout) / 10 run; the one not run is left out
    assert "1 mutants not run yet" in out and "1 timeout" in out

    code = _score(tmp_path, {**killed, 9: -24, 10: 0}, listed=[])  # the survivor is not explained
    out = capsys.readouterr().out
    assert code == 1 and f"mutmut show '{M}10'" in out and "NOT MET" in out

    code = _score(tmp_path, {**killed, 9: 0, 10: 0}, listed=[9, 10])  # 80% < 90%
    assert code == 1 and "80.0%" in capsys.readouterr().out


@pytest.mark.parametrize(("listed_code", "ok"), [(1, False), (-24, True), (None, True)])
def test_a_listed_mutant_that_a_test_kills_is_a_stale_entry(tmp_path, capsys, listed_code, ok) -> None:
    """mutmut renumbers a function's mutants when it changes: a listed name a test kills has gone stale; one
    that timed out (a busy machine) or has not run yet is let stand."""
    codes = {k: 1 for k in range(1, 10)} | {10: listed_code}
    code = _score(tmp_path, codes, listed=[10])
    out = capsys.readouterr().out
    assert (code == 0) is ok, out
    assert ("(stale)" in out) is not ok


def test_a_listed_mutant_that_mutmut_no_longer_makes_is_a_stale_entry(tmp_path, capsys) -> None:
    assert _score(tmp_path, {k: 1 for k in range(1, 11)}, listed=[11]) == 1
    assert f"mutmut show '{M}11'" in capsys.readouterr().out


def test_no_results_is_an_error(tmp_path, capsys) -> None:
    assert mutation_score.main(["--mutants", str(tmp_path / "none")]) == 2
    assert "run `make mutate` first" in capsys.readouterr().err
