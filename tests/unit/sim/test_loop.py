"""The loop's parts, fast: its events (their order, their layout in a checkpoint), their handlers in short
runs of a loop whose jobs are arithmetic (no Lightning), the stop when no client comes back online, and a
client job's grad mode. Whole training runs: ``tests/integration/test_loop_runs.py``."""

from __future__ import annotations

import heapq
import io
from collections import Counter
from dataclasses import fields

import pytest
import torch
from helpers.models import tiny_cnn

from afl.messages import ClientJob, ClientResult
from afl.server.aggregators import AGGREGATORS
from afl.server.lr_schedules import LR_SCHEDULES
from afl.sim.availability import AVAILABILITY
from afl.sim.delays import COMM_DELAYS, SPEEDS, DelayModel
from afl.sim.events import WAKE_ID, Arrival, Lost, Wake, saved
from afl.sim.executors import SerialExecutor
from afl.sim.loop import AllUpdatesRejected, FederatedLoop, LoopConfig, NoClientOnline

CLIENTS = 6


def _job(job_id: int, client_id: int = 0) -> ClientJob:
    return ClientJob(job_id=job_id, client_id=client_id, state={}, lr=0.0, seed=0)


def _train(job: ClientJob) -> ClientResult:
    """A job in arithmetic: the model moves by (client + 1) · lr."""
    state = {"w": job.state["w"] + (job.client_id + 1) * job.lr}
    return ClientResult(job.job_id, job.client_id, state, 10, 1, float(job.client_id), 0.0)


def _loop(mode: str, availability: dict, on_checkpoint=None) -> FederatedLoop:
    """Six clients, 3 in flight, 24 updates, a checkpoint every 3; lognormal speeds, uniform delays."""
    return FederatedLoop(
        LoopConfig(
            mode=mode, concurrency=3, max_updates=24, eval_every=4, base_lr=0.1, seed=0, checkpoint_every=3
        ),
        global_state={"w": torch.zeros(3)},
        num_samples=[10] * CLIENTS,
        aggregator=AGGREGATORS.build({"name": "fedavg" if mode == "sync" else "afl"}, "aggregator"),
        lr_schedule=LR_SCHEDULES.build({"name": "constant"}, "lr_schedule"),
        delay=DelayModel(
            speed=SPEEDS.build({"name": "lognormal"}, "speed"),
            comm=COMM_DELAYS.build({"name": "uniform"}, "comm"),
            time_per_sample=0.01,
            num_clients=CLIENTS,
            seed=0,
        ),
        executor=SerialExecutor(_train),
        evaluate=lambda s: {"test_loss": float(s["w"].sum()), "test_accuracy": 0.0},
        on_checkpoint=on_checkpoint,
        availability=AVAILABILITY.build(availability, "availability"),
    )


def test_events_go_by_time_then_dispatch_index_a_wake_up_first() -> None:
    events = [
        Arrival(_job(2), 0, 0.0, 1.0),
        Lost(_job(1), 0, 0.0, 1.0),
        Wake(1.0),
        Arrival(_job(0), 0, 0.0, 2.0),
        Wake(0.5),
    ]
    queue: list = []
    for event in events:
        heapq.heappush(queue, event)
    popped = [heapq.heappop(queue) for _ in events]
    assert [(type(e).__name__, e.key()) for e in popped] == [
        ("Wake", (0.5, WAKE_ID)),
        ("Wake", (1.0, WAKE_ID)),
        ("Lost", (1.0, 1)),
        ("Arrival", (1.0, 2)),
        ("Arrival", (2.0, 0)),
    ]


def test_a_checkpoint_stores_every_event_in_the_layout_it_always_had() -> None:
    """A dispatched job's fields, a wake-up a placeholder job of id -1, and no kind (checkpoints written
    before events had types read the same)."""
    layout = {"job", "version", "dispatch_time", "finish_time", "timed_out"}
    job_fields = {f.name for f in fields(ClientJob)}
    arrival = saved(Arrival(_job(4, 2), 3, 1.5, 2.5, timed_out=True))
    assert arrival == {
        "job": dict(vars(_job(4, 2))),
        "version": 3,
        "dispatch_time": 1.5,
        "finish_time": 2.5,
        "timed_out": True,
    }
    lost, wake = saved(Lost(_job(5, 1), 3, 1.5, 2.0)), saved(Wake(7.0))
    for entry in (arrival, lost, wake):
        assert set(entry) == layout and set(entry["job"]) == job_fields
    assert (wake["job"]["job_id"], wake["finish_time"]) == (WAKE_ID, 7.0)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_resumed_queue_holds_the_same_events_and_the_run_goes_on_identically(mode: str) -> None:
    """Clients that come and go: every checkpoint (taken with lost jobs, and in async a waiting slot, in
    its queue), saved and resumed in a fresh loop, restores each event's kind and continues to the
    uninterrupted run's arrivals, losses, evaluations and model."""
    availability = {"name": "exponential", "mean_on": 0.4, "mean_off": 0.4}
    taken: list[tuple[dict, list]] = []
    whole = _loop(mode, availability, on_checkpoint=lambda s: taken.append((s, _queue(whole))))
    whole.run()
    assert whole.state.client_updates == 24 and whole.state.lost_updates > 0
    kinds = Counter(kind for _, queue in taken for kind, _ in queue)
    assert kinds["Lost"] > 0 and (mode == "sync" or kinds["Wake"] > 0)
    for state, queue in taken:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        resumed = _loop(mode, availability)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        assert _queue(resumed) == queue
        resumed.run()
        assert repr(resumed.state.arrivals) == repr(whole.state.arrivals)
        assert repr(resumed.state.lost) == repr(whole.state.lost)
        assert [r["test_loss"] for r in resumed.history] == [r["test_loss"] for r in whole.history]
        assert torch.equal(resumed.state.global_state["w"], whole.state.global_state["w"])


def _queue(loop: FederatedLoop) -> list[tuple[str, tuple[float, int]]]:
    return sorted((type(e).__name__, e.key()) for e in loop.state.in_flight)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_run_stops_with_no_client_online_when_none_comes_back(tmp_path, mode: str) -> None:
    """Every client online until t = 1, then never again: the budget cannot be reached, and the error says
    so by its name (not that updates were rejected)."""
    trace = tmp_path / "trace.csv"
    trace.write_text("client,start,end\n" + "".join(f"{c},0,1\n" for c in range(CLIENTS)))
    loop = _loop(mode, {"name": "trace", "path": str(trace)})
    with pytest.raises(NoClientOnline, match=r"^the run stopped at \d+ of 24 client updates: no idle") as err:
        loop.run()
    assert isinstance(err.value, RuntimeError) and not isinstance(err.value, AllUpdatesRejected)
    assert 0 < loop.state.client_updates < 24 and not loop.state.in_flight
    assert loop.state.clock <= 1.0


def test_a_client_job_trains_under_no_grad_and_leaves_the_callers_grad_mode() -> None:
    from afl.client.runtime import ClientRuntime
    from afl.messages import ClientJob

    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,))

    def factory():
        return tiny_cnn()

    state = factory().state_dict()
    runtime = ClientRuntime([(x, y)], factory, num_classes=10, local_epochs=1, batch_size=16)
    with torch.no_grad():
        result = runtime(ClientJob(0, 0, state, 1e-2, 0))
        assert not torch.is_grad_enabled()  # Lightning's fit alone would leave it enabled here
    assert result.steps == 3
    assert not torch.equal(result.state["classifier.weight"], state["classifier.weight"])
