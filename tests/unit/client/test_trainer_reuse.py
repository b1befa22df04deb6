"""Client jobs train with their thread's Trainer, made ready for each job: the same results as a new
Trainer per job, with every client callback, on worker threads, and after a job that stopped early."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import lightning as L
import torch
from helpers.models import tiny_cnn

from afl.client.callbacks import CallbackSpec, build_client_callbacks
from afl.client.runtime import ClientRuntime
from afl.client.trainer import thread_trainer
from afl.config import load_config
from afl.messages import ClientJob, ClientResult
from afl.sim.executors import SerialExecutor, ThreadExecutor

CALLBACKS = [
    "client.callbacks=[gradient_norm,parameter_drift,{name: delay_aware_lr, alpha: 0.3}]",
    "client.prox_mu=0.01",
    "server.lr_schedule.name=constant",
]


def _factory() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_cnn()


def _clients(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(40 + 16 * c, 1, 8, 8, generator=g), torch.randint(0, 10, (40 + 16 * c,), generator=g))
        for c in range(n)
    ]


def _jobs(state: dict[str, torch.Tensor], count: int = 8) -> list[ClientJob]:
    return [
        ClientJob(j, j % 4, state, 1e-2 * (1 + j % 3), 100 + j, previous_staleness=j % 5, round=j // 4)
        for j in range(count)
    ]


def _same(a: ClientResult, b: ClientResult) -> None:
    assert (a.job_id, a.steps, a.train_loss, a.train_accuracy, a.metrics) == (
        b.job_id,
        b.steps,
        b.train_loss,
        b.train_accuracy,
        b.metrics,
    )
    for key, value in a.state.items():
        assert torch.equal(value, b.state[key]), key


def test_reused_trainers_give_what_new_ones_give_with_every_callback_and_on_threads() -> None:
    torch.set_num_threads(1)  # conftest restores it
    specs = build_client_callbacks(load_config(CALLBACKS))
    assert len(specs) == 4
    state = _factory().state_dict()

    def runtime(reuse: bool) -> ClientRuntime:
        return ClientRuntime(
            _clients(),
            _factory,
            num_classes=10,
            local_epochs=2,
            batch_size=16,
            callbacks=specs,
            reuse_trainer=reuse,
        )

    fresh = [runtime(False)(job) for job in _jobs(state)]
    assert {k for r in fresh for k in r.metrics} == {"grad_sq_norm", "client_drift", "effective_lr"}
    reused_here = [runtime(True)(job) for job in _jobs(state)]
    with ThreadExecutor(runtime(True), workers=2) as executor:
        for job in _jobs(state):
            executor.submit(job)
        reused_threads = [executor.result(job.job_id) for job in _jobs(state)]
    for a, b, c in zip(fresh, reused_here, reused_threads):
        _same(a, b)
        _same(a, c)
    assert len({r.steps for r in fresh}) > 1  # clients of different sizes: the loops were renewed
    # the thread's Trainer was built once and is the one the jobs here used
    assert thread_trainer(2) is thread_trainer(2)


@dataclass(frozen=True)
class _StopAfterOneBatch(CallbackSpec):
    """A user's early stopping: ``trainer.should_stop`` after the first batch."""

    def make(self, job: ClientJob) -> L.Callback:
        class Stop(L.Callback):
            def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
                trainer.should_stop = True

        return Stop()


def test_a_job_after_one_that_stopped_early_trains_all_its_steps() -> None:
    torch.set_num_threads(1)
    state = _factory().state_dict()
    job = _jobs(state, 1)[0]

    def run_in_a_new_thread(reuse: bool) -> tuple[ClientResult, ClientResult]:
        out: list[ClientResult] = []

        def work() -> None:  # a thread of its own: its Trainer starts out new
            stopping = ClientRuntime(
                _clients(),
                _factory,
                num_classes=10,
                local_epochs=3,
                batch_size=16,
                callbacks=[_StopAfterOneBatch()],
                reuse_trainer=reuse,
            )
            plain = ClientRuntime(
                _clients(), _factory, num_classes=10, local_epochs=3, batch_size=16, reuse_trainer=reuse
            )
            out.extend([stopping(job), plain(job)])

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return out[0], out[1]

    stopped, after = run_in_a_new_thread(reuse=True)
    assert stopped.steps == 1 and after.steps == 9  # 40 samples, batches of 16, 3 epochs
    fresh_stopped, fresh_after = run_in_a_new_thread(reuse=False)
    _same(stopped, fresh_stopped)
    _same(after, fresh_after)


def test_serial_runs_reuse_the_trainer_and_change_nothing(tiny) -> None:
    from afl.experiments.build import build, make_loop

    cfg = tiny("federation.max_updates=6", *CALLBACKS)
    finals = []
    for reuse in (False, True):
        setup = build(cfg)
        setup.runtime.reuse_trainer = reuse
        with SerialExecutor(setup.runtime) as executor:
            loop = make_loop(setup, executor)
            loop.run()
        finals.append((repr(loop.state.arrivals), loop.state.global_state))
    assert finals[0][0] == finals[1][0]
    for key, value in finals[0][1].items():
        assert torch.equal(value, finals[1][1][key]), key


@dataclass(frozen=True)
class _FailOnFirstBatch(CallbackSpec):
    """A callback that raises inside the fit, as a user's buggy callback (or a numerical error) would."""

    def make(self, job: ClientJob) -> L.Callback:
        class Fail(L.Callback):
            def on_train_batch_start(self, *args: object) -> None:
                raise RuntimeError("callback failed")

        return Fail()


def test_a_job_after_one_that_raised_inside_fit_gives_what_a_new_trainer_gives() -> None:
    torch.set_num_threads(1)
    state = _factory().state_dict()
    job = _jobs(state, 1)[0]
    out: list[ClientResult] = []
    errors: list[str] = []

    def work() -> None:
        failing = ClientRuntime(
            _clients(),
            _factory,
            num_classes=10,
            local_epochs=2,
            batch_size=16,
            callbacks=[_FailOnFirstBatch()],
        )
        try:
            failing(job)
        except RuntimeError as err:
            errors.append(str(err))
        out.append(ClientRuntime(_clients(), _factory, num_classes=10, local_epochs=2, batch_size=16)(job))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert errors == ["callback failed"]
    fresh = ClientRuntime(
        _clients(), _factory, num_classes=10, local_epochs=2, batch_size=16, reuse_trainer=False
    )
    _same(out[0], fresh(job))
    assert out[0].steps == 6  # 40 samples, batches of 16, 2 epochs
