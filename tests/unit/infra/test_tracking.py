"""Tests for afl.tracking: real W&B runs in offline mode, read back with `wandb leet inspect` (no mocks)."""

from __future__ import annotations

import math
import shutil
import threading
from pathlib import Path

import pytest
from helpers.wandb_offline import OfflineRun, inspect_records, read_offline_run

from afl.tracking import ALLOWED_MODES, WandbTracker

# Environment variables that would change what wandb.init does if a developer has them set.
_WANDB_ENV_TO_CLEAR = (
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_API_KEY",
    "WANDB_BASE_URL",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_RUN_GROUP",
    "WANDB_JOB_TYPE",
    "WANDB_NAME",
    "WANDB_TAGS",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "WANDB_NOTES",
    "WANDB_CONSOLE",
)

CONFIG = {
    "experiment": {"name": "mnist-noniid", "seed": 7},
    "federation": {"num_clients": 20, "concurrency": 4, "alpha": 0.5, "staleness_fn": "polynomial"},
    "optim": {"lr": 0.05, "momentum": 0.0, "nesterov": False},
    "data": {"sizes": [10, 20, 30], "root": None},
}

ROWS = [
    {
        "client_updates": 20, "version": 18, "round": 4, "sim_time": 61.25, "wall_time": 2.5,
        "test/loss": 1.875, "test/accuracy": 0.5625, "staleness/mean": 1.5, "staleness/max": 4,
        "train/loss": 2.125, "train/accuracy": 0.4375,
    },
    {
        "client_updates": 40, "version": 38, "round": 8, "sim_time": 123.4, "wall_time": 5.1,
        "test/loss": 0.96875, "test/accuracy": 0.8125, "staleness/mean": 2.25, "staleness/max": 6,
        "train/loss": 1.0625, "train/accuracy": 0.78125,
    },
    {
        "client_updates": 60, "version": 57, "round": 12, "sim_time": 190.0, "wall_time": 7.75,
        "test/loss": 1.03125, "test/accuracy": 0.75, "staleness/mean": 2.0, "staleness/max": 5,
        "train/loss": 0.90625, "train/accuracy": 0.84375,
    },
]  # fmt: skip


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keeps W&B quiet and local; runs each test from an empty working folder, which it returns."""
    for name in _WANDB_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "cache"))  # wandb-core writes its debug log here
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "data"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def make_tracker(
    out: Path,
    *,
    job_type: str = "afl",
    name: str = "afl-seed7",
    config: dict | None = None,
    mode: str = "offline",
) -> WandbTracker:
    return WandbTracker(
        mode=mode,
        project="afl-tests",
        group="mnist-noniid",
        job_type=job_type,
        name=name,
        config=CONFIG if config is None else config,
        dir=out,
        tags=("test", job_type),
    )


def assert_rows(run: OfflineRun, rows: list[dict]) -> None:
    assert len(run.history) == len(rows)
    for step, (got, want) in enumerate(zip(run.history, rows, strict=True)):
        assert {key: got[key] for key in want} == want
        assert got["_step"] == step
        assert set(got) == set(want) | {"_step", "_runtime", "_timestamp"}


def test_offline_run_round_trip(wandb_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs" / "afl"
    tracker = make_tracker(out)
    for row in ROWS:
        tracker.log(row)
    tracker.set_summary({"final/test_accuracy": 0.75, "final/wall_time": 7.75, "stopped": "max_updates"})
    tracker.finish()
    tracker.finish()  # a second finish does nothing

    run_dir = tracker.run_dir
    assert run_dir is not None
    assert run_dir.parent == out / "wandb"
    assert run_dir.name.startswith("offline-run-")
    wandb_file = run_dir / f"run-{tracker.run_id}.wandb"
    assert wandb_file.is_file()
    # What the reader relies on: one {"num", "type", <type>: {...}} object per record, ending in the exit.
    records, stderr = inspect_records(wandb_file)
    assert stderr == ""
    assert [r["num"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["type"] == "header"
    assert records[-1]["type"] == "exit" and records[-1]["exit"]["exit_code"] == 0
    assert [r["history"]["item"]["client_updates"] for r in records if r["type"] == "history"] == [20, 40, 60]

    run = read_offline_run(run_dir)
    assert run.run_id == tracker.run_id
    assert run.config == CONFIG
    assert (run.group, run.job_type, run.name, run.project) == (
        "mnist-noniid",
        "afl",
        "afl-seed7",
        "afl-tests",
    )
    assert run.tags == ["test", "afl"]
    assert run.exit_code == 0 and run.finished
    assert run.stderr == ""
    assert_rows(run, ROWS)

    summary = run.summary
    assert summary["test/accuracy"] == {"max": 0.8125, "last": 0.75}
    assert summary["test/loss"] == {"min": 0.96875, "last": 1.03125}
    assert summary["train/loss"] == 0.90625
    assert summary["staleness/max"] == 5
    assert summary["client_updates"] == 60
    assert summary["_step"] == 2
    assert summary["best/test_accuracy"] == 0.8125
    assert summary["best/client_updates"] == 40
    assert summary["best/sim_time"] == 123.4
    assert summary["final/test_accuracy"] == 0.75
    assert summary["final/wall_time"] == 7.75
    assert summary["stopped"] == "max_updates"
    assert "_wandb" not in summary

    # The same run is found from the wandb/ folder, the output folder, and the file itself.
    for where in (out / "wandb", out, wandb_file):
        again = read_offline_run(where)
        assert again.run_id == run.run_id
        assert again.history == run.history

    # Nothing is written in the working folder.
    assert list(wandb_env.iterdir()) == []


def test_two_runs_one_after_another(wandb_env: Path, tmp_path: Path) -> None:
    afl_out, sync_out = tmp_path / "exp" / "afl", tmp_path / "exp" / "sync"
    afl_rows = ROWS[:2]
    sync_rows = [
        {"client_updates": 20 * i, "round": i, "sim_time": 100.0 * i, "test/accuracy": 0.25 * i}
        for i in (1, 2, 3)
    ]

    def on_disk_now(tracker: WandbTracker, name: str) -> Path:
        """A copy of the run's log as it is right now (read later: reading takes a while)."""
        assert tracker.run_dir is not None
        copy = tmp_path / "snapshots" / name / f"run-{tracker.run_id}.wandb"
        copy.parent.mkdir(parents=True)
        shutil.copyfile(tracker.run_dir / copy.name, copy)
        return copy

    afl = make_tracker(afl_out, job_type="afl", name="afl", config={"algorithm": "afl", "lr": 0.05})
    for row in afl_rows:
        afl.log(row)
    afl.finish()  # tears down W&B's service; the next tracker starts a new one
    afl_log = on_disk_now(afl, "afl")
    sync = make_tracker(sync_out, job_type="sync", name="sync", config={"algorithm": "sync", "lr": 0.1})
    for row in sync_rows:
        sync.log(row)
    sync.finish()
    sync_log = on_disk_now(sync, "sync")

    assert afl.run_id != sync.run_id
    # finish() returned only once each whole run, exit record included, was on disk.
    a, s = read_offline_run(afl_log), read_offline_run(sync_log)
    assert (a.run_id, a.job_type, a.name, a.group) == (afl.run_id, "afl", "afl", "mnist-noniid")
    assert (s.run_id, s.job_type, s.name, s.group) == (sync.run_id, "sync", "sync", "mnist-noniid")
    assert a.config == {"algorithm": "afl", "lr": 0.05}
    assert s.config == {"algorithm": "sync", "lr": 0.1}
    assert_rows(a, afl_rows)
    assert_rows(s, sync_rows)
    assert s.summary["test/accuracy"] == {"max": 0.75, "last": 0.75}
    assert s.summary["best/sim_time"] == 300.0
    assert a.exit_code == s.exit_code == 0


