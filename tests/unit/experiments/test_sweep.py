"""The sweep runner: every cell and seed run once, an interrupted sweep continues, results per cell."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import CRASH_DRIVER

from afl.cli.sweep import main as sweep_main
from afl.config import load_config
from afl.errors import ConfigError
from afl.experiments.sweep import load_sweep, run_dir, run_sweep, sweeps

TINY_BASE = [
    "dataset.name=synthetic",
    "dataset.synthetic.train_size=480",
    "dataset.synthetic.test_size=200",
    "partition.num_clients=6",
    "partition.min_samples=5",
    "federation.max_updates=12",
    "federation.eval_every=4",
    "logging.wandb.mode=disabled",
]


def _spec(tmp_path: Path, **changes) -> Path:
    spec = {
        "description": "tiny",
        "base": TINY_BASE,
        "arms": ["afl", "sync"],
        "axes": {"federation.concurrency": [2, 3]},
        "seeds": [0, 1],
        **changes,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _results(root: Path) -> list[dict[str, str]]:
    with (root / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    """A tiny sweep, run once: 2 arms × 2 concurrencies × 2 seeds."""
    tmp = tmp_path_factory.mktemp("sweep")
    sweep = load_sweep(str(_spec(tmp)))
    root = tmp / "out"
    lines: list[str] = []
    run_sweep(sweep, root, log=lines.append)
    return sweep, root, lines


def test_every_cell_and_seed_runs_once_with_its_overrides(finished) -> None:
    sweep, root, lines = finished
    assert [c.name for c in sweep.cells] == [
        "afl/federation.concurrency=2",
        "afl/federation.concurrency=3",
        "sync/federation.concurrency=2",
        "sync/federation.concurrency=3",
    ]
    assert len(lines) == 8 and not any("skipped" in line for line in lines)
    rows = _results(root)
    assert len(rows) == 8
    for row in rows:
        out = root / row["output_dir"]
        summary = json.loads((out / "summary.json").read_text())
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert float(row["final_test_accuracy"]) == summary["final_test_accuracy"]
        assert config["federation"]["concurrency"] == int(row["federation.concurrency"])
        assert config["seed"] == int(row["seed"])
        assert config["federation"]["mode"] == ("sync" if row["arm"] == "sync" else "async")
        assert config["logging"]["wandb"]["tags"] == ["sweep:tiny"]
        group = json.loads((root / "sweep.json").read_text())["wandb"]["group"]
        assert config["logging"]["wandb"]["group"] == group
        assert out == run_dir(root, next(c for c in sweep.cells if c.name == row["cell"]), int(row["seed"]))
    sync = [r for r in rows if r["arm"] == "sync"]
    assert all(float(r["mean_staleness"]) == 0 for r in sync)


def test_results_table_is_the_mean_and_std_over_seeds(finished) -> None:
    _, root, _ = finished
    rows = _results(root)
    table = (root / "results.md").read_text().splitlines()
    cell = [r for r in rows if r["cell"] == "afl/federation.concurrency=3"]
    line = next(t for t in table if t.startswith("| afl | 3 |"))
    header = ["acc (last 5 evals)", "95% interval", "− sync, paired", "last eval"]
    assert table[0].split(" | ")[2:6] == header  # the headline first
    for column, key in ((2, "final_mean_test_accuracy"), (5, "final_test_accuracy")):
        values = [float(r[key]) for r in cell]
        mean = sum(values) / 2
        std = abs(values[0] - values[1]) / 2**0.5  # the sample std of two values
        expected = f"{mean:.3f} ± {std:.3f}" if std else f"{mean:.3f}"
        assert line.split(" | ")[column] == expected
        if key == "final_mean_test_accuracy" and std:  # its 95% interval: t(0.975, 1) = 12.706
            half = 12.7062 * std / 2**0.5
            assert line.split(" | ")[3] == f"[{max(0, mean - half):.3f}, {min(1, mean + half):.3f}]"
    # the headline's paired difference from sync at the same concurrency, seed by seed, by hand: two
    # seeds, Student's t(0.975, 1) = 12.706 times the differences' std over sqrt(2)
    heads = {
        (r["arm"], r["seed"]): float(r["final_mean_test_accuracy"])
        for r in rows
        if r["federation.concurrency"] == "3"
    }
    diffs = [heads["afl", s] - heads["sync", s] for s in ("0", "1")]
    mean, half = sum(diffs) / 2, 12.7062 * abs(diffs[0] - diffs[1]) / 2**0.5 / 2**0.5
    low, high = max(-1.0, mean - half), min(1.0, mean + half)
    expected = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
    assert line.split(" | ")[4].startswith(expected)
    verdict = "above" if low > 0 else "below" if high < 0 else "tie"
    assert line.split(" | ")[4] == f"{expected} {verdict}"
    rise = table[0].split(" | ").index("val. rise, last fifth")
    assert line.split(" | ")[rise] == "—" and rows[0]["late_rise"] == ""  # no validation split here
    sync_line = next(t for t in table if t.startswith("| sync | 3 |"))
    assert sync_line.split(" | ")[4] == "—"
    assert (root / "curves.png").stat().st_size > 20_000
    assert (root / "final.png").stat().st_size > 10_000
    header = table[0].split(" | ")
    assert header[-1] == "lost |" and line.split(" | ")[-1] == "0 |"  # availability off: no job lost


def test_running_again_skips_what_is_complete_and_continues_the_rest(finished, tmp_path) -> None:
    sweep, root, _ = finished
    before = _results(root)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("summary.json")}
    # one run stopped before its first checkpoint (only config.yaml was written), one never started
    partial = run_dir(root, sweep.cells[1], 1)
    keep = (partial / "config.yaml").read_text()
    for folder in (partial, run_dir(root, sweep.cells[2], 0)):
        for p in sorted(folder.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "config.yaml").write_text(keep)
    lines: list[str] = []
    run_sweep(sweep, root, log=lines.append)
    assert sum("skipped" in line for line in lines) == 6
    assert _results(root) == before  # the two runs again, to the same numbers
    unchanged = [p for p, t in stamps.items() if p.exists() and p.stat().st_mtime_ns == t]
    assert len(unchanged) == 6


def test_a_killed_run_in_a_sweep_is_resumed_from_its_checkpoint(tmp_path) -> None:
    sweep = load_sweep(str(_spec(tmp_path, arms=["afl"], axes={}, seeds=[0])))
    root = tmp_path / "out"
    (cell,) = sweep.cells
    out = run_dir(root, cell, 0)
    command = [
        sys.executable,
        str(CRASH_DRIVER),
        "eval",
        "2",
        *sweep.overrides(cell, 0),
        "checkpoint.every=3",
        "logging.progress=false",
        f"output_dir={out}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    lines: list[str] = []
    run_sweep(sweep, root, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("[1/1] afl seed 0 (resumed from its checkpoint): done")
    fresh = tmp_path / "fresh"
    run_sweep(sweep, fresh, log=lambda _: None)
    resumed, reference = _results(root)[0], _results(fresh)[0]
    assert resumed == reference


def test_bad_sweeps_are_refused_naming_the_key(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="unknown sweep 'nope'; available: alpha, baseline"):
        load_sweep("nope")
    with pytest.raises(ConfigError, match="sweep.grid: unknown key"):
        load_sweep(str(_spec(tmp_path, grid={})))
    with pytest.raises(ConfigError, match="sweep.axes.client.lr: must be a list"):
        load_sweep(str(_spec(tmp_path, axes={"client.lr": 0.1})))
    with pytest.raises(
        ConfigError, match=r"federation.concurrency: .* \(in sweep cell afl/federation.concurrency=9\)"
    ):
        load_sweep(str(_spec(tmp_path, axes={"federation.concurrency": [2, 9]})))
    with pytest.raises(ConfigError, match="--arms: unknown arm 'fedprox'"):
        load_sweep(str(_spec(tmp_path, arms=["fedprox"])))
    with pytest.raises(  # a value only the component judges: its cell's components are built up front
        ConfigError, match=r"server.aggregator.buffer_size: must be >= 1, got 0 \(in sweep cell fedbuff/"
    ):
        load_sweep(str(_spec(tmp_path, arms=["fedbuff"], axes={"server.aggregator.buffer_size": [2, 0]})))
    with pytest.raises(ConfigError, match="sweep.target: must be an accuracy"):
        load_sweep(str(_spec(tmp_path, target=80)))
    assert sweep_main([str(_spec(tmp_path, axes={"federation.concurrency": [2, 9]}))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: federation.concurrency:") and "Traceback" not in err


@pytest.mark.parametrize("name", sweeps())
def test_named_sweeps_compose_and_validate(name) -> None:
    sweep = load_sweep(name)
    # fmnist_small, or (compensation: J up to 20) its variant over 40 clients with a validation split
    assert sweep.base in (["experiment=fmnist_small"], ["experiment=fmnist_compensation"])
    assert sweep.cells and sweep.seeds
    for cell in sweep.cells:
        cfg = load_config(sweep.overrides(cell, sweep.seeds[0]))
        assert cfg.dataset.name == "fashion_mnist" and cfg.model.name == "lenet"
