"""Checkpoint and resume: a run killed by SIGKILL anywhere continues to exactly the uninterrupted result.

The killed runs are real subprocesses (``crash_driver.py`` kills itself with SIGKILL inside an
evaluation, half-way through a checkpoint write, or between a checkpoint's write and its rename; one
test kills from outside at a moment it does not choose). Resuming happens in this process. Same machine,
same code path: the results must be identical to the bit, wall times aside.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import CRASH_DRIVER
from helpers.configs import TINY
from helpers.loops import serial_loop
from helpers.runs import assert_same_outputs
from helpers.wandb_offline import read_offline_run
from omegaconf import OmegaConf

from afl import checkpoint
from afl.cli.train import main as train_main
from afl.config import load_config
from afl.errors import ConfigError
from afl.experiments.compare import ARMS
from afl.experiments.metrics import FAILED
from afl.experiments.run import run

# 24 updates, evaluations every 4, a checkpoint every 3 (so some rows come after the last checkpoint and
# must be dropped and recomputed), afl with a buffer of 2 (a checkpoint can hold a half-full buffer), and
# 20% injected faults (their counters and the arrival log must survive too).
COMMON = [
    *TINY,
    "federation.max_updates=24",
    "federation.eval_every=4",
    "checkpoint.every=3",
    "faults.rate=0.2",
]
RUN = [*COMMON, "server.aggregator.buffer_size=2"]
SYNC = [*COMMON, "federation.mode=sync", "server.aggregator.name=fedavg"]


def _killed(out: Path, point: str, n: int, *overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the config in a subprocess that kills itself at ``point``; return the finished process."""
    command = [sys.executable, str(CRASH_DRIVER), point, str(n), *overrides, f"output_dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (out / "summary.json").exists()
    return done


class _References(dict):
    """The uninterrupted runs, one per mode, made when first asked for."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, mode: str) -> Path:
        overrides = SYNC if mode == "sync" else RUN
        self[mode] = run(load_config([*overrides, f"output_dir={self.root / mode}"])).output_dir
        return self[mode]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _References(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize(
    ("point", "n", "mode"),
    [
        ("eval", 3, "async"),  # inside the 3rd evaluation: 2 rows written, the checkpoint at 9 is the last
        ("write", 4, "async"),  # half-way through the 4th checkpoint (update 12): resume from update 9
        ("rename", 5, "async"),  # the 5th checkpoint written but not renamed: resume from update 12
        # sync: the checkpoint is mid-round (rounds of 3, checkpoints every 3)
        pytest.param("eval", 4, "sync", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_to_the_identical_result(tmp_path, reference, point, n, mode) -> None:
    out = tmp_path / "run"
    overrides = SYNC if mode == "sync" else RUN
    _killed(out, point, n, *overrides)
    saved = torch.load(out / checkpoint.CHECKPOINT, weights_only=True)
    assert saved["loop"]["state"]["client_updates"] < 24
    if point == "write":
        assert (out / "checkpoint.pt.tmp").stat().st_size < (out / checkpoint.CHECKPOINT).stat().st_size

    result = run(load_config([f"resume={out}"]))

    assert_same_outputs(out, reference[mode])
    assert result.summary["client_updates"] == 24
    assert not (out / checkpoint.CHECKPOINT).exists() and not (out / FAILED).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference[mode].iterdir())


@pytest.mark.slow
def test_a_kill_from_outside_at_any_moment_resumes_identically(tmp_path, reference) -> None:
    """Killed from outside once the 2nd evaluation row is on disk, wherever the run then is."""
    out = tmp_path / "run"
    command = [sys.executable, str(CRASH_DRIVER), "none", "0", *RUN, f"output_dir={out}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        metrics = out / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"

    run(load_config([f"resume={out}"]))
    assert_same_outputs(out, reference["async"])


def test_resumed_wandb_run_holds_every_evaluation_once(tmp_path) -> None:
    """Killed by SIGKILL after its 5th evaluation, resumed: one W&B run, same id, every evaluation from
    update 0 once, ``_step`` never restarting (read back with wandb's own reader)."""
    out = tmp_path / "run"
    overrides = [*RUN, "logging.wandb.mode=offline"]
    _killed(out, "eval", 5, *overrides)  # 4 rows logged (0..12); the checkpoint at update 12 holds them
    run_id = torch.load(out / checkpoint.CHECKPOINT, weights_only=True)["wandb_run_id"]

    result = run(load_config([f"resume={out}"]))

    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 1 and folders[0].name.endswith(f"-{run_id}")  # the killed run's folder replaced
    continued = read_offline_run(folders[0])
    assert continued.run_id == run_id and continued.finished and continued.exit_code == 0
    updates = [r["client_updates"] for r in continued.history]
    assert updates == [int(r["client_updates"]) for r in result.history] == list(range(0, 25, 4))
    assert [r["_step"] for r in continued.history] == list(range(len(updates)))
    assert [r["test/accuracy"] for r in continued.history] == [r["test_accuracy"] for r in result.history]
    assert "partition.nrows" in continued.history[0]  # the partition table, once, with the first row
    assert all("partition.nrows" not in r for r in continued.history[1:])
    assert continued.summary["final_test_accuracy"] == result.history[-1]["test_accuracy"]
    assert continued.summary["best/test_accuracy"] == max(r["test_accuracy"] for r in result.history)
    arm = result.config.arm
    assert continued.job_type == arm and continued.name == f"{arm}-seed0" and continued.group == "default"


def test_failed_run_keeps_its_last_good_checkpoint_and_resumes(tmp_path, reference) -> None:
    """A run that raised (here: an evaluation that raised once) is marked FAILED; resume completes it."""
    out = tmp_path / "run"
    import afl.experiments.build

    real, calls = afl.experiments.build.evaluate, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real(*args, **kwargs)

    afl.experiments.build.evaluate = flaky
    try:
        with pytest.raises(OSError, match="disk full"):
            run(load_config([*RUN, f"output_dir={out}"]))
    finally:
        afl.experiments.build.evaluate = real
    assert (out / FAILED).read_text().startswith("OSError: disk full")
    run(load_config([f"resume={out}"]))
    assert_same_outputs(out, reference["async"])


def _checkpointed(tmp_path: Path) -> Path:
    """A run folder holding a checkpoint, as a crash leaves it."""
    out = tmp_path / "run"
    _killed(out, "eval", 3, *RUN)
    return out


def test_bad_resumes_are_refused_with_one_line(tmp_path, capsys) -> None:
    out = _checkpointed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    cases = [
        ([f"resume={tmp_path / 'missing'}"], "resume", "not a run folder"),
        ([f"resume={out}", "client.lr=0.1"], "client.lr", "cannot be changed when resuming"),
        ([f"resume={out}", "experiment=demo"], "experiment", "is of experiment 'default'"),
        ([f"resume={other}"], "resume", "not a run folder"),
    ]
    for argv, key, message in cases:
        assert train_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: {key}:") and message in err and "Traceback" not in err, err
    # starting it again instead of resuming it: refused, with the way to continue it
    assert train_main([*RUN, f"output_dir={out}"]) == 2
    assert f"to continue the run in it: resume={out}" in capsys.readouterr().err
    # allowed: how the run is computed, never what it computes
    cfg = load_config([f"resume={out}", "federation.workers=1", "federation.executor=serial"])
    assert cfg.federation.executor == "serial" and cfg.resume == str(out)


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path, capsys) -> None:
    out = _checkpointed(tmp_path)
    path = out / checkpoint.CHECKPOINT
    good = path.read_bytes()
    before = sorted(p.name for p in out.iterdir())

    def refused(message: str) -> None:
        assert train_main([f"resume={out}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: resume:") and message in err and "Traceback" not in err, err
        assert sorted(p.name for p in out.iterdir()) == before  # nothing written, nothing removed

    path.write_bytes(good[: len(good) // 2])
    refused("corrupt or truncated")
    path.write_bytes(b"")
    refused("corrupt or truncated")
    torch.save({"format": 99}, path)
    refused("format 1")
    # a checkpoint of a run with another config, put in this folder
    payload = torch.load(io.BytesIO(good), weights_only=True)
    payload["config"]["client"]["lr"] = 0.5
    torch.save(payload, path)
    refused("client.lr differs")
    # a pickle that is not plain data: weights_only loading refuses it, nothing is executed
    torch.save({"format": 1, "evil": ConfigError("x", "y")}, path)
    refused("corrupt or truncated")
    path.unlink()
    before.remove(checkpoint.CHECKPOINT)
    refused("has no checkpoint.pt")


def test_a_checkpoint_from_before_a_key_existed_resumes_at_its_default(tmp_path, reference) -> None:
    """A run checkpointed by a release without ``trainer``, ``federation.sampling`` and ``availability``
    (its config.yaml and its checkpoint lack them) resumes: those keys' defaults keep the old behaviour."""
    out = _checkpointed(tmp_path)
    path = out / checkpoint.CHECKPOINT
    payload = torch.load(path, weights_only=True)
    for saved in (payload["config"],):
        saved.pop("trainer"), saved.pop("availability"), saved["federation"].pop("sampling")
    torch.save(payload, path)
    plain = OmegaConf.load(out / "config.yaml")
    for key in ("trainer", "availability"):
        plain.pop(key)
    plain.federation.pop("sampling")
    OmegaConf.save(plain, out / "config.yaml")
    run(load_config([f"resume={out}"]))
    assert_same_outputs(out, reference["async"])


def test_complete_run_is_not_resumed(tiny, capsys) -> None:
    out = run(tiny()).output_dir
    assert train_main([f"resume={out}"]) == 2
    assert "is complete" in capsys.readouterr().err


def _checkpoint_times(*overrides: str) -> list[int]:
    """The client updates at which a run of TINY with ``overrides`` takes its checkpoints."""
    taken: list[int] = []

    def on_checkpoint(saved: dict) -> None:
        taken.append(saved["state"]["client_updates"])

    with serial_loop([*TINY, *overrides], on_checkpoint=on_checkpoint) as (_, loop):
        loop.run()
    return taken


def test_checkpoint_schedule() -> None:
    short = "federation.max_updates=6"
    assert _checkpoint_times(short, "checkpoint.every=0") == []
    assert _checkpoint_times(short, "checkpoint.every=2") == [2, 4]  # never at the budget: the run is done
    assert _checkpoint_times(short, "checkpoint.every_s=1e-9") == [1, 2, 3, 4, 5]  # by wall time
    assert _checkpoint_times(short, "checkpoint.every_s=3600") == []  # an hour has not passed


@pytest.mark.parametrize(
    "rule",
    [
        [],
        # the released code's reading: per-epoch rates carried by the in-flight jobs, a buffer of J
        [*ARMS["afl-released"].overrides, "client.local_epochs=2"],
        # the later code's: the round of the buffered arrivals decides the server step
        list(ARMS["afl-later"].overrides),
        # the staleness compensations: per-client caches, adaptive moments, a mean square
        ["server.aggregator.name=ca2fl", "server.aggregator.server_lr=0.5"],
        ["server.aggregator.name=fadas", "server.aggregator.delay_threshold=1"],
        ["server.aggregator.name=dc", "server.aggregator.adaptive=true"],  # (no buffer: COMMON's)
        # clients that come and go (lost jobs and waiting slots in flight), chosen by the adaptive policy
        [
            "availability.name=exponential",
            "availability.mean_on=0.4",
            "availability.mean_off=0.4",
            "federation.sampling.name=adaptive",
        ],
    ],
    ids=["afl", "afl-released", "afl-later", "ca2fl", "fadas", "dc", "availability"],
)
def test_loop_state_round_trip_continues_identically(rule: list[str]) -> None:
    """state_dict → load_state_dict into a fresh loop, mid-run, continues to the same final model."""
    base = COMMON if "server.aggregator.name=dc" in rule else RUN
    overrides = [*base, *rule, "checkpoint.every=5"]
    states: list[dict] = []
    with serial_loop(overrides, on_checkpoint=states.append) as (_, whole):
        assert whole.state_dict()["wall_time"] == 0.0  # not started: no wall time spent yet
        whole.run()
    assert whole.history[-1]["wall_time"] > 0
    # the first checkpoint with a part-filled buffer (update 5 or 10), through the file format
    middle = torch.load(_saved(next(s for s in states if _part_filled(s["aggregator"]))), weights_only=True)
    with serial_loop(overrides) as (_, resumed):
        resumed.load_state_dict(middle)
        resumed.run()
    assert repr(resumed.state.arrivals) == repr(whole.state.arrivals)  # repr: NaN == NaN, floats exact
    assert [r["test_accuracy"] for r in resumed.history] == [r["test_accuracy"] for r in whole.history]
    assert resumed.history[-1]["wall_time"] > middle["wall_time"] > 0  # the resumed run adds its own time
    for key, value in whole.state.global_state.items():
        assert torch.equal(resumed.state.global_state[key], value), key


def _part_filled(aggregator: dict) -> bool:
    """An aggregator state with a part-filled buffer (a rule without a buffer: any)."""
    buffer = aggregator.get("buffer", aggregator.get("stats"))
    return buffer is None or buffer["count"] > 0


def _saved(state: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_atomic_write_leaves_old_or_new(tmp_path) -> None:
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"format": 1, "x": torch.arange(3)})
    checkpoint.save(path, {"format": 1, "x": torch.arange(5)})
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(5))
    assert os.listdir(tmp_path) == ["c.pt"]


def test_progress_bar_counts_updates_from_where_a_run_resumes(capsys) -> None:
    """``logging.progress``: the bar counts client updates out of the budget (a resumed run's from where it
    stopped) on stderr; ``false`` writes nothing."""

    def loop_run(progress: str, state: dict | None = None) -> tuple[list[dict], str]:
        overrides = [*TINY, "federation.max_updates=6", "checkpoint.every=3", f"logging.progress={progress}"]
        states: list[dict] = []
        with serial_loop(overrides, on_checkpoint=states.append) as (_, loop):
            capsys.readouterr()
            if state is not None:
                loop.load_state_dict(state)
            loop.run()
        return states, capsys.readouterr().err

    states, quiet = loop_run("false")
    assert quiet == ""
    _, shown = loop_run("true")
    last = shown.strip().split("\r")[-1]  # the bar as it is left: the whole budget, and the evaluation
    assert "0/6 [" in shown, shown
    assert re.search(r" 6/6 \[.*(update/s|s/update), acc=0\.\d{3}, t=\d+s\]$", last), last
    _, resumed = loop_run("true", states[0])  # at update 3
    assert "3/6 [" in resumed and "0/6 [" not in resumed and "6/6 [" in resumed.strip().split("\r")[-1]