def test_run_left_open_is_finished_by_the_next_tracker(wandb_env: Path, tmp_path: Path) -> None:
    first = make_tracker(tmp_path / "first", name="first")
    first.log(ROWS[0])
    second = make_tracker(tmp_path / "second", name="second")  # reinit="finish_previous"
    second.log(ROWS[1])
    second.finish()

    one, two = read_offline_run(tmp_path / "first"), read_offline_run(tmp_path / "second")
    assert one.exit_code == 0
    assert_rows(one, ROWS[:1])
    assert_rows(two, ROWS[1:2])


def test_context_manager_marks_failure(wandb_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyError), make_tracker(out) as tracker:
        tracker.log(ROWS[0])
        raise KeyError("boom")
    assert tracker.finished
    run = read_offline_run(out)
    assert run.exit_code == 1
    assert_rows(run, ROWS[:1])
    with pytest.raises(RuntimeError, match="after finish"):
        tracker.log(ROWS[1])


def test_numpy_scalars_and_non_finite_values(wandb_env: Path, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    tracker = make_tracker(tmp_path / "out")
    tracker.log(
        {
            "client_updates": np.int64(5),
            "test/accuracy": np.float32(0.5),
            "test/loss": float("nan"),
            "train/loss": float("inf"),
        }
    )
    tracker.finish()
    (row,) = read_offline_run(tmp_path / "out").history
    assert row["client_updates"] == 5 and isinstance(row["client_updates"], int)
    assert row["test/accuracy"] == 0.5
    assert math.isnan(row["test/loss"])
    assert row["train/loss"] == math.inf


def test_reading_a_run_that_is_still_open(wandb_env: Path, tmp_path: Path) -> None:
    tracker = make_tracker(tmp_path / "out")
    for row in ROWS[:2]:
        tracker.log(row)
    partial = read_offline_run(tmp_path / "out")
    assert partial.exit_code is None and not partial.finished
    assert partial.history == [] or partial.history[0]["test/accuracy"] == 0.5625
    assert len(partial.history) <= 2
    tracker.finish()
    assert_rows(read_offline_run(tmp_path / "out"), ROWS[:2])


def test_where_runs_are_looked_for(wandb_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tracker = make_tracker(out)
    tracker.log(ROWS[0])
    tracker.finish()
    assert tracker.run_dir is not None

    with pytest.raises(FileNotFoundError, match="no offline W&B run"):
        read_offline_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no offline W&B run"):
        read_offline_run(tmp_path / "empty")
    # wandb refuses it (exit code 1): the reader raises rather than returning an empty run.
    with pytest.raises(RuntimeError, match="Not a .wandb file"):
        read_offline_run(tracker.run_dir / "logs" / "debug.log")

    # A second run in the same output folder makes the folder ambiguous; each run folder still works.
    shutil.copytree(tracker.run_dir, out / "wandb" / "offline-run-20000101_000000-copyrun1")
    for where in (out, out / "wandb"):
        with pytest.raises(FileNotFoundError, match="holds 2 runs"):
            read_offline_run(where)
    for run_dir in (out / "wandb").glob("offline-run-*"):
        assert read_offline_run(run_dir).history[0]["client_updates"] == 20


def test_disabled_mode_writes_nothing(wandb_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    tracker = make_tracker(out, mode="disabled")
    assert tracker.run_dir is None
    for row in ROWS:
        tracker.log(row)
    tracker.set_summary({"final/test_accuracy": 0.75})
    tracker.finish()
    assert out.is_dir() and list(out.iterdir()) == []  # wandb.init creates `dir`, but writes nothing
    assert list(wandb_env.iterdir()) == []


def test_a_disabled_run_imports_no_wandb(tmp_path: Path) -> None:
    """A whole run with W&B disabled never imports it (an environment without wandb can train), yet keeps
    the best accuracy it would have logged."""
    from helpers.configs import TINY
    from helpers.processes import run_fresh

    overrides = [*TINY, "federation.max_updates=4", f"output_dir={tmp_path / 'run'}"]
    code = (
        "import sys\n"
        "from afl.experiments.run import run\n"
        f"result = run(overrides={overrides!r})\n"
        "print('wandb' in sys.modules, result.summary['client_updates'])\n"
    )
    assert run_fresh(code, timeout=300).strip() == "False 4"
    tracker = make_tracker(tmp_path / "out", mode="disabled")
    tracker.log({"client_updates": 1, "test/accuracy": 0.5, "staleness/histogram": [1, 2]})
    tracker.log({"client_updates": 2, "test/accuracy": 0.25})
    assert tracker._run.summary["best/test_accuracy"] == 0.5 and len(tracker.run_id) == 8
    tracker.finish()


def test_bad_mode_names_allowed_values(wandb_env: Path, tmp_path: Path) -> None:
    assert ALLOWED_MODES == ("offline", "online", "disabled")
    with pytest.raises(ValueError, match="'offline', 'online', 'disabled'; got 'dryrun'"):
        make_tracker(tmp_path / "out", mode="dryrun")
    assert not (tmp_path / "out").exists()


def test_main_thread_only(wandb_env: Path, tmp_path: Path) -> None:
    tracker = make_tracker(tmp_path / "out", mode="disabled")
    errors: list[BaseException] = []

    def log_from_worker() -> None:
        try:
            tracker.log(ROWS[0])
        except RuntimeError as error:
            errors.append(error)

    worker = threading.Thread(target=log_from_worker)
    worker.start()
    worker.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
    tracker.finish()


def test_lists_become_histograms_and_tables_join_the_next_row(wandb_env: Path, tmp_path: Path) -> None:
    tracker = make_tracker(tmp_path / "out")
    tracker.log_table("partition", ["client", "samples"], [[0, 5], [1, 7], [2, 9]])
    tracker.log({"client_updates": 1, "staleness/histogram": [3, 3, 5], "empty": []})
    tracker.log({"client_updates": 2, "drift/histogram": [0.5, 1.5]})
    tracker.finish()
    first, second = read_offline_run(tmp_path / "out").history
    assert first["partition.nrows"] == 3 and first["partition.ncols"] == 2
    assert first["staleness/histogram.bins"] == [2.5, 3.5, 4.5, 5.5]  # one bin per integer, 4 empty
    assert first["staleness/histogram.values"] == [2, 0, 1]
    assert not any(k.startswith("empty") for k in first)  # an empty window is left out
    assert "partition.nrows" not in second
    assert sum(second["drift/histogram.values"]) == 2 and len(second["drift/histogram.bins"]) == 65
