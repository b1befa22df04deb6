"""Plug-ins from the command line: a user's module outside the package, with an aggregator, a model with an
option and a data set with an option (non-square images), loaded by ``plugins=[...]`` or by an installed
package's entry point, in ``afl-train``, ``afl-compare`` and ``afl-sweep``; arms defined in a preset file.

Everything runs as real processes in a folder of the user's own, so the tests' interpreter never has the
plug-ins registered (the registries stay as the rest of the suite expects).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.plugins import MINE, PLUGIN, SMALL
from helpers.processes import cli, run_fresh


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The user's working folder, holding ``my_components.py``."""
    (tmp_path / "my_components.py").write_text(PLUGIN)
    return tmp_path


def test_train_runs_a_plugin_aggregator_model_and_data_set_with_their_options(folder: Path) -> None:
    proc = cli("afl-train", "plugins=[my_components]", *SMALL, *MINE, "output_dir=run", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert (summary["algorithm"], summary["dataset"], summary["model"]) == ("halfway", "blobs", "tiny_mlp")
    # the model got the full 1×4×6 input and its option: 24·4 + 4 weights in, 4·2 + 2 out
    assert summary["num_parameters"] == 24 * 4 + 4 + 4 * 2 + 2
    assert sum(json.loads((folder / "run" / "partition.json").read_text())["samples"]) == 120  # size=120
    assert summary["client_updates"] == 6


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ([], "error: dataset.name: got 'blobs'; allowed: cifar10, digits,"),
        (["plugins=[not_there]"], "error: plugins[0]: cannot import 'not_there': no module 'not_there'"),
        (
            ["plugins=[my_components]", "model.hiden=4"],
            "error: model.hiden: not an option of model 'tiny_mlp'",
        ),
        (["plugins=[my_components]", "model.num_classes=3"], "error: model.num_classes: set by afl"),
        (["plugins=[my_components]", "dataset.options.sise=3"], "error: dataset.options.sise: not an option"),
        (
            ["plugins=[my_components]", "server.aggregator.share=x"],
            "error: server.aggregator.share: expected",
        ),
    ],
    ids=["not-loaded", "missing-module", "model-option", "model-input", "data-option", "aggregator-option"],
)
def test_plugin_mistakes_are_one_line_and_exit_2(folder: Path, overrides: list[str], error: str) -> None:
    proc = cli("afl-train", *SMALL, *MINE, *overrides, "--show-config", cwd=folder)
    assert proc.returncode == 2
    assert proc.stderr.startswith(error), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_installed_package_registers_by_entry_point_without_being_named(folder: Path) -> None:
    """A distribution on the path whose ``afl.plugins`` entry point names the module: no ``plugins=``."""
    site = folder / "site"
    info = site / "my_components_pkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-components-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[afl.plugins]\nmine = my_components\n")
    (folder / "my_components.py").rename(site / "my_components.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    proc = cli("afl-train", *SMALL, *MINE, "--show-config", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "name: halfway" in proc.stdout and "hidden: 4" in proc.stdout
    without = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    assert cli("afl-train", *SMALL, *MINE, "--show-config", cwd=folder, env=without).returncode == 2


def test_compare_runs_an_arm_defined_in_a_preset_file_of_ones_own(folder: Path) -> None:
    (folder / "mine.yaml").write_text(
        "plugins: [my_components]\n"
        "dataset: {name: blobs, options: {size: 120}}\n"
        "model: {name: tiny_mlp, hidden: 4}\n"
        "compare:\n"
        "  arms:\n"
        "    halfway: [federation.mode=async, server.aggregator.name=halfway,\n"
        "              server.lr_schedule.name=constant]\n"
    )
    proc = cli(
        "afl-compare",
        "experiment=mine.yaml",
        "--arms",
        "halfway,sync",
        "--seeds",
        "0",
        *SMALL,
        "output_dir=cmp",
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr
    table = json.loads((folder / "cmp" / "comparison.json").read_text())["table"]
    assert sorted(row["arm"] for row in table) == ["halfway", "sync"]
    runs = {json.loads(p.read_text())["algorithm"] for p in (folder / "cmp").rglob("summary.json")}
    assert runs == {"halfway", "fedavg"}
    assert all(
        json.loads(p.read_text())["experiment"] == "mine" for p in (folder / "cmp").rglob("summary.json")
    )


def test_sweep_loads_the_plugins_of_its_base(folder: Path) -> None:
    base = ["plugins=[my_components]", *SMALL, *(o for o in MINE if "share" not in o)]
    (folder / "spec.yaml").write_text(
        "description: a plug-in aggregator's share\n"
        "base:\n" + "".join(f"  - '{o}'\n" for o in base) + "arms: [halfway]\n"  # a plug-in rule: its own arm
        "axes:\n"
        "  share: {'0.25': [server.aggregator.share=0.25]}\n"
        "seeds: [0]\n"
    )
    proc = cli("afl-sweep", "spec.yaml", "--out", "sweep", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    summaries = [json.loads(p.read_text()) for p in (folder / "sweep").rglob("summary.json")]
    assert [(s["arm"], s["algorithm"], s["model"]) for s in summaries] == [("halfway", "halfway", "tiny_mlp")]


def test_the_plugins_key_is_read_before_any_check(folder: Path) -> None:
    """In Python too: ``load_config`` imports the plug-ins its config names before checking it."""
    code = (
        "from afl.config import load_config\n"
        f"cfg = load_config(['plugins=[my_components]', *{MINE!r}])\n"
        "from afl.plugins import loaded\n"
        "print(cfg.model.hidden, [m.__name__ for m in loaded()])\n"
    )
    assert run_fresh(code, cwd=folder).strip() == "4 ['my_components']"
