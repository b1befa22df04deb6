"""The Ray executor (``federation.executor=ray``) on a real local Ray cluster of 2 CPUs.

Each run starts 2 actor processes that import torch and Lightning (about 5 s each here), so these tests are
marked slow. Without Ray installed they skip, except under ``AFL_REQUIRE_RAY=1`` (CI), where that fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, runs
from helpers.configs import TINY, afl_unless_named
from helpers.runs import assert_same_outputs

from afl.client.compiled import BACKEND_ENV
from afl.config import load_config
from afl.experiments.build import build, make_loop
from afl.experiments.run import run
from afl.sim.executors import ThreadExecutor

if os.environ.get("AFL_REQUIRE_RAY") == "1":
    import ray
else:
    ray = pytest.importorskip("ray", reason='the Ray extra is not installed (pip install -e ".[ray]")')

pytestmark = pytest.mark.slow
FAULTY = ("faults.rate=0.25", "faults.kinds=[raise,nonfinite]", "federation.concurrency=4")


@pytest.fixture(scope="module")
def cluster():
    """The local cluster: started by the first run (the executor's own start-up) or here; stopped at the
    end of the module."""
    yield lambda: ray.is_initialized() or ray.init(num_cpus=2, include_dashboard=False)
    ray.shutdown()


def test_ray_runs_match_thread_runs(cluster, tiny) -> None:
    """Same seed, same run: summary, metrics.csv, updates.csv and the final parameters, with failing and
    non-finite clients among the jobs."""
    threads = run(tiny(*FAULTY))
    on_ray = run(tiny(*FAULTY, "federation.executor=ray"))  # starts the local cluster itself
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] >= 2
    assert threads.summary["rejected_by_reason"]["error"] > 0, "the test needs failing clients"
    assert_same_outputs(on_ray.output_dir, threads.output_dir)


def _kill_once(runtime, job_id: int, marker: str):
    """The runtime, except that the worker process training ``job_id`` is killed (SIGKILL, mid-job) the
    first time; ``marker`` records that it happened. A local class: Ray ships it by value."""

    class KillOnce:
        def num_samples(self, client_id: int) -> int:
            return runtime.num_samples(client_id)

        def __call__(self, job):
            if job.job_id == job_id and not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return runtime(job)

    return KillOnce()


def _loop(cfg, executor_for):
    setup = build(cfg)
    torch.set_num_threads(cfg.federation.torch_threads)  # as run() does; conftest restores it
    with executor_for(setup.runtime) as executor:
        loop = make_loop(setup, executor)
        loop.run()
    return loop


def test_a_compiled_run_on_ray_matches_the_compiled_run_on_threads(cluster, tiny, monkeypatch) -> None:
    """``trainer.compile`` on Ray: each actor compiles the step in its own process (the runtime travels
    without its threads' models, with the backend the driver built it with), and the run's outputs are
    the thread run's (``aot_eager``: the compiled code is the same in every process)."""
    monkeypatch.setenv(BACKEND_ENV, "aot_eager")
    threads = run(tiny("trainer.compile=default"))
    on_ray = run(tiny("trainer.compile=default", "federation.executor=ray"))
    assert_same_outputs(on_ray.output_dir, threads.output_dir)


def test_a_killed_worker_is_replaced_and_its_jobs_run_again(cluster, tmp_path) -> None:
    from afl.sim.ray_executor import RayExecutor

    cluster()
    cfg = load_config(afl_unless_named([*TINY, *FAULTY, "federation.max_updates=10"]))
    marker = tmp_path / "killed"
    expected = _loop(cfg, lambda rt: ThreadExecutor(rt, 2))
    got = _loop(cfg, lambda rt: RayExecutor(_kill_once(rt, 4, str(marker)), 2, max_retries=1))
    assert marker.exists(), "no worker was killed"
    assert expected.state.rejected["error"] > 0, "the test needs failing clients"
    assert got.state.rejected == expected.state.rejected
    # a job's own error comes back as it is, not wrapped by Ray
    assert got.state.first_rejection == expected.state.first_rejection
    assert "InjectedFault" in got.state.first_rejection
    assert repr(got.state.arrivals) == repr(expected.state.arrivals)
    for key, value in expected.state.global_state.items():
        assert torch.equal(got.state.global_state[key], value), key


def test_without_retries_the_lost_jobs_count_as_failed_clients(cluster, tmp_path) -> None:
    from afl.sim.ray_executor import RayExecutor

    cluster()
    cfg = load_config(afl_unless_named([*TINY, "federation.max_updates=10"]))  # afl, M = 1
    marker = tmp_path / "killed"
    got = _loop(cfg, lambda rt: RayExecutor(_kill_once(rt, 4, str(marker)), 2, max_retries=0))
    assert marker.exists(), "no worker was killed"
    lost = [a for a in got.state.arrivals if a["rejected"]]
    # the killed job fails, and so do the jobs sent to that worker before Ray saw it die (how many depends
    # on timing); the jobs before it are untouched and the run goes on to its budget
    assert 4 in [a["job_id"] for a in lost] and min(a["job_id"] for a in lost) == 4
    assert {a["rejected"] for a in lost} == {"error"} and got.state.rejected["error"] == len(lost)
    assert "Actor" in got.state.first_rejection  # Ray's ActorDiedError / RayActorError, by name
    assert got.state.client_updates == 10 and got.state.version == 10 - len(lost)


def test_a_run_joins_a_running_cluster_by_address(cluster, tiny, tmp_path) -> None:
    """``ray.address`` (here the cluster of this test process): a separate training process joins it."""
    cluster()
    address = ray.get_runtime_context().gcs_address
    expected = run(tiny())
    out = tmp_path / "joined"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *afl_unless_named(TINY),  # the run of the tiny fixture
            "federation.executor=ray",
            f"ray.address={address}",
            f"output_dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert runs.summary(out) == runs.summary(expected.output_dir)


def test_a_cluster_too_small_for_the_actors_is_an_error_that_says_so(cluster, tiny) -> None:
    cluster()
    with pytest.raises(RuntimeError, match=r"has 2 CPUs, and federation.workers × ray.num_cpus needs 3"):
        run(tiny("federation.executor=ray", "federation.workers=3"))


def test_plugins_run_on_ray_workers_as_on_threads(tmp_path: Path) -> None:
    """A user's model, optimizer and data set from ``plugins=[...]``: the Ray run (its workers get the
    plug-in module pickled by value) writes what the thread run writes."""
    from helpers.plugins import MINE, PLUGIN, SMALL
    from helpers.processes import cli

    (tmp_path / "my_components.py").write_text(
        PLUGIN
        + """

from afl.client import OPTIMIZERS


@OPTIMIZERS.register("plain_sgd")
def plain_sgd(params, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)
"""
    )
    common = ["plugins=[my_components]", *SMALL, *MINE, "client.optimizer=plain_sgd", "client.lr=0.05"]
    for executor in ("thread", "ray"):
        proc = cli(
            "afl-train", *common, f"federation.executor={executor}", f"output_dir={executor}", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
    threads, on_ray = (tmp_path / "thread", tmp_path / "ray")
    assert_same_outputs(on_ray, threads)
    summary = json.loads((on_ray / "summary.json").read_text())
    assert summary["model"] == "tiny_mlp" and summary["client_updates"] == 6


def test_a_comparison_launched_on_ray_writes_what_one_job_writes(cluster, tmp_path: Path) -> None:
    """``--launcher ray``: each run a Ray task (1 CPU each on the local 2-CPU cluster) writing to the
    shared folder; the same files as the runs one after another here."""
    from afl.experiments.compare import compare
    from afl.experiments.parallel import RayLauncher

    cluster()
    here, _ = compare([*TINY, f"output_dir={tmp_path / 'here'}"], ["afl", "sync"], [0, 1])
    on_ray, _ = compare(
        [*TINY, f"output_dir={tmp_path / 'ray'}"], ["afl", "sync"], [0, 1], launcher=RayLauncher(cpus=1.0)
    )
    for arm in ("afl", "sync"):
        for seed in (0, 1):
            assert_same_outputs(
                tmp_path / "ray" / arm / f"seed{seed}", tmp_path / "here" / arm / f"seed{seed}"
            )
    assert [r["final_mean_acc"] for r in on_ray.table] == [r["final_mean_acc"] for r in here.table]
