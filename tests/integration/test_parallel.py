"""``--jobs N``: a comparison's and a sweep's runs in worker processes give the files one at a time gives,
and a worker that dies fails its run only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers.configs import TINY
from helpers.processes import cli
from helpers.runs import assert_same_outputs

from afl.experiments.compare import compare
from afl.experiments.parallel import cores, fit_threads, run_all
from afl.experiments.sweep import load_sweep, run_dir, run_sweep

#: A plug-in aggregator whose process dies (SIGKILL) at its first arrival when AFL_TEST_DIE is set: a
#: worker killed from outside, as the out-of-memory killer would.
DIES = """
import os
import signal

from afl.server.aggregators import AGGREGATORS, FedAsync


@AGGREGATORS.register("dies")
class Dies(FedAsync):
    def on_arrival(self, update, global_state):
        if os.environ.get("AFL_TEST_DIE"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().on_arrival(update, global_state)
"""


def _runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/seed*/summary.json"))


def test_a_comparison_with_two_jobs_writes_what_one_job_writes(tmp_path: Path) -> None:
    base = [*TINY, "federation.workers=2"]
    one, _ = compare([*base, f"output_dir={tmp_path / 'one'}"], ["afl", "sync"], [0, 1], jobs=1)
    two, _ = compare([*base, f"output_dir={tmp_path / 'two'}"], ["afl", "sync"], [0, 1], jobs=2)
    runs = _runs(tmp_path / "one")
    assert [p.relative_to(tmp_path / "one") for p in runs] == [
        p.relative_to(tmp_path / "two") for p in _runs(tmp_path / "two")
    ]
    assert len(runs) == 4
    for folder in runs:
        other = tmp_path / "two" / folder.relative_to(tmp_path / "one")
        assert_same_outputs(other, folder)  # metrics, updates, summary and the final model, to the bit
        a, b = (yaml.safe_load((f / "config.yaml").read_text()) for f in (folder, other))
        assert b["federation"]["workers"] == max(1, min(2, cores() // 2))  # two runs share the cores
        for cfg in (a, b):
            del cfg["federation"]["workers"], cfg["logging"]["progress"], cfg["output_dir"]
            del cfg["logging"]["wandb"]["group"], cfg["logging"]["wandb"]["tags"]
        assert a == b

    def steady(table: list[dict]) -> list[dict]:  # wall times aside
        return [{k: v for k, v in row.items() if not k.startswith("wall_time")} for row in table]

    assert steady(one.table) == steady(two.table)
    assert (tmp_path / "one" / "comparison.md").read_text() == (
        tmp_path / "two" / "comparison.md"
    ).read_text()


def test_a_worker_that_dies_fails_its_run_and_the_comparison_goes_on(tmp_path: Path) -> None:
    """``afl-compare --jobs 2`` (the command, in its own process: the plug-in registers its aggregator
    there, not in this one) with an arm whose worker is killed: that run fails, the table says so, sync's
    runs stand."""
    (tmp_path / "dies_plugin.py").write_text(DIES)  # importable from the working folder, in workers too
    env = {**os.environ, "AFL_TEST_DIE": "1"}  # the workers inherit it: the arm's runs die
    proc = cli(
        "afl-compare", *TINY, "plugins=[dies_plugin]", "--arms", "dies,sync", "--seeds", "0,1", "--jobs", "2",
        "output_dir=out", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "out" / "comparison.md").read_text()
    for seed in (0, 1):
        assert f"dies seed {seed} failed (its worker died (exit code -9)): left out of the table" in table
        assert not (tmp_path / "out" / "dies" / f"seed{seed}" / "summary.json").exists()
        assert (tmp_path / "out" / "sync" / f"seed{seed}" / "summary.json").exists()
    first = table.split("\n\n")[0].splitlines()[2:]  # the main table (the intervals' table follows)
    assert [line.split("|")[1].strip() for line in first] == ["sync"]


def test_a_sweep_with_two_jobs_writes_what_one_job_writes(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    base = [o for o in TINY if not o.startswith("federation.max_updates")]
    spec.write_text(
        yaml.safe_dump(
            {
                "description": "two jobs",
                "base": [*base, "federation.max_updates=8"],
                "arms": ["afl", "sync"],
                "axes": {"federation.concurrency": [2, 3]},
                "seeds": [0],
            }
        )
    )
    sweep = load_sweep(str(spec))
    lines: list[str] = []
    run_sweep(sweep, tmp_path / "one", log=lambda _: None, jobs=1)
    run_sweep(sweep, tmp_path / "two", log=lines.append, jobs=2)
    assert len(lines) == 4 and lines[-1].startswith("[4/4]") and all(": done ·" in line for line in lines)
    for cell in sweep.cells:
        assert_same_outputs(run_dir(tmp_path / "two", cell, 0), run_dir(tmp_path / "one", cell, 0))
    a, b = ((tmp_path / f / "results.md").read_text() for f in ("one", "two"))
    assert a == b


def test_threads_are_fitted_to_the_cores(tiny) -> None:
    cfg = tiny("federation.workers=8")
    fit_threads(cfg, 1)
    assert cfg.federation.workers == 8  # one run at a time: as asked
    fit_threads(cfg, 2)
    assert cfg.federation.workers == max(1, cores() // 2)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_all([], 0)


def test_a_dry_run_counts_the_runs_and_their_steps_and_writes_nothing(tmp_path: Path) -> None:
    """TINY: 480 training samples over 6 clients (80 each: 3 batches of 32), 1 epoch, 12 updates: 36
    client steps a run; with a 25% validation split, 60 a client (2 batches): 24 a run."""
    from afl.experiments.compare import dry_run

    out = tmp_path / "never"
    text = dry_run([*TINY, f"output_dir={out}"], ["afl", "sync"], [0, 1])
    assert (
        text.splitlines()[0]
        == "dry run: 4 runs (4 of the comparison); about 144 client steps (local mini-batch steps)"
    )
    assert "ms per client step" in text and "estimate: about " in text and not out.exists()
    grid = dry_run([*TINY, "dataset.val_fraction=0.25"], ["afl", "sync"], [0], grid=["client.lr=1e-3,1e-2"])
    assert grid.splitlines()[0].startswith(
        "dry run: 6 runs (4 of the selection, 2 of the comparison); about 144 "
    )
