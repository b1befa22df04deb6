"""The pareto and trace delay models: their draws against the closed form and the file, end to end."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers.configs import TINY

from afl.cli.train import main as train
from afl.errors import ConfigError
from afl.experiments.components import build_components
from afl.experiments.run import run
from afl.sim.delays import Constant, DelayModel, Distribution, ParetoDelay, TraceComm, TraceSpeed


def _comm_draws(comm, n: int, clients: int = 4, seed: int = 0) -> np.ndarray:
    """Communication delays as the loop draws them: one stream per (client, dispatch index)."""
    model = DelayModel(speed=Constant(1.0), comm=comm, time_per_sample=0.0, num_clients=clients, seed=seed)
    return np.array([model.duration(j % clients, 0, j) for j in range(n)])


@pytest.mark.parametrize("shape", [0.8, 1.5, 3.0])  # 0.8: an infinite mean, still a valid delay
def test_pareto_draws_follow_the_closed_form(shape: float) -> None:
    scale, n = 0.5, 20_000
    draws = _comm_draws(ParetoDelay(shape=shape, scale=scale), n)
    assert draws.min() >= scale
    # F(x) = 1 - (scale/x)^shape, so the q-quantile is scale (1 - q)^(-1/shape). The share of draws below
    # it is Binomial(n, q)/n: its standard deviation is sqrt(q(1-q)/n) (≤ 0.0036 here); allow 5 of them.
    for q in (0.1, 0.5, 0.9, 0.99):
        quantile = scale * (1 - q) ** (-1 / shape)
        assert np.mean(draws <= quantile) == pytest.approx(q, abs=5 * math.sqrt(q * (1 - q) / n))
    if shape > 2:  # finite variance scale² shape / ((shape-1)² (shape-2)): the mean within 5 standard errors
        mean = shape * scale / (shape - 1)
        variance = scale**2 * shape / ((shape - 1) ** 2 * (shape - 2))
        assert draws.mean() == pytest.approx(mean, abs=5 * math.sqrt(variance / n))


def test_pareto_in_a_run_is_the_seeded_draw_of_each_job(tiny) -> None:
    result = run(
        tiny(
            "delay.comm.name=pareto",
            "delay.comm.shape=1.2",
            "delay.comm.scale=0.5",
            "delay.time_per_sample=0",
        )
    )
    model = DelayModel(
        speed=Constant(1.0), comm=ParetoDelay(1.2, 0.5), time_per_sample=0.0, num_clients=6, seed=0
    )
    comm = [u["arrival_time"] - u["dispatch_time"] for u in result.updates]
    expected = [model.duration(u["client_id"], 0, u["job_id"]) for u in result.updates]
    assert comm == pytest.approx(expected, rel=1e-9)  # clock arithmetic: dispatch + duration − dispatch
    assert min(comm) >= 0.5 and len(set(comm)) == len(comm)
    for bad, key in (("shape=0", "shape"), ("scale=0", "scale"), ("scale=-1", "scale")):
        cfg = tiny("delay.comm.name=pareto", f"delay.comm.{bad}")  # the checks build nothing: a value's
        with pytest.raises(ConfigError, match=f"^delay.comm.{key}: must be > 0"):  # judged when built
            build_components(cfg)


TRACE = """\
# per-client speeds; each comm cell is one recorded job
client,speed,comm
0,2.0,0.25
1,0.5,1.5
2,1.0,0.1
2,1.0,0.2

   # an indented comment
