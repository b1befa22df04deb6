"""docs/extending.md, run as written: its Python blocks become the user's ``my_components.py`` and every
command line it shows runs (on a small budget) in a folder of the user's own. A doc example that drifts
from the code fails here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from helpers.configs import QUIET
from helpers.processes import cli

pytestmark = pytest.mark.slow
DOC = ROOT / "docs" / "extending.md"
# a small budget, after the doc's own overrides (which name none of these keys)
BUDGET = [
    "partition.num_clients=4",
    "partition.min_samples=5",
    "federation.concurrency=2",
    "federation.max_updates=4",
    "federation.eval_every=2",
    *QUIET,
]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    """Every command line of the doc's bash blocks (continuations joined, comments dropped)."""
    lines = [line for block in _blocks("bash") for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("afl-")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder: the doc's code as ``my_components.py``, its preset ``mine.yaml``, and the data
    file its data set example reads (``data/mine.npz``: two classes of 1×4×6 images)."""
    home = tmp_path_factory.mktemp("user")
    (home / "my_components.py").write_text("\n\n".join(_blocks("python")))
    (preset,) = [b for b in _blocks("yaml") if b.startswith("# mine.yaml")]
    (home / "mine.yaml").write_text(preset)
    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 2, n) for s, n in (("train", 200), ("test", 60))}
    x = {s: (2.0 * y[s] - 1)[:, None, None, None] + rng.standard_normal((len(y[s]), 1, 4, 6)) for s in y}
    (home / "data").mkdir()
    np.savez(home / "data" / "mine.npz", **{f"x_{s}": x[s] for s in x}, **{f"y_{s}": y[s] for s in y})
    return home


def test_the_doc_shows_every_kind_of_plugin() -> None:
    registered = set(re.findall(r"@(\w+)\.register\(", "\n".join(_blocks("python"))))
    assert registered >= {
        "AGGREGATORS",
        "STALENESS",
        "LR_SCHEDULES",
        "SPEEDS",
        "COMM_DELAYS",
        "MODELS",
        "DATASET_LOADERS",
        "SCHEMES",
        "OPTIMIZERS",
        "CLIENT_CALLBACKS",
        "EXECUTORS",
    }
    assert len(_commands()) >= 12


@pytest.mark.parametrize("index", range(len(_commands())))
def test_each_command_of_the_doc_runs(folder: Path, index: int) -> None:
    command = _commands()[index]
    out = f"out{index}"
    if command[0] == "afl-compare":
        seeds = command.index("--seeds")
        command[seeds + 1] = "0"  # one seed is enough to run it
    proc = cli(command[0], *command[1:], *BUDGET, f"output_dir={out}", cwd=folder)
    assert proc.returncode == 0, f"{shlex.join(command)}\n{proc.stderr[-3000:]}"
    summaries = [json.loads(p.read_text()) for p in (folder / out).rglob("summary.json")]
    assert summaries and all(s["client_updates"] == 4 for s in summaries)
    # the components the command names are the ones that ran
    asked = dict(arg.split("=", 1) for arg in command[1:] if "=" in arg and ":" not in arg.split("=")[0])
    for key, field in (
        ("server.aggregator.name", "algorithm"),
        ("model.name", "model"),
        ("dataset.name", "dataset"),
    ):
        if key in asked:
            assert {s[field] for s in summaries} == {asked[key]}, key
    if command[0] == "afl-compare":  # the arm of one's own ran beside the built-in ones it named
        assert {s["algorithm"] for s in summaries} == {"afl", "halfway", "fedavg"}
        assert {s["model"] for s in summaries} == {"tiny_mlp"}
