"""The federated loop: a virtual-clock, discrete-event simulation of asynchronous (or synchronous) FL.

*When* things happen is decided here: a job's finish time is fixed at dispatch by the delay model and
arrivals are applied in order of simulated finish time (ties broken by dispatch index). *What* a job
computes is left to an executor, which may train every in-flight job in parallel. All loop state lives
in a plain :class:`LoopState` so that a run can later be checkpointed and resumed.

:meth:`FederatedLoop.run` starts (or resumes), then takes the earliest event off the queue (an
:class:`~afl.sim.events.Arrival`, a :class:`~afl.sim.events.Lost` job or a :class:`~afl.sim.events.Wake`;
:mod:`afl.sim.events`) and steps: the event's handler, an evaluation if one is due, the free slots
refilled, a checkpoint if one is due; when the queue is empty it finishes.

The server's work per arrival does not grow with the number of clients: the event queue is a heap
keyed by (finish time, dispatch index), and the default policy draws an idle client from the sorted
in-flight client ids (:func:`afl.sim.sampling.kth_idle`) without listing the idle ones. Which client fills a
free slot is the sampling policy's choice (:mod:`afl.sim.sampling`).
"""

from __future__ import annotations

import copy
import heapq
import math
import time
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from tqdm.auto import tqdm

from afl.errors import OutOfMemory
from afl.messages import ClientJob, ClientResult, ClientUpdate, State, is_parameter
from afl.rng import derive_seed
from afl.server.aggregators import Aggregator
from afl.server.lr_schedules import LRSchedule
from afl.sim.availability import Always, Availability
from afl.sim.delays import DelayModel
from afl.sim.events import WAKE_ID, Arrival, Event, InFlight, Lost, Wake, saved
from afl.sim.executors import Executor
from afl.sim.faults import REJECT_REASONS, FaultModel
from afl.sim.modes import MODES, STALENESS_POLICIES
from afl.sim.sampling import Sampler, Uniform


class NonFiniteModel(RuntimeError):
    """The global model became non-finite although every applied update was finite."""


class AllUpdatesRejected(RuntimeError):
    """Every client update of the run was rejected (failing, non-finite, too slow or too large)."""


class NoClientOnline(RuntimeError):
    """The run stopped short of its budget: no idle client comes online again (``availability``)."""


@dataclass
class LoopState:
    """Everything the loop knows, in plain serialisable values."""

    global_state: State
    version: int = 0
    clock: float = 0.0
    client_updates: int = 0
    dispatched: int = 0
    rounds: int = 0
    dropped_updates: int = 0
    stale_updates: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    first_rejection: str = ""  # what the first rejected update said, for the error if all are rejected
    in_flight: list[Event] = field(default_factory=list)  # the event queue: a heap (heapq) in event order
    last_staleness: list[int] = field(default_factory=list)
    arrivals: list[dict[str, Any]] = field(default_factory=list)  # one row per client update
    evaluated_upto: int = 0  # arrivals covered by the evaluation rows so far
    lost_updates: int = 0  # jobs lost because their client went offline (never client updates)
    lost: list[dict[str, Any]] = field(default_factory=list)  # one row per lost job


