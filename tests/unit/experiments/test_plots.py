"""Figures of finished runs (``afl-plot``, the comparison's and the sweep's curves): grouped by arm, seeds
averaged with a band, no seed carried past its end, one drawing style, every axis labelled, a caption.

Real matplotlib, real run folders: short real runs, and copies of them whose ``metrics.csv`` holds chosen
evaluations (seeds that end at different simulated times)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers.configs import TINY
from omegaconf import OmegaConf

from afl.cli.plot import main, plot_runs
from afl.experiments.plots import caption_path, plot_band_panels, plot_bands

SHORT = [*TINY, "federation.max_updates=8", "federation.eval_every=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real finished runs: afl at seeds 0 and 1 (J=3) and seed 0 at J=2; fedbuff at seed 0."""
    from afl.experiments.run import run

    root = tmp_path_factory.mktemp("runs")
    made = {
        "afl0": ["arm=afl", "seed=0", "server.aggregator.server_lr=1.0"],
        "afl1": ["arm=afl", "seed=1", "server.aggregator.server_lr=1.0", "federation.workers=1"],
        "afl0-J2": ["arm=afl", "seed=0", "server.aggregator.server_lr=1.0", "federation.concurrency=2"],
        "fedbuff0": ["arm=fedbuff", "seed=0", "client.lr=0.01"],
    }
    for name, overrides in made.items():
        run(overrides=[*SHORT, *overrides, f"output_dir={root / name}"])
    return {name: root / name for name in made}


