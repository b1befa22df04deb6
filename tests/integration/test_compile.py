"""``trainer.compile``: the client's training step compiled with ``torch.compile``
(:mod:`afl.client.compiled`), on real Lightning Trainers and short real runs of the offline digits.

The fast tests compile with torch's ``aot_eager`` backend (``AFL_COMPILE_BACKEND``, the documented hook):
Dynamo traces the same graph and AOTAutograd derives the same backward as under inductor, and no code is
generated, so a compilation takes about a second. The tests marked slow compile with inductor, as a run
does: its first compilation of the paper's CNN took about 30 s on this machine's CPU (later ones read
torch's cache of generated code, about 2 s).

Tolerances, measured here (2 CPU cores, torch 2.14) with inductor against the eager run:

* A job's weights differ from the same job trained eagerly by 5e-7 to 6e-5 (relative norm of a tensor's
  difference; one job of each of the demo's 10 clients, 4 to 14 steps of Adam): inductor fuses and
  reorders the float operations, and Adam's normalised steps amplify what that changes in gradients near
  zero. Jobs are compared at 5e-4. Through training the difference grows as any float difference does:
  the demo's global model differed by 1.2e-6 after 5 updates, 3.5e-6 after 10, 8e-4 after 20. Runs are
  compared after 10 updates, at 1e-4.
* Test accuracies after 20 updates of 5 local epochs (sync, learning to about 0.33 on the 297 test
  digits) differed by at most 0.006 (2 digits); the eager run with 2 torch threads instead of 1 (also
  nothing but reordered float operations) differed from the 1-thread run by 0.05 at the same point.
  Accuracies are compared at 0.05: what a reordering of float operations alone moves them by here.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch._dynamo
from helpers.configs import QUIET, TINY
from helpers.processes import cli
from helpers.runs import assert_same_outputs
from omegaconf import OmegaConf
from torch._dynamo.utils import counters

from afl import checkpoint
from afl.client.compiled import BACKEND_ENV
from afl.client.module import ClientModule
from afl.config import load_config
from afl.errors import ConfigError
from afl.experiments.build import build
from afl.experiments.run import run
from afl.messages import ClientJob
from afl.sim.executors import ThreadExecutor

#: The demo (offline digits, the paper's CNN, 2 local epochs): 10 updates, evaluated every 5.
SHORT = ["experiment=demo", *QUIET, "federation.max_updates=10", "federation.eval_every=5"]
#: The demo's sync arm at 5 local epochs: it leaves chance within 20 updates (0.33 at the end).
LEARNING = [
    "experiment=demo",
    *QUIET,
    "arm=sync",
    "client.local_epochs=5",
    "federation.max_updates=20",
    "federation.eval_every=5",
]
JOB_RTOL = 5e-4  # relative norm of a tensor's difference after one job (measured: at most 6e-5)
WEIGHTS_RTOL = 1e-4  # the same, of the global model after 10 updates (measured: 3.5e-6)
ACCURACY_ATOL = 0.05  # per evaluation (measured: 0.006; 2 torch threads instead of 1 moved it 0.05)

BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)]


@pytest.fixture
def backend(request, monkeypatch):
    """The ``torch.compile`` backend of the runs the test builds (inductor: the hook unset), and torch's
    compilation caches and counters emptied (so that the counts are this test's)."""
    if request.param == "inductor":
        monkeypatch.delenv(BACKEND_ENV, raising=False)
    else:
        monkeypatch.setenv(BACKEND_ENV, request.param)
    torch._dynamo.reset()
    counters.clear()
    yield request.param
    torch._dynamo.reset()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _plain_names(state: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(state) == list(want)
    assert not [k for k in state if "_orig_mod" in k]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_compiled_run_matches_the_eager_run_and_saves_plain_names(
    backend, tmp_path: Path, monkeypatch
) -> None:
    """(1) weights and accuracies of a short compiled run equal the eager run's within the tolerances
    above; (4) the final model and the checkpoints (the global model, the in-flight jobs' models) hold the
    model's own names (torch's compiled wrapper prefixes ``_orig_mod.``)."""
    written: list[dict] = []
    save = checkpoint.save
    monkeypatch.setattr(
        checkpoint, "save", lambda path, payload: (written.append(payload), save(path, payload))
    )
    eager = run(load_config([*SHORT, f"output_dir={tmp_path / 'eager'}"]))
    compiled = run(
        load_config(
            [*SHORT, "trainer.compile=default", "checkpoint.every=5", f"output_dir={tmp_path / 'compiled'}"]
        )
    )
    assert counters["stats"]["unique_graphs"] >= 1  # it compiled
    for key, want in eager.final_state.items():
        assert _relative(compiled.final_state[key], want) < WEIGHTS_RTOL, key
    for got, want in zip(compiled.history, eager.history, strict=True):
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=ACCURACY_ATOL)
    saved = torch.load(compiled.output_dir / "final_model.pt", weights_only=True)
    _plain_names(saved, eager.final_state)
    assert written  # (a finished run removes its checkpoint: these are the payloads it wrote)
    for payload in written:
        _plain_names(payload["loop"]["state"]["global_state"], eager.final_state)
        for flight in payload["loop"]["state"]["in_flight"]:
            _plain_names(flight["job"]["state"], eager.final_state)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_compiled_run_learns_as_the_eager_run(backend, tmp_path: Path) -> None:
    """(1) On a run that leaves chance: every evaluation's test accuracy within the tolerance above."""
    eager = run(load_config([*LEARNING, f"output_dir={tmp_path / 'eager-learning'}"]))
    compiled = run(load_config([*LEARNING, "trainer.compile=default", f"output_dir={tmp_path / 'learning'}"]))
    assert eager.history[-1]["test_accuracy"] > 0.2  # it learned (chance: about 0.1)
    for got, want in zip(compiled.history, eager.history, strict=True):
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=ACCURACY_ATOL)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_compilations_do_not_grow_with_the_jobs(backend) -> None:
    """(2) Two worker threads train 10 jobs, then 20 more: one graph is compiled, by the first job, and
    none after it, whatever the clients' shard sizes (their last, smaller batches run eagerly); each job
    gives the eager job's weights (to :data:`JOB_RTOL`) and a job trained again gives the same weights
    (nothing of a thread's last job is carried into its next)."""
    torch.set_num_threads(1)  # as a run's jobs train (federation.torch_threads); the fixture restores it
    cfg = load_config(["experiment=demo", *QUIET, "trainer.compile=default"])
    runtime = build(cfg).runtime
    eager_cfg = load_config(["experiment=demo", *QUIET])
    setup = build(eager_cfg)
    state = setup.global_state

    def jobs(first: int, count: int) -> list[ClientJob]:
        return [ClientJob(j, j % 10, state, 0.01, seed=j % 10) for j in range(first, first + count)]

    def train(batch: list[ClientJob]) -> list[dict[str, torch.Tensor]]:
        with ThreadExecutor(runtime, workers=2) as executor:
            for job in batch:
                executor.submit(job)
            return [executor.result(job.job_id).state for job in batch]

    first = train(jobs(0, 10))
    assert counters["stats"]["unique_graphs"] == 1
    assert runtime.compiled is not None and runtime.compiled.backend == backend
    again = train(jobs(10, 20))  # new threads: new models, the same compiled code
    assert counters["stats"]["unique_graphs"] == 1
    assert counters["frames"]["total"] == 1
    for job, got in zip(jobs(0, 10), first, strict=True):
        _plain_names(got, state)
        want = setup.runtime(job).state
        for key in want:
            assert _relative(got[key], want[key]) < JOB_RTOL, (job.client_id, key)
            assert torch.equal(again[job.job_id][key], got[key])
            assert torch.equal(again[job.job_id + 10][key], got[key])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_compiled_run_is_the_same_for_any_number_of_workers(backend, tmp_path: Path) -> None:
    """As an eager run: the same seed gives the same outputs, to the bit, on 1 worker thread or 2, or on
    the serial executor (in the run's own thread): every thread runs the same compiled code."""
    settings = {
        "1": ["federation.workers=1"],
        "2": ["federation.workers=2"],
        "serial": ["federation.executor=serial"],
    }
    outs = {
        name: run(load_config([*SHORT, "trainer.compile=default", *extra, f"output_dir={tmp_path / name}"]))
        for name, extra in settings.items()
    }
    assert_same_outputs(outs["2"].output_dir, outs["1"].output_dir)
    assert_same_outputs(outs["serial"].output_dir, outs["1"].output_dir)