@dataclass
class LoopConfig:
    """The loop's settings, each from one config key (:func:`afl.experiments.build.make_loop`): ``mode``,
    ``concurrency``, ``max_updates`` and ``eval_every`` from ``federation.mode``,
    ``federation.concurrency``, ``federation.max_updates`` and ``federation.eval_every``; ``base_lr`` and
    ``local_epochs`` from ``client.lr`` and ``client.local_epochs``; ``seed``; ``max_staleness`` and
    ``staleness_policy`` from ``delay.max_staleness`` and ``delay.staleness_policy``; ``timeout_s`` from
    ``client.timeout_s``; ``max_delta_norm`` from ``server.max_delta_norm``; ``checkpoint_every`` and
    ``checkpoint_every_s`` from ``checkpoint.every`` and ``checkpoint.every_s``; ``progress`` from
    ``logging.progress``."""

    mode: str = "async"
    concurrency: int = 5
    max_updates: int = 100
    eval_every: int = 10
    base_lr: float = 1e-3
    local_epochs: int = 1
    seed: int = 0
    max_staleness: int | None = None
    staleness_policy: str = "keep"
    timeout_s: float | None = None  # a job longer than this (simulated) is rejected at the timeout
    max_delta_norm: float | None = None  # an update whose ‖Δ‖ exceeds this is rejected
    checkpoint_every: int | None = None  # client updates between checkpoints; None: by wall time; 0: never
    checkpoint_every_s: float = 60.0  # with checkpoint_every=None: wall seconds between checkpoints
    progress: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.staleness_policy not in STALENESS_POLICIES:
            raise ValueError(f"staleness_policy must be one of {STALENESS_POLICIES}")


