"""The installed command lines (``[project.scripts]``), run as real processes from a folder outside the repo.

No training here: help, bad input and ``--show-config`` only. The entry points sit next to the interpreter
(``pip install -e .`` puts them in the virtualenv's bin folder).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import cli, run_fresh
from omegaconf import OmegaConf

from afl.config import experiments
from afl.experiments.compare import ARMS

# a run of a few seconds (one evaluation row besides the initial model's)
TINY_RUN = [
    "dataset.name=synthetic",
    "dataset.synthetic.train_size=120",
    "dataset.synthetic.test_size=40",
    "partition.num_clients=3",
    "partition.min_samples=5",
    "federation.concurrency=2",
    "federation.max_updates=2",
    "federation.eval_every=2",
    "logging.wandb.mode=disabled",
    "logging.progress=false",
]
COMMANDS = ("afl-train", "afl-compare", "afl-sweep", "afl-plot", "afl-bench")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_entry_point_prints_help(name: str, tmp_path: Path) -> None:
    proc = cli(name, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name} ")


def test_train_help_lists_the_presets_and_points_at_the_keys(tmp_path: Path) -> None:
    out = cli("afl-train", "--help", cwd=tmp_path).stdout
    assert f"experiments: {', '.join(experiments())}" in out
    assert "configs/defaults.yaml" in out and "--show-config" in out


def test_compare_help_lists_the_arms_and_presets(tmp_path: Path) -> None:
    out = cli("afl-compare", "--help", cwd=tmp_path).stdout
    assert "afl, afl-released, afl-later: the three readings of the paper's learning rate" in out
    for name, arm in ARMS.items():  # every arm with the source its rule follows (wrapped at 100 columns)
        line = next(x for x in out.splitlines() if x.startswith(f"  {name} "))
        assert arm.source.split()[:3] == line.split()[1:4]
    assert f"experiments: {', '.join(experiments())}" in out
    assert "configs/defaults.yaml" in out


@pytest.mark.parametrize("module", ["train", "compare", "sweep", "plot", "bench", "dashboard", "sync"])
def test_help_imports_neither_torch_nor_lightning(module: str) -> None:
    code = (
        "import contextlib, io, sys\n"
        f"from afl.cli.{module} import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as text:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "assert text.getvalue().startswith('usage: '), text.getvalue()\n"
        "heavy = ('torch', 'lightning', 'matplotlib', 'wandb', 'wandb_workspaces')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    imported = run_fresh(code).strip()
    assert imported == "", f"--help imported {imported}"


def test_train_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli("afl-train", "partition.alpha=0", f"output_dir={out}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: partition.alpha: must be > 0, got 0.0"
    assert not out.exists()


def test_train_show_config_mixes_options_and_overrides(tmp_path: Path) -> None:
    proc = cli("afl-train", "experiment=demo", "--show-config", "federation.concurrency=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.experiment == "demo" and cfg.federation.concurrency == 3
    assert not (tmp_path / "runs").exists()


def test_compare_unknown_arm_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = cli("afl-compare", f"output_dir={tmp_path / 'x'}", "--arms", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    expected = (
        f"error: --arms: unknown arm 'nope'; allowed: {', '.join(ARMS)} (or define one in compare.arms)"
    )
    assert proc.stderr.strip() == expected
    assert not (tmp_path / "x").exists()


def test_plot_on_a_folder_that_is_not_a_run_exits_2(tmp_path: Path) -> None:
    proc = cli("afl-plot", str(tmp_path), "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


def test_compare_from_a_folder_that_is_no_comparison_exits_2(tmp_path: Path) -> None:
    proc = cli("afl-compare", "--from", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == f"error: --from: {tmp_path} is not a finished comparison folder (no comparison.json)"
    )


# One of each kind of check validate() makes: scalar ranges, names of every registry, relations between keys,
# options of the server and delay components.
CONFIG_ERRORS = [
    ("client.lr=-1", "client.lr"),
    ("model.name=vgg", "model.name"),
    ("dataset.name=imagenet", "dataset.name"),
    ("partition.scheme=random", "partition.scheme"),
    ("client.optimizer=lbfgs", "client.optimizer"),
    ("federation.executor=dask", "federation.executor"),
    ("ray.num_gpus=-1", "ray.num_gpus"),
    ("trainer.precision=16-true", "trainer.precision"),
    ("trainer.compile=fast", "trainer.compile"),
    ("federation.mode=semi", "federation.mode"),
    ("arm=nope", "arm"),
    ("federation.concurrency=11", "federation.concurrency"),
    ("server.aggregator.buffer_sise=3", "server.aggregator.buffer_sise"),
    ("server.aggregator.staleness.name=linear", "server.aggregator.staleness.name"),
    ("server.lr_schedule.decay=cosine", "server.lr_schedule.decay"),
    ("delay.speed.name=gamma", "delay.speed.name"),
    ("delay.comm.max=-1", "delay.comm.max"),
]


def test_a_config_error_answers_without_importing_torch_or_lightning() -> None:
    """``afl-train KEY=bad`` exits 2 naming the key before anything heavy is imported (torch takes about 2 s
    to import, Lightning 5 s); so does ``--show-config`` of a valid config. In a fresh interpreter."""
    code = (
        "import contextlib, io, sys\n"
        "from afl.cli.train import main\n"
        f"for item, key in {CONFIG_ERRORS!r}:\n"
        "    with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "        assert main([item]) == 2, item\n"
        "    assert err.getvalue().startswith(f'error: {key}: '), err.getvalue()\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['experiment=demo', '--show-config']) == 0\n"
        "assert 'experiment: demo' in out.getvalue()\n"
        "heavy = ('torch', 'lightning', 'torchvision', 'sklearn', 'ray')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    imported = run_fresh(code).strip()
    assert imported == "", f"a config error imported {imported}"


@pytest.mark.parametrize("module", ["train", "compare", "sweep", "plot", "bench"])
def test_python_dash_m_runs_each_command(module: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"afl.cli.{module}", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["output_dir="], "error: output_dir: is empty: give a folder"),
        (["experiment="], "error: experiment: is empty: give a preset's name"),
        (["experiment=nowhere/mine.yaml"], "error: experiment: no file nowhere/mine.yaml"),
    ],
)
def test_train_refuses_empty_keys_and_missing_preset_files(
    tmp_path: Path, args: list[str], error: str
) -> None:
    proc = cli("afl-train", *args, "--show-config", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(error), proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_command_takes_a_preset_file_of_ones_own(tmp_path: Path) -> None:
    """``experiment=FILE.yaml``: a preset outside configs/, named after its file."""
    (tmp_path / "mine.yaml").write_text("federation: {concurrency: 3}\npartition: {num_clients: 7}\n")
    shown = OmegaConf.create(cli("afl-train", "experiment=mine.yaml", "--show-config", cwd=tmp_path).stdout)
    assert (shown.experiment, shown.federation.concurrency, shown.partition.num_clients) == ("mine", 3, 7)
    (tmp_path / "sweep.yaml").write_text(
        "description: d\nbase: [experiment=mine.yaml]\narms: [afl]\naxes: {}\nseeds: [0]\n"
    )
    listed = cli("afl-sweep", "sweep.yaml", "--dry-run", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("afl seed 0 -> "), listed.stderr
    # afl-compare: tests/integration/test_plugins.py runs one


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--out", "missing/dir/x.png"], "error: --out: no folder missing/dir to write x.png in"),
        (["--out", "x.pnj"], "error: --out: x.pnj: unknown suffix .pnj; use .png, .pdf or .svg"),
        (["--out", "x.png", "--format", "svg"], "error: --format svg does not match --out x.png: give x.svg"),
    ],
)
def test_plot_output_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], error: str) -> None:
    from afl.experiments.run import run

    run(overrides=[*TINY_RUN, f"output_dir={tmp_path / 'run'}"])
    proc = cli("afl-plot", "run", *args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(error) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
