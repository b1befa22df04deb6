"""Client availability models: on/off times from the seed alone, read from a trace, checked like every
component; and in whole runs, no offline client dispatched, lost jobs counted, the budget exact."""

from __future__ import annotations

import math

import pytest
from helpers.configs import TINY
from helpers.loops import serial_loop

from afl.errors import ConfigError
from afl.sim.availability import AVAILABILITY, Always, Exponential, Trace


def _made(model, num_clients: int = 4, seed: int = 0):
    model.setup(num_clients=num_clients, seed=seed)
    return model


def test_exponential_flips_at_its_change_times_and_depends_on_the_seed_alone() -> None:
    model = _made(Exponential(mean_on=3.0, mean_off=1.0))
    for client in range(4):
        t, state = 0.0, model.online(client, 0.0)
        for _ in range(20):
            change = model.next_change(client, t)
            assert change > t
            assert model.online(client, (t + change) / 2) == state  # constant up to the change
            assert model.online(client, change) != state  # flipped at it
            t, state = change, not state
    again = _made(Exponential(mean_on=3.0, mean_off=1.0))
    assert [again.next_change(2, 50.0 - k) for k in range(5)] == [
        model.next_change(2, 50.0 - k) for k in range(5)
    ]
    other = _made(Exponential(mean_on=3.0, mean_off=1.0), seed=1)
    assert [other.next_change(c, 0.0) for c in range(4)] != [model.next_change(c, 0.0) for c in range(4)]


def test_exponential_clients_are_online_about_their_long_run_share() -> None:
    model = _made(Exponential(mean_on=3.0, mean_off=1.0), num_clients=200)
    share = sum(model.online(c, t) for c in range(200) for t in (10.0, 50.0, 90.0)) / 600
    assert share == pytest.approx(0.75, abs=0.06)  # 600 draws: sd of the share about 0.018
    assert model.offline(50.0) == [c for c in range(200) if not model.online(c, 50.0)]


def test_a_trace_gives_online_intervals_and_offline_between_them(tmp_path) -> None:
    trace = tmp_path / "on.csv"
    trace.write_text("client,start,end\n0,0,5\n0,5,8\n0,10,12\n1,2,4\n2,0.5,3\n")
    model = _made(Trace(path=str(trace)))
    assert [model.online(0, t) for t in (0, 4.9, 5, 7.9, 8, 9, 10, 12)] == [True] * 4 + [
        False,
        False,
        True,
        False,
    ]
    assert model.next_change(0, 1.0) == 8.0  # (0, 5) and (5, 8) touch: one interval
    assert [model.online(1, t) for t in (0, 2, 3.9, 4)] == [False, True, True, False]
    assert model.online(3, 1e9) and model.next_change(3, 0.0) == math.inf  # not in the trace: always online
    assert model.next_change(0, 12.0) == math.inf
    # a client whose first interval starts within the first second: offline until then
    assert [model.online(2, t) for t in (0, 0.4, 0.5, 2.9, 3)] == [False, False, True, True, False]
    assert model.next_change(2, 0.0) == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client,start,end\n0,5,3\n", "line 2: an interval needs 0 <= start < end"),
        ("client,start,end\n0,1,2\n0,3,3\n", "line 3: an interval needs 0 <= start < end"),  # empty
        ("client,start,end\n0,x,3\n", "line 2: expected client,start,end numbers"),
        ("client,start,end\n0,0,5\n0,4,6\n", "client 0's intervals overlap"),
    ],
)
def test_bad_traces_name_the_key_and_the_line(tmp_path, text: str, message: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(text)
    with pytest.raises(ConfigError, match=f"^availability.path: .*{message}"):
        AVAILABILITY.build({"name": "trace", "path": str(trace)}, "availability")


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"name": "exponential", "mean_on": 0.0}, "mean_on"),
        ({"name": "exponential", "mean_off": math.inf}, "mean_off"),
        ({"name": "trace", "path": "nowhere.csv"}, "path"),
        ({"name": "sometimes"}, "name"),
    ],
)
def test_bad_models_and_options_name_the_key(node: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^availability.{key}: "):
        AVAILABILITY.build(node, "availability")


def test_a_missing_trace_is_named() -> None:
    with pytest.raises(ConfigError, match="^availability.path: no availability trace at nowhere.csv$"):
        AVAILABILITY.build({"name": "trace", "path": "nowhere.csv"}, "availability")


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_only_online_clients_train_lost_jobs_are_counted_and_the_budget_is_exact(mode: str) -> None:
    overrides = [
        *TINY,
        "federation.max_updates=20",
        "availability.name=exponential",
        "availability.mean_on=0.3",
        "availability.mean_off=0.3",
        *(["federation.mode=sync", "server.aggregator.name=fedavg"] if mode == "sync" else []),
    ]
    with serial_loop(overrides) as (_, loop):
        loop.run()
    s, model = loop.state, loop.availability
    assert s.client_updates == len(s.arrivals) == 20
    assert s.lost_updates == len(s.lost) > 0
    assert s.dispatched == 20 + s.lost_updates
    assert sorted([r["job_id"] for r in s.arrivals] + [r["job_id"] for r in s.lost]) == list(
        range(s.dispatched)
    )
    for row in s.arrivals:  # online at dispatch, and still online when it arrived
        assert model.online(row["client_id"], row["dispatch_time"])
        assert model.next_change(row["client_id"], row["dispatch_time"]) >= row["arrival_time"]
    for row in s.lost:  # online at dispatch, lost the moment it went offline
        assert model.online(row["client_id"], row["dispatch_time"])
        assert row["lost_time"] == model.next_change(row["client_id"], row["dispatch_time"])
    assert loop.history[-1]["lost_updates"] == s.lost_updates


def test_always_changes_nothing() -> None:
    model = _made(Always())
    assert model.online(3, 1e9) and model.offline(5.0) == [] and model.next_change(0, 0.0) == math.inf
    with serial_loop(TINY) as (_, plain), serial_loop([*TINY, "availability.name=always"]) as (_, always):
        plain.run()
        always.run()
    assert repr(plain.state.arrivals) == repr(always.state.arrivals)