def test_the_compiled_step_adds_no_names_to_the_module(monkeypatch) -> None:
    """(4) The LightningModule of a compiled job has the eager one's state dict names: the compiled wrapper
    (an ``OptimizedModule``) is held by a plain object, not registered as a submodule."""
    monkeypatch.setenv(BACKEND_ENV, "eager")
    cfg = load_config(["experiment=demo", *QUIET, "trainer.compile=default"])
    runtime = build(cfg).runtime
    state = runtime.model_factory().state_dict()
    assert runtime.compiled is not None
    model, step = runtime.compiled(state)
    eager = ClientModule(runtime.model_factory(), num_classes=10, lr=0.01)
    compiled = ClientModule(model, num_classes=10, lr=0.01, train_step=step)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert [n for n, _ in compiled.named_parameters()] == [n for n, _ in eager.named_parameters()]
    assert list(model.state_dict()) == list(state)
    assert runtime.compiled(state)[0] is model  # the thread's one model, loaded again


def test_a_runtime_sent_to_another_process_takes_its_backend_and_none_of_its_models(monkeypatch) -> None:
    """A runtime is pickled to Ray's workers: its compiled steps go without the threads' models (each
    process builds its own) and with the backend the driver built it with; so does its placed copy."""
    monkeypatch.setenv(BACKEND_ENV, "eager")
    cfg = load_config(["experiment=demo", *QUIET, "trainer.compile=max-autotune"])
    runtime = build(cfg).runtime
    assert runtime.compiled is not None
    runtime.compiled(runtime.model_factory().state_dict())
    monkeypatch.delenv(BACKEND_ENV)
    sent = pickle.loads(pickle.dumps(runtime))
    placed = sent.on_device()
    for compiled in (sent.compiled, placed.compiled):
        assert (compiled.mode, compiled.backend, compiled.batch_size) == ("max-autotune", "eager", 32)
        assert not hasattr(compiled._local, "step")
    assert placed.compiled.factory is placed.model_factory