def _copy(source: Path, target: Path, points: list[tuple[float, int, float]], **summary: Any) -> Path:
    """A copy of a real run folder whose evaluations are ``points`` (sim_time, client_updates, test
    accuracy); ``summary`` (arm, seed, ...) replaces keys of summary.json and config.yaml alike."""
    shutil.copytree(source, target)
    with (source / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    with (target / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for t, u, acc in points:
            writer.writerow({**rows[0], "sim_time": t, "client_updates": u, "test_accuracy": acc})
    saved = {**json.loads((source / "summary.json").read_text()), **summary}
    (target / "summary.json").write_text(json.dumps({k: v for k, v in saved.items() if v is not None}))
    config = OmegaConf.load(source / "config.yaml")
    for key, value in summary.items():
        if key in config:
            config[key] = value
    OmegaConf.save(config, target / "config.yaml")
    return target


def _lines(ax: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in ax.get_lines()}


def _legend(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_afl_plot_groups_runs_by_arm_and_setting_and_averages_seeds(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Two seeds of afl → one curve with a band; afl at another J → its own curve, labelled J=2; the seed's
    folder twice counts once; federation.workers does not split a group."""
    order = ["afl0", "fedbuff0", "afl1", "afl0-J2", "afl0"]
    fig = plot_runs([runs[name] for name in order], tmp_path / "p.png")
    assert _legend(fig) == [
        "afl, J=3 (2 seeds): lr=0.003, η_g=1",
        "fedbuff: lr=0.01",
        "afl, J=2: lr=0.003, η_g=1",
        "after a seed's end: mean of seeds still running",  # the two afl seeds end at different times
        "a seed's end",
    ]
    ends = sorted(float(_rows(runs[name])[-1]["sim_time"]) for name in ("afl0", "afl1"))
    by_time = _lines(fig.axes[0])
    assert max(by_time["afl, J=3 (2 seeds): lr=0.003, η_g=1"].get_xdata()) == ends[0]
    assert list(by_time["_afl, J=3 (2 seeds): lr=0.003, η_g=1: seed ends"].get_xdata()) == ends
    by_updates = fig.axes[1]
    afl = _lines(by_updates)["afl, J=3 (2 seeds): lr=0.003, η_g=1"]
    seeds = [[float(r["test_accuracy"]) for r in _rows(runs[name])] for name in ("afl0", "afl1")]
    assert list(afl.get_xdata()) == [0.0, 4.0, 8.0]
    assert list(afl.get_ydata()) == pytest.approx([(a + b) / 2 for a, b in zip(*seeds)])
    assert len(by_updates.collections) == 1  # one band: the only curve with two seeds
    band = by_updates.collections[0].get_paths()[0].vertices
    spread = [abs(a - b) / 2**0.5 for a, b in zip(*seeds)]  # the std of two values
    assert band[:, 1].max() == pytest.approx(max(m + s for m, s in zip(afl.get_ydata(), spread)))


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_old_run_folders_without_an_arm_are_grouped_by_algorithm(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    old = [
        _copy(runs["fedbuff0"], tmp_path / f"old{s}", [(0, 0, 0.1), (1, 4, 0.2)], arm=None, seed=s)
        for s in (0, 1)
    ]
    for folder in old:  # as written before arms existed: neither file has one
        config = OmegaConf.load(folder / "config.yaml")
        del config["arm"]
        OmegaConf.save(config, folder / "config.yaml")
    fig = plot_runs(old, tmp_path / "p.png")
    assert _legend(fig) == ["fedbuff (2 seeds)"]


def test_the_mean_stops_where_a_seed_ends_and_each_end_is_marked(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Seed 0 ends at 4 s, seed 1 at 6 s: the solid mean and its band stop at 4 s; beyond it only a dotted
    line of seed 1 (the seed still running), × at both ends, and the legend explains both."""
    a = _copy(runs["afl0"], tmp_path / "a", [(0, 0, 0.1), (2, 4, 0.5), (4, 8, 0.3)], seed=0)
    b = _copy(runs["afl0"], tmp_path / "b", [(0, 0, 0.1), (3, 4, 0.4), (6, 8, 0.7)], seed=1)
    fig = plot_runs([a, b], tmp_path / "p.png")
    by_time, by_updates = fig.axes[0], fig.axes[1]
    lines = _lines(by_time)
    mean = lines["afl (2 seeds)"]
    assert list(mean.get_xdata()) == [0.0, 2.0, 3.0, 4.0]
    # each seed interpolated between its evaluations (seed 1: 0.3 at 2 s, 0.5 at 4 s; seed 0: 0.4 at 3 s)
    assert list(mean.get_ydata()) == pytest.approx([0.1, 0.4, 0.4, 0.4])
    band = by_time.collections[0].get_paths()[0].vertices
    assert band[:, 0].max() == pytest.approx(4.0)  # the band stops with the first seed
    tail = lines["_afl (2 seeds): seeds still running"]
    assert tail.get_linestyle() == ":" and tail.get_linewidth() < mean.get_linewidth()
    assert list(tail.get_xdata()) == [4.0, 6.0] and list(tail.get_ydata()) == pytest.approx([0.5, 0.7])
    ends = lines["_afl (2 seeds): seed ends"]
    assert ends.get_marker() == "x" and ends.get_linestyle() == "None"
    assert list(ends.get_xdata()) == [4.0, 6.0] and list(ends.get_ydata()) == pytest.approx([0.4, 0.7])
    # against client updates both seeds end at 8: one solid line, no tail, no marks
    assert set(_lines(by_updates)) == {"afl (2 seeds)"}
    assert _legend(fig)[-2:] == ["after a seed's end: mean of seeds still running", "a seed's end"]
    text = caption_path(tmp_path / "p.png").read_text()
    assert "Seeds end at different x for: afl (against simulated time)." in text
    assert "the solid line and band stop where its first seed ends" in text


def test_one_drawing_style_and_every_axis_labelled(tmp_path: Path) -> None:
    """Both panels of every row as straight lines (no steps), every x- and y-axis labelled, the right
    panels' y tick labels shown too; in the comparison's figure and the sweep's."""
    h = [
        {"sim_time": t, "client_updates": u, "test_accuracy": a, "test_loss": 2 - a}
        for t, u, a in [(0, 0, 0.1), (1.5, 4, 0.4), (3.0, 8, 0.6)]
    ]
    bands = plot_bands(
        {"afl": [h, h], "sync": [h]}, tmp_path / "b.png", metrics=("test_accuracy", "test_loss")
    )
    panels = plot_band_panels({"J=3": {"afl": [h]}, "J=5": {"afl": [h]}}, tmp_path / "p.png")
    for fig in (bands, panels):
        assert len(fig.axes) == 4
        for ax in fig.axes:
            assert ax.get_xlabel() in ("simulated time (s)", "client updates")
            assert ax.get_ylabel() in ("test accuracy", "test loss")
            assert {line.get_drawstyle() for line in ax.get_lines()} == {"default"}
            assert all(label.get_visible() for label in ax.get_yticklabels())
    assert [ax.get_ylabel() for ax in bands.axes] == ["test accuracy"] * 2 + ["test loss"] * 2


def test_the_caption_names_the_setting_and_each_arms_step_sizes_and_seeds(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    fig = plot_runs([runs["afl0"], runs["afl1"], runs["fedbuff0"]], tmp_path / "fig.png")
    text = (tmp_path / "fig.caption.md").read_text()
    setting = next(line for line in text.splitlines() if line.startswith("**Setting.**"))
    assert setting == (
        "**Setting.** synthetic, cnn, C=6, dirichlet α=0.5, J=3, I=1, budget 8 client updates, async."
    )
    assert "- afl: lr=0.003, η_g=1; 2 seed(s) (0, 1)" in text
    assert "- fedbuff: lr=0.01; 1 seed(s) (0)" in text
    assert "Each line is the mean over a label's seeds, drawn as straight lines between evaluations" in text
    assert "the band is ± 1 standard deviation over seeds" in text
    title = fig.get_suptitle().splitlines()
    assert title[1] == (
        "synthetic, cnn, C=6, dirichlet α=0.5, J=3, I=1, budget 8 client updates, async, "
        "step sizes per curve: the legend"
    )


@pytest.mark.parametrize(
    ("args", "written", "magic"),
    [
        (["--format", "pdf"], "runs.pdf", b"%PDF-"),
        (["--out", "fig.svg"], "fig.svg", b"<?xml"),
        (["--out", "fig", "--format", "svg"], "fig.svg", b"<?xml"),
        (["--out", "fig.png"], "fig.png", b"\x89PNG\r\n\x1a\n"),
    ],
)
def test_format_writes_that_file_type(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    written: str,
    magic: bytes,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(runs["afl0"]), *args]) == 0
    data = (tmp_path / written).read_bytes()
    assert data.startswith(magic)
    if magic == b"<?xml":
        assert b"<svg" in data[:400]
    assert (tmp_path / written).with_suffix(".caption.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([written, Path(written).stem + ".caption.md"])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--out", "x.png", "--format", "pdf"], "error: --format pdf does not match --out x.png: give x.pdf"),
        (["--out", "x.pnj"], "error: --out: x.pnj: unknown suffix .pnj; use .png, .pdf or .svg"),
    ],
)
def test_a_format_the_out_suffix_contradicts_exits_2(
    runs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    error: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([str(runs["afl0"]), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(error) and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