2,,0.4
3,0.25,3.0
4,4.0,0.0
5,1.0,0.75
5,1.0,0.5
"""
TRACE_SPEEDS = [2.0, 0.5, 1.0, 0.25, 4.0, 1.0]
TRACE_COMM = {0: [0.25], 1: [1.5], 2: [0.1, 0.2, 0.4], 3: [3.0], 4: [0.0], 5: [0.75, 0.5]}


def test_trace_reproduces_the_files_values(tiny, tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE)
    cfg = tiny(
        "delay.speed.name=trace",
        f"delay.speed.path={path}",
        "delay.comm.name=trace",
        f"delay.comm.path={path}",
        "delay.time_per_sample=0.01",
        "federation.max_updates=18",
    )
    result = run(cfg)
    for u in result.updates:
        c = u["client_id"]
        compute = u["num_samples"] * 0.01 / TRACE_SPEEDS[c]
        comm = u["arrival_time"] - u["dispatch_time"] - compute
        # the file's value, up to the rounding of clock arithmetic (times below 100 s: 1e-9 absolute)
        assert min(abs(comm - t) for t in TRACE_COMM[c]) < 1e-9, (c, comm)
    # every recorded time of a client is used, each about equally often (seeded per job)
    model = DelayModel(
        speed=TraceSpeed(str(path)), comm=TraceComm(str(path)), time_per_sample=0.0, num_clients=6, seed=0
    )
    assert model.speeds == TRACE_SPEEDS
    n = 3000
    counts = Counter(model.duration(2, 0, j) for j in range(n))
    assert sorted(counts) == TRACE_COMM[2]
    for times in counts.values():  # Binomial(n, 1/3): standard deviation sqrt(n · 1/3 · 2/3) ≈ 26
        assert abs(times - n / 3) < 5 * math.sqrt(n * 2 / 9)
    assert model.duration(0, 0, 17) == 0.25 and model.duration(3, 0, 5) == 3.0  # one time: replayed as is


BAD_TRACES = [
    ("client,speed,comm\n0,1.0,0.5\n1,abc,0.5\n", "speed", "line 3: speed must be a number > 0, got 'abc'"),
    (
        "# comment\n\nclient,comm\n0,0.1\n1,-2\n",
        "comm",
        "line 5: comm must be a finite number >= 0, got '-2'",
    ),
    ("clients,speed\n0,1\n", "speed", "line 1: the header must name client and speed and/or comm"),
    ("client\n0\n", "speed", "line 1: the header must name client and speed and/or comm"),
    ("client,speed,extra\n0,1,2\n", "speed", "line 1: the header must name client and speed and/or comm"),
    ("client,comm,comm\n0,1,1\n", "comm", "line 1: a column is named twice"),
    ("client,speed\n0,1.0\n1,1.0,2.0\n", "speed", "line 3: expected 2 cells (client,speed), got 3"),
    ("client,speed\n0,1.0\n-1,1.0\n", "speed", "line 3: client must be an integer >= 0, got '-1'"),
    ("client,speed\n0,0\n", "speed", "line 2: speed must be a finite number > 0, got '0'"),
    ("client,speed\n0,inf\n", "speed", "line 2: speed must be a finite number > 0, got 'inf'"),
    (
        "client,speed,comm\n0,1.0,0.5\n1,2.0,0.5\n1,3.0,0.5\n",
        "speed",
        "line 4: client 1 has speed 3.0 here but 2.0 on line 3",
    ),
    ("# nothing\n", "comm", "no header line"),
]


def _train_on_trace(text: str, part: str, tmp_path, capsys) -> tuple[Path, Path, str]:
    """afl-train with ``delay.PART`` read from a trace file holding ``text``, which must exit 2:
    ``(trace path, output folder, stderr)``."""
    path, out = tmp_path / "trace.csv", tmp_path / "out"
    path.write_text(text)
    code = train([*TINY, f"delay.{part}.name=trace", f"delay.{part}.path={path}", f"output_dir={out}"])
    assert code == 2
    return path, out, capsys.readouterr().err


@pytest.mark.parametrize(("text", "part", "message"), BAD_TRACES, ids=[m for _, _, m in BAD_TRACES])
def test_a_malformed_trace_exits_2_naming_the_line(text, part, message, tmp_path, capsys) -> None:
    path, out, err = _train_on_trace(text, part, tmp_path, capsys)
    assert err.startswith(f"error: delay.{part}.path: {path}"), err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "part", "message"),
    [
        ("client,speed\n0,1\n1,1\n2,1\n3,1\n4,1\n", "speed", ": no speed for client 5 (1 of the run's 6"),
        (
            "client,speed,comm\n" + "".join(f"{c},1,\n" for c in range(6)),
            "comm",
            ": no comm for client 0 (6 of",
        ),
        (
            "client,speed\n" + "".join(f"{c},1\n" for c in range(6)) + "6,1\n",
            "speed",
            ", line 8: client 6 is not one of the run's 6 clients (0-5, partition.num_clients)",
        ),
        (  # two clients too many: the first in the file is named
            "client,speed\n" + "".join(f"{c},1\n" for c in range(6)) + "9,1\n7,1\n",
            "speed",
            ", line 8: client 9 is not",
        ),
    ],
)
def test_a_trace_must_cover_exactly_the_runs_clients(text, part, message, tmp_path, capsys) -> None:
    path, out, err = _train_on_trace(text, part, tmp_path, capsys)
    assert err.startswith(f"error: delay.{part}.path: {path}{message}"), err
    assert not out.exists()


def test_a_trace_needs_a_readable_path(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.csv"
    assert train([*TINY, "delay.comm.name=trace", f"delay.comm.path={missing}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: delay.comm.path: cannot read the trace file {missing}")
    assert train([*TINY, "delay.comm.name=trace"]) == 2
    assert "error: delay.comm.path: give the trace file" in capsys.readouterr().err


def test_a_plugin_distribution_is_asked_with_the_client_and_the_job() -> None:
    """``Distribution.draw(rng, client_id, dispatch_index)`` is the hook a user's delay model overrides (a
    per-job schedule, say): the communication delay is asked with the job's dispatch index."""

    class ByJob(Distribution):
        def draw(self, rng: np.random.Generator, client_id: int, dispatch_index: int = 0) -> float:
            return 100.0 * client_id + dispatch_index

    model = DelayModel(speed=Constant(2.0), comm=ByJob(), time_per_sample=0.5, num_clients=4, seed=0)
    assert [model.duration(c, 8, j) for c, j in [(0, 0), (3, 7), (1, 12)]] == [2.0, 309.0, 114.0]