def test_a_resume_may_switch_the_compiled_step_on_or_off(tmp_path: Path) -> None:
    """``trainer.compile`` changes how a run is computed, not what (to float rounding): a resume may change
    it, and a checkpoint's settings (its fingerprint) leave it out, so a run checkpointed before the key
    existed resumes too."""
    cfg = load_config([*TINY, f"output_dir={tmp_path}"])
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    resumed = load_config([f"resume={tmp_path}", "trainer.compile=default"])
    assert resumed.trainer.compile == "default"
    assert checkpoint.fingerprint(resumed) == checkpoint.fingerprint(cfg)
    assert "compile" not in checkpoint.fingerprint(cfg)["trainer"]


def test_a_bad_compile_mode_exits_2_with_one_line(tmp_path: Path) -> None:
    """(3)"""
    out = tmp_path / "out"
    proc = cli("afl-train", "trainer.compile=fast", f"output_dir={out}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: trainer.compile: got 'fast'; allowed: none, default, reduce-overhead, max-autotune"
    )
    assert not out.exists()


def test_the_cohort_executor_refuses_a_compiled_step() -> None:
    with pytest.raises(ConfigError) as err:
        load_config([*TINY, "federation.executor=cohort", "trainer.compile=reduce-overhead"])
    assert str(err.value) == (
        "trainer.compile: reduce-overhead cannot compile a cohort's vectorized step "
        "(federation.executor=cohort): use trainer.compile=none, or federation.executor=thread"
    )
    assert load_config([*TINY, "federation.executor=cohort"]).trainer.compile == "none"


# ------------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
def test_a_reduce_overhead_run_on_the_gpu_follows_the_eager_run(tmp_path: Path, monkeypatch) -> None:
    """``reduce-overhead`` (inductor with CUDA graphs) on 2 worker threads, each on its own CUDA stream:
    every evaluation near the eager GPU run's (the tolerances of test_devices.py's GPU-against-CPU test),
    one graph compiled for the whole run."""
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    torch._dynamo.reset()
    counters.clear()
    gpu = [*TINY, "trainer.accelerator=gpu", "federation.workers=2", "federation.max_updates=24"]
    eager = run(load_config([*gpu, f"output_dir={tmp_path / 'eager'}"]))
    compiled = run(load_config([*gpu, "trainer.compile=reduce-overhead", f"output_dir={tmp_path / 'ro'}"]))
    assert counters["stats"]["unique_graphs"] == 1
    for got, want in zip(compiled.history, eager.history, strict=True):
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-2)
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=0.02)
    assert compiled.history[-1]["test_loss"] != compiled.history[0]["test_loss"]  # it trained
    torch._dynamo.reset()