class FederatedLoop:
    """Runs the simulation to its budget of ``max_updates`` client updates.

    Args:
        config: the loop settings.
        global_state: the initial global model (state dict; the loop owns and changes it).
        num_samples: training samples per client ``n_c``.
        aggregator: the server rule.
        lr_schedule: the client LR at dispatch (base LR, round, the client's last staleness) and the
            factor on a delta at arrival (its staleness).
        delay: job durations in simulated time.
        executor: where jobs train.
        evaluate: global state → ``{"test_loss": ..., "test_accuracy": ...}``.
        on_eval: called with each evaluation row (for CSV, W&B, ...).
        faults: injected client faults (tests of robustness), or None.
        on_checkpoint: called with :meth:`state_dict` at checkpoint times (see ``LoopConfig``), or None.
        sampler: the sampling policy (``federation.sampling``); None: ``uniform``.
        availability: when clients are online (``availability``); None: ``always``.
    """

    def __init__(
        self,
        config: LoopConfig,
        *,
        global_state: State,
        num_samples: list[int],
        aggregator: Aggregator,
        lr_schedule: LRSchedule,
        delay: DelayModel,
        executor: Executor,
        evaluate: Callable[[State], dict[str, float]],
        on_eval: Callable[[dict[str, Any]], None] | None = None,
        faults: FaultModel | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        sampler: Sampler | None = None,
        availability: Availability | None = None,
    ) -> None:
        if not 1 <= config.concurrency <= len(num_samples):
            raise ValueError(f"concurrency must be in [1, {len(num_samples)}], got {config.concurrency}")
        self.cfg = config
        self.num_samples = num_samples
        self.num_clients = len(num_samples)
        self.aggregator = aggregator
        self.lr_schedule = lr_schedule
        self.delay = delay
        self.executor = executor
        self.evaluate = evaluate
        self.on_eval = on_eval
        self.faults = faults
        self.on_checkpoint = on_checkpoint
        self.state = LoopState(global_state=global_state, last_staleness=[0] * self.num_clients)
        self._busy: list[int] = []  # the in-flight jobs' client ids, sorted (a client is in flight once)
        self.history: list[dict[str, Any]] = []
        self.aggregator.setup(concurrency=config.concurrency)
        self.sampler = sampler if sampler is not None else Uniform()
        self.sampler.setup(num_clients=self.num_clients, seed=config.seed)
        self.availability = availability if availability is not None else Always()
        self.availability.setup(num_clients=self.num_clients, seed=config.seed)
        self._t0 = 0.0
        self._elapsed = 0.0  # wall seconds spent before a resume
        self._last_checkpoint = 0.0

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The complete loop state in tensors and plain Python values (safe for ``weights_only`` loading):
        :class:`LoopState` (with the event queue: the in-flight jobs and their dispatched models), the
        evaluation rows, the aggregator's state and the wall time so far, copied (the run goes on changing
        its own). Everything else is a function of the config and these counters."""
        s = self.state
        plain = {name: getattr(s, name) for name in LoopState.__dataclass_fields__ if name != "in_flight"}
        plain["in_flight"] = [saved(event) for event in s.in_flight]
        return _on_device(
            {
                "state": plain,
                "history": self.history,
                "aggregator": self.aggregator.state_dict(),
                "sampler": self.sampler.state_dict(),
                "wall_time": self._wall_time(),
            },
            torch.device("cpu"),  # a checkpoint written on a GPU resumes on a CPU, and the other way round
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; :meth:`run` then resumes where that state was taken, with its
        tensors on the device of this loop's global model."""
        state = _on_device(state, self.device)
        saved_state = dict(state["state"])
        saved_state["in_flight"] = [self._restored(event) for event in saved_state["in_flight"]]
        self.state = LoopState(**saved_state)
        heapq.heapify(self.state.in_flight)  # the saved list's order is any
        self._busy = sorted(e.job.client_id for e in self.state.in_flight if isinstance(e, InFlight))
        self.history = list(state["history"])
        self.aggregator.load_state_dict(state["aggregator"])
        self.sampler.load_state_dict(state.get("sampler", {}))  # absent from checkpoints before policies
        self._elapsed = float(state["wall_time"])

    def _restored(self, event: dict[str, Any]) -> Event:
        """An event of a saved queue (:func:`afl.sim.events.saved`). The layout names no kind: a wake-up
        has the placeholder job id, and a job is lost if its client drops out before the job would finish,
        worked out from the seed as at dispatch (the availability model and the job's duration)."""
        job = ClientJob(**event["job"])
        if job.job_id == WAKE_ID:
            return Wake(event["finish_time"])
        fields = {k: v for k, v in event.items() if k != "job"}
        finish, _ = self._finish(job, fields["dispatch_time"])
        lost = self._offline_at(job.client_id, fields["dispatch_time"]) < finish
        return (Lost if lost else Arrival)(job=job, **fields)

    @property
    def device(self) -> torch.device:
        """Where the global model, the in-flight models and the aggregation live."""
        return next(iter(self.state.global_state.values())).device

    def _wall_time(self) -> float:
        return self._elapsed + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def _checkpoint_if_due(self) -> None:
        """``on_checkpoint`` every ``checkpoint_every`` client updates, or ``checkpoint_every_s`` wall
        seconds; never at the budget (the run is done)."""
        every, s = self.cfg.checkpoint_every, self.state
        if self.on_checkpoint is None or every == 0 or s.client_updates >= self.cfg.max_updates:
            return
        due = (
            s.client_updates % every == 0
            if every is not None
            else time.perf_counter() - self._last_checkpoint >= self.cfg.checkpoint_every_s
        )
        if due:
            self.on_checkpoint(self.state_dict())
            self._last_checkpoint = time.perf_counter()

    # ----------------------------------------------------------------------------------------- dispatch
    def _round(self) -> int:
        if self.cfg.mode == "sync":
            return self.state.rounds
        return self.state.client_updates // self.cfg.concurrency

    def _dispatch(self, client_id: int) -> None:
        """Hand the client a job now: it arrives at its finish time, or is lost if the client goes offline
        first (known now: the on/off times come from the seed), and then never trains."""
        s = self.state
        job = self._job(client_id)
        finish, timed_out = self._finish(job, s.clock)
        offline_at = self._offline_at(client_id, s.clock)  # (online now)
        if offline_at < finish:  # it drops out first: lost, and not trained at all
            event: InFlight = Lost(job, s.version, s.clock, offline_at, timed_out)
        else:
            event = Arrival(job, s.version, s.clock, finish, timed_out)
        heapq.heappush(s.in_flight, event)
        insort(self._busy, client_id)
        s.dispatched += 1
        if isinstance(event, Arrival):
            self.executor.submit(job)

    def _job(self, client_id: int) -> ClientJob:
        """The job the client gets now: the global model, the LR of this round, its shuffle seed and fault."""
        s = self.state
        job_id = s.dispatched
        lr = self.lr_schedule.at_dispatch(self.cfg.base_lr, self._round(), s.last_staleness[client_id])
        epoch_lrs = self.lr_schedule.epoch_lrs(lr, self.cfg.local_epochs)
        return ClientJob(
            job_id=job_id,
            client_id=client_id,
            state={k: v.clone() for k, v in s.global_state.items()},
            lr=lr,
            seed=derive_seed(self.cfg.seed, "shuffle", client_id, job_id),
            fault=self.faults.draw(job_id) if self.faults is not None else None,
            previous_staleness=s.last_staleness[client_id],
            round=self._round(),
            epoch_lrs=epoch_lrs,
        )

    def _finish(self, job: ClientJob, start: float) -> tuple[float, bool]:
        """When a job dispatched at ``start`` finishes, and whether it runs past ``client.timeout_s`` (it
        then ends at the timeout, rejected): a function of the job's description and the seed alone."""
        samples = self.num_samples[job.client_id] * self.cfg.local_epochs
        duration = self.delay.duration(job.client_id, samples, job.job_id)
        if job.fault == "slow":
            assert self.faults is not None
            duration *= self.faults.slow_factor
        timeout = self.cfg.timeout_s
        timed_out = timeout is not None and duration > timeout
        return start + (timeout if timed_out and timeout is not None else duration), timed_out

    def _offline_at(self, client_id: int, t: float) -> float:
        """When a client online at ``t`` next goes offline (``inf``: never)."""
        if self.availability.always_online:
            return math.inf
        return self.availability.next_change(client_id, t)

    def _unavailable(self) -> list[int]:
        """The clients that cannot be dispatched now, sorted: in flight, or offline."""
        if self.availability.always_online:
            return self._busy
        return sorted(set(self._busy).union(self.availability.offline(self.state.clock)))

    def _wait_for_a_client(self, unavailable: list[int]) -> None:
        """No idle client is online: the slot waits (a :class:`Wake` event) until the first comes back;
        if none ever does, it waits for nothing, and the run stops short (:class:`NoClientOnline`)."""
        s, taken = self.state, set(self._busy)
        back = min(
            (self.availability.next_change(c, s.clock) for c in unavailable if c not in taken),
            default=math.inf,
        )
        if math.isfinite(back):
            heapq.heappush(s.in_flight, Wake(back))

    def _updates_to_come(self) -> int:
        """Client updates dispatched so far, less the jobs lost (or to be lost)."""
        s = self.state
        return s.dispatched - s.lost_updates - sum(isinstance(e, Lost) for e in s.in_flight)

    def _dispatch_async(self) -> None:
        """Refill a slot with the idle, online client the sampling policy chooses (or wait for one)."""
        unavailable = self._unavailable()
        if len(unavailable) == self.num_clients:
            self._wait_for_a_client(unavailable)
            return
        self._dispatch(self.sampler.choose(unavailable, self.state.dispatched))

    def _dispatch_round(self) -> None:
        """Sync: J distinct online clients of the sampling policy's choice (fewer if fewer are online), all
        at the current version."""
        unavailable = self._unavailable()
        if len(unavailable) == self.num_clients:
            self._wait_for_a_client(unavailable)
            return
        count = min(self.cfg.concurrency, self.cfg.max_updates - self._updates_to_come())
        count = min(count, self.num_clients - len(unavailable))
        for c in self.sampler.choose_round(count, self.state.rounds, unavailable):
            self._dispatch(int(c))

    # ----------------------------------------------------------------------------------------- events
    def _next_event(self) -> Event:
        """The earliest event off the queue; a dispatched job's client is no longer in flight."""
        event = heapq.heappop(self.state.in_flight)
        if isinstance(event, InFlight):
            del self._busy[bisect_left(self._busy, event.job.client_id)]
        return event

    def _handle(self, event: Event) -> None:
        """Hand the event to its handler."""
        match event:
            case Arrival():
                self._on_arrival(event)
            case Lost():
                self._on_lost(event)
            case Wake():
                self._on_wake(event)
            case _:
                raise TypeError(f"not an event of the loop: {event!r}")

    def _on_arrival(self, event: Arrival) -> None:
        """A client update: the job's result (or why it is rejected) applied; in sync mode the round's last
        one closes the round."""
        result, rejected, detail = self._collect(event)
        if rejected and not self.state.first_rejection:
            self.state.first_rejection = f"{rejected}: {detail}"
        self._apply(event, result, rejected)
        self._bar.update(1)
        self._close_round_if_done()

    def _on_lost(self, event: Lost) -> None:
        """A lost job's client went offline: the job is counted (no client update), and in sync mode the
        round's last job closes the round."""
        s = self.state
        s.clock = event.finish_time
        s.lost_updates += 1
        s.lost.append(
            {
                "job_id": event.job.job_id,
                "client_id": event.job.client_id,
                "dispatch_time": event.dispatch_time,
                "lost_time": event.finish_time,
            }
        )
        self._close_round_if_done()

    def _on_wake(self, event: Wake) -> None:
        """A waiting slot's wait is over: the clock moves on (the slot is refilled after it)."""
        self.state.clock = event.time

    def _close_round_if_done(self) -> None:
        """Sync: the barrier. When the round's last job has arrived (or been lost), FedAvg, next round."""
        s = self.state
        if self.cfg.mode == "sync" and not s.in_flight:
            if self.aggregator.flush(s.global_state):
                self._new_version()
            s.rounds += 1

    # ----------------------------------------------------------------------------------------- arrival
    def _collect(self, flight: InFlight) -> tuple[ClientResult | None, str, str]:
        """The job's result, or why it is rejected: ``(result or None, reason or "", detail)``."""
        try:
            result = self.executor.result(flight.job.job_id)
        except OutOfMemory:  # not the client's fault: the run's settings do not fit the machine
            raise
        except Exception as err:  # a failing client job is counted, never fatal (faults are expected)
            return None, "timeout" if flight.timed_out else "error", f"{type(err).__name__}: {err}"
        if flight.timed_out:
            return None, "timeout", f"longer than client.timeout_s={self.cfg.timeout_s}"
        device = self.device
        if any(v.device != device for v in result.state.values()):  # (a Ray worker's, on its CPU)
            result = replace(result, state={k: v.to(device) for k, v in result.state.items()})
        floats = [v for v in result.state.values() if v.is_floating_point()]
        if not all(bool(torch.isfinite(v).all()) for v in floats):
            return None, "nonfinite", "non-finite weights"
        bound = self.cfg.max_delta_norm
        if bound is not None:
            norm = state_distance(result.state, flight.job.state)
            if norm > bound:
                return None, "norm", f"‖Δ‖ = {norm:.4g} > {bound}"
        return result, "", ""

    def _apply(self, flight: InFlight, result: ClientResult | None, rejected: str = "") -> None:
        s = self.state
        tau = s.version - flight.version
        arrival_round = self._round()  # the round this update arrives in: client updates before it // J
        s.clock = flight.finish_time
        s.client_updates += 1
        client = flight.job.client_id
        too_stale = self.cfg.max_staleness is not None and tau > self.cfg.max_staleness
        dropped = not rejected and too_stale and self.cfg.staleness_policy == "drop"
        delta_scale = self.lr_schedule.at_arrival(tau)
        drift = state_distance(s.global_state, flight.job.state)  # how far the server moved meanwhile
        s.arrivals.append(
            {
                "client_updates": s.client_updates,
                "job_id": flight.job.job_id,
                "client_id": client,
                "dispatched_version": flight.version,
                "staleness": tau,
                "dispatch_time": flight.dispatch_time,
                "arrival_time": flight.finish_time,
                "lr": flight.job.lr,
                "last_lr": flight.job.last_lr,
                "delta_scale": delta_scale,
                "server_lr": self.aggregator.server_lr_at(arrival_round),
                "drift": drift,
                "num_samples": self.num_samples[client] if result is None else result.num_samples,
                "steps": 0 if result is None else result.steps,
                "train_loss": math.nan if result is None else result.train_loss,
                "train_accuracy": math.nan if result is None else result.train_accuracy,
                "dropped": int(dropped),
                "fault": flight.job.fault or "",
                "rejected": rejected,
                **({} if result is None else result.metrics),  # what client.callbacks measured
            }
        )
        self.sampler.observe(s.arrivals[-1])
        if rejected or result is None:  # counted, never applied; the slot is refilled as usual
            s.rejected[rejected] += 1
            return
        s.last_staleness[client] = tau
        s.stale_updates += int(too_stale)
        if dropped:
            s.dropped_updates += 1
            return
        update = ClientUpdate(
            client_id=result.client_id,
            num_samples=result.num_samples,
            staleness=tau,
            state=result.state,
            dispatched=flight.job.state,
            delta_scale=delta_scale,
            round=arrival_round,
        )
        if self.aggregator.on_arrival(update, s.global_state):
            self._new_version()

    def _new_version(self) -> None:
        s = self.state
        s.version += 1
        if not all(bool(torch.isfinite(v).all()) for v in s.global_state.values() if v.is_floating_point()):
            raise NonFiniteModel(
                f"the global model became non-finite at version {s.version} (client update "
                f"{s.client_updates}) although every applied update was finite: lower the step sizes "
                "(client.lr, server.aggregator.server_lr) or bound updates with server.max_delta_norm"
            )

    # ----------------------------------------------------------------------------------------- evaluation
    def _eval_row(self) -> dict[str, Any]:
        s = self.state
        window = s.arrivals[s.evaluated_upto :]
        s.evaluated_upto = len(s.arrivals)
        staleness = [a["staleness"] for a in window]
        row: dict[str, Any] = {
            "client_updates": s.client_updates,
            "version": s.version,
            "round": self._round(),
            "sim_time": s.clock,
            "wall_time": self._wall_time(),
            **self.evaluate(s.global_state),
            "staleness": staleness,  # the window's values (a W&B histogram; not a metrics.csv column)
            "mean_staleness": _mean(staleness),
            "max_staleness": max(staleness) if staleness else math.nan,
            "mean_drift": _mean([a["drift"] for a in window]),
            "max_drift": max((a["drift"] for a in window), default=math.nan),
            "train_loss": _mean([a["train_loss"] for a in window]),
            "train_accuracy": _mean([a["train_accuracy"] for a in window]),
            "dropped_updates": s.dropped_updates,
            "lost_updates": s.lost_updates,
            "rejected_updates": sum(s.rejected.values()),
            **{f"rejected_{reason}": n for reason, n in s.rejected.items()},
        }
        server_lr = self.aggregator.server_lr_at(self._round())
        if server_lr is not None:  # the step a server step would take now (rules that have one)
            row["server_lr"] = server_lr
        self.history.append(row)
        if self.on_eval is not None:
            self.on_eval(row)
        return row

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> list[dict[str, Any]]:
        """Run to the budget; returns the evaluation rows (the last one is the final model).

        After :meth:`load_state_dict`, the in-flight jobs of that state are trained again (a job's result
        depends only on its description, so they give what they would have given) and the run goes on.
        """
        self._t0 = self._last_checkpoint = time.perf_counter()
        self._bar = self._progress_bar()
        try:
            self._begin()
            while self.state.in_flight:
                self._step(self._next_event())
            self._finish_run()
        finally:
            self._bar.close()
        return self.history

    def _progress_bar(self) -> tqdm:
        """Client updates out of the budget (``logging.progress``), counted from where the run resumes."""
        return tqdm(
            total=self.cfg.max_updates,
            initial=self.state.client_updates,
            unit="update",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def _begin(self) -> None:
        """Start, or resume: the initial model evaluated (every curve starts at update 0), then the first
        jobs dispatched; a resumed run's in-flight jobs submitted again instead."""
        s = self.state
        if s.dispatched == 0 and not self.history:
            self._eval_row()
        if s.dispatched > 0 or s.in_flight:
            self._resume()
        elif self.cfg.mode == "sync":
            self._dispatch_round()
        else:
            for _ in range(min(self.cfg.concurrency, self.cfg.max_updates)):
                self._dispatch_async()

    def _resume(self) -> None:
        """Submit the saved queue's jobs again, in dispatch order (lost jobs and wake-ups train nothing)."""
        arrivals = [e for e in self.state.in_flight if isinstance(e, Arrival)]
        for event in sorted(arrivals, key=lambda e: e.job.job_id):
            self.executor.submit(event.job)

    def _step(self, event: Event) -> None:
        """One event: its handler; after a client update, an evaluation if one is due; the free slots
        refilled; after a client update, a checkpoint if one is due (holding the refilled slots)."""
        self._handle(event)
        update = isinstance(event, Arrival)
        if update:
            self._evaluate_if_due()
        self._refill()
        if update:
            self._checkpoint_if_due()

    def _evaluate_if_due(self) -> None:
        """An evaluation row every ``eval_every`` client updates (the one at the budget comes at the end)."""
        s = self.state
        if s.client_updates % self.cfg.eval_every == 0 and s.client_updates < self.cfg.max_updates:
            row = self._eval_row()
            self._bar.set_postfix(acc=f"{row['test_accuracy']:.3f}", t=f"{s.clock:.0f}s")

    def _refill(self) -> None:
        """Async: the free slot refilled (or set waiting); sync: the next round once this one is over. Never
        beyond the budget."""
        if self._updates_to_come() >= self.cfg.max_updates:
            return
        if self.cfg.mode == "async":
            self._dispatch_async()
        elif not self.state.in_flight:
            self._dispatch_round()

    def _finish_run(self) -> None:
        """The queue is empty: a part-filled buffer applied, the final model evaluated.

        Raises:
            NoClientOnline: the budget was not reached (no idle client comes online again).
            AllUpdatesRejected: every client update was rejected.
        """
        s = self.state
        if self.aggregator.flush(s.global_state):
            self._new_version()
        if s.client_updates < self.cfg.max_updates:
            raise NoClientOnline(
                f"the run stopped at {s.client_updates} of {self.cfg.max_updates} client updates: no idle "
                "client comes online again (availability)"
            )
        if sum(s.rejected.values()) == s.client_updates:
            raise AllUpdatesRejected(
                f"every one of the {s.client_updates} client updates was rejected; the first: "
                f"{s.first_rejection}"
            )
        self._eval_row()


def state_distance(a: State, b: State) -> float:
    """``‖a − b‖₂`` over the parameter entries of two model states (running statistics and counters
    excluded): an update's ``update_norm`` and the global model's ``drift``. Not
    :func:`afl_callbacks.drift.parameter_distance`, which takes two parameter sets with the same names
    (in float64) for a client's ``client_drift``."""
    return math.sqrt(sum(float((v - b[k]).square().sum()) for k, v in a.items() if is_parameter(k, v)))


def _on_device(obj: Any, device: torch.device) -> Any:
    """A deep copy of ``obj`` (dicts, lists, tuples, tensors, plain values), every tensor on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(device, copy=True)
    if isinstance(obj, dict):
        return {k: _on_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_device(v, device) for v in obj)
    return copy.deepcopy(obj)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
