"""``make gpu-check``: what a CUDA GPU machine can do with this project, in about 8 minutes.

1. the environment (torch, CUDA, the card, Lightning) and the Python packages the check needs;
2. the tests marked ``gpu`` (``pytest -m gpu``);
3. the device benchmark (``afl-bench --device cuda --quick``: runs against a plain loop, ms per step);
4. the client step compiled (``trainer.compile=reduce-overhead``: CUDA graphs) beside the eager runs, ms
   per step of whole runs, ResNet-20 and the paper's CNN, and what the first compilation cost;
5. a ``paper_cifar10`` run (ResNet-20) on synthetic 3×32×32 data that must learn above chance;

then a short table, also written to ``--out`` (``gpu_check.json``, ``gpu_check.md``; the tests' whole
output in ``pytest_gpu.log``).

It runs from a checkout without installing the project (GPU images often have torch and Lightning but
not omegaconf or wandb, and no network): the callbacks folder is put on the path under its installed name,
and a W&B-disabled run needs no wandb. What is missing is named, with the command that installs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What the check imports beyond torch and Lightning (pytest and hypothesis for the tests).
NEEDED = ("torch", "lightning", "torchmetrics", "numpy", "omegaconf", "yaml", "tqdm", "pytest", "hypothesis")
OPTIONAL = ("torchvision", "wandb", "ray")


def _path_with_callbacks() -> str:
    """A folder holding ``afl_callbacks`` (a link to ``callbacks/``), for a checkout that is not installed."""
    if importlib.util.find_spec("afl_callbacks") is not None:
        return ""
    folder = Path(tempfile.mkdtemp(prefix="afl-gpu-check-"))
    (folder / "afl_callbacks").symlink_to(ROOT / "callbacks")
    return str(folder)


def environment() -> dict[str, object]:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    env: dict[str, object] = {
        "python": sys.version.split()[0],
        "missing": missing,
        "optional_missing": [m for m in OPTIONAL if importlib.util.find_spec(m) is None],
    }
    if "torch" in missing:
        return env
    import torch

    env.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda=torch.cuda.is_available())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            card=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
            devices=torch.cuda.device_count(),
        )
    if "lightning" not in missing:
        import lightning

        env["lightning"] = lightning.__version__
    return env


def _child(args: list[str], timeout: float, env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        code, text = 124, f"timed out after {timeout:g} s\n{out}"
    return code, text, time.perf_counter() - start


#: ``afl.benchmarks.NAME(device, models, updates, repeat, tmp)`` in a child, its result written as JSON.
BENCH = """
import json, sys, tempfile
from pathlib import Path
from afl import benchmarks
name, device, models, updates, repeat, out = sys.argv[1:]
with tempfile.TemporaryDirectory() as tmp:
    result = getattr(benchmarks, name)(device, models.split(","), int(updates), int(repeat), Path(tmp))
Path(out).write_text(json.dumps(result, indent=1))
print(json.dumps(result, indent=1))
"""

RUN = """
import json, sys
from afl.config import load_config
from afl.experiments.run import run
r = run(load_config(sys.argv[1:]))
keys = ("final_test_accuracy", "client_updates", "wall_time_s")
print("RESULT", json.dumps({k: r.summary[k] for k in keys}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check", help="where the table goes")
    p.add_argument("--updates", type=int, default=100, help="client updates of the paper_cifar10 run")
    p.add_argument(
        "--smoke", action="store_true", help="the check's own test, on the CPU: every step, at toy size"
    )
    args = p.parse_args(argv)
    device, accelerator = ("cpu", "cpu") if args.smoke else ("cuda", "gpu")
    env_info = environment()
    print("environment:", json.dumps(env_info, indent=1), flush=True)
    if env_info["missing"]:
        print(
            f"missing: {', '.join(env_info['missing'])}. Install them first, e.g. "  # type: ignore[arg-type]
            "pip install omegaconf tqdm pytest hypothesis (offline: carry their wheels, see docs/gpu.md)",
            file=sys.stderr,
        )
        return 2
    if not env_info.get("cuda") and not args.smoke:
        print("torch sees no CUDA GPU: nothing to check here", file=sys.stderr)
        return 2
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(
        x for x in (str(ROOT), _path_with_callbacks(), env.get("PYTHONPATH")) if x
    )
    rows: dict[str, object] = {"card": env_info.get("card"), "torch": env_info.get("torch")}

    tests_code, text, took = _child(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], 150, env
    )
    code = tests_code
    print(text[-4000:], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pytest_gpu.log").write_text(text)  # the whole output: the first failure is at its top
    lines = [line.strip("= ") for line in text.splitlines() if line.strip()]
    rows["gpu tests"] = f"{lines[-1] if lines else 'no output'} (exit {code}, {took:.0f} s)"

    args.out.mkdir(parents=True, exist_ok=True)
    bench_json = args.out / f"bench_{device}.json"
    models, updates, repeat = ("lenet", 2, 1) if args.smoke else ("resnet20,cnn,lenet", 10, 2)
    bench_code, text, took = _child(
        [
            sys.executable,
            "-c",
            BENCH,
            "bench_device",
            device,
            models,
            str(updates),
            str(repeat),
            str(bench_json),
        ],
        180,
        env,
    )
    code = bench_code
    print(text[-4000:], flush=True)
    if code == 0:
        bench = json.loads(bench_json.read_text())
        for name, values in bench.items():
            rows[f"{name}: ms per local step, run (1 worker) / 5 workers / plain loop"] = (
                f"{values['run_1_worker_ms_per_step']:.2f} / {values['run_5_workers_ms_per_step']:.2f} / "
                f"{values['plain_loop_ms_per_step']:.2f} (run ÷ plain {values['run_vs_plain']:.2f}; "
                f"peak {values.get('peak_device_mib', float('nan')):.0f} MiB)"
            )
            if "ray_5_actors_ms_per_step" in values:
                rows[f"{name}: ms per local step, 5 Ray actors at 0.2 GPU"] = (
                    f"{values['ray_5_actors_ms_per_step']:.2f}"
                )
        resnet = bench.get("resnet20", {})
        if resnet:  # the full preset: 1,000 updates × 10 epochs × 79 steps (CIFAR-10's 5,000 images a client)
            rows["paper_cifar10 at full size, projected from the benchmark"] = (
                f"{resnet['run_1_worker_ms_per_step'] * 1000 * 10 * 79 / 6e4:.0f} min"
            )
    else:
        rows["benchmark"] = f"failed (exit {code})"

    compiled_code, compiled = compiled_step(args, device, env)
    rows.update(compiled)

    size = 2000 if args.smoke else 20000
    overrides = [
        "experiment=paper_cifar10",
        "dataset.name=synthetic",
        "dataset.synthetic.channels=3",
        "dataset.synthetic.image_size=32",
        f"dataset.synthetic.train_size={size}",
        "dataset.synthetic.test_size=2000",
        "client.local_epochs=1",
        f"federation.max_updates={args.updates}",
        "federation.eval_every=25",
        "theory.enabled=false",
        f"trainer.accelerator={accelerator}",
        "logging.wandb.mode=disabled",
        "logging.progress=false",
        f"output_dir={args.out / 'paper_cifar10'}",
    ]
    code, text, took = _child([sys.executable, "-c", RUN, *overrides], 150, env)
    # stdout and stderr come together: the result is the line that says so
    found = [line[len("RESULT ") :] for line in text.splitlines() if line.startswith("RESULT ")]
    result = json.loads(found[-1]) if code == 0 and found else None
    learned = result is not None and result["final_test_accuracy"] > 0.2  # chance: 0.1
    rows[f"paper_cifar10, synthetic 3×32×32, {args.updates} updates of 1 epoch"] = (
        f"accuracy {result['final_test_accuracy']:.3f} ({'above' if learned else 'NOT above'} chance 0.1), "
        f"{result['wall_time_s']:.0f} s"
        if result
        else f"failed (exit {code}): {text[-500:]}"
    )

    table = "| check | result |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows.items())
    print("\n" + table)
    (args.out / "gpu_check.md").write_text(table)
    failed = failures(tests_code, bench_code, result is not None, learned, args.smoke, compiled_code)
    (args.out / "gpu_check.json").write_text(
        json.dumps({"environment": env_info, "rows": rows, "failed": failed}, indent=1) + "\n"
    )
    if failed:
        print(f"gpu-check FAILED: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def compiled_step(args: argparse.Namespace, device: str, env: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Step 4: ``afl.benchmarks.bench_compiled`` in a child (``--smoke``: LeNet, compiled with torch's
    ``aot_eager`` backend, which generates no code: seconds, where inductor's first compilation on a CPU
    takes tens of seconds); its exit status and its rows of the table."""
    out = args.out / f"bench_compiled_{device}.json"
    models, updates, repeat = ("lenet", 2, 1) if args.smoke else ("resnet20,cnn", 10, 2)
    if args.smoke:  # afl.client.compiled.BACKEND_ENV
        env = dict(env, AFL_COMPILE_BACKEND="aot_eager")
    code, text, took = _child(
        [sys.executable, "-c", BENCH, "bench_compiled", device, models, str(updates), str(repeat), str(out)],
        300,
        env,
    )
    print(text[-4000:], flush=True)
    if code != 0:
        return code, {"compiled client step": f"failed (exit {code}, {took:.0f} s)"}
    rows = {}
    for name, v in json.loads(out.read_text()).items():
        label = f"compile={v['mode']}" + ("" if v["backend"] == "inductor" else f", backend {v['backend']}")
        rows[f"{name}: ms per local step, {label}: run (1 worker) / 5 workers; eager run (1 worker)"] = (
            f"{v['run_1_worker_compiled_ms_per_step']:.2f} / {v['run_5_workers_compiled_ms_per_step']:.2f}; "
            f"{v['run_1_worker_ms_per_step']:.2f} (compiled ÷ eager {v['compiled_vs_eager']:.2f}; "
            f"first compilation {v['compile_s']:.0f} s)"
        )
    return code, rows


def failures(tests: int, bench: int, ran: bool, learned: bool, smoke: bool, compiled: int = 0) -> list[str]:
    """What of the check failed: the gpu tests (pytest's exit status), the benchmark, the compiled step's
    benchmark, the paper_cifar10 run, or its learning (not asked of ``--smoke``: a few toy updates learn
    nothing; tested in tests/integration/test_gpu_check.py)."""
    found = [f"the gpu tests (pytest exit {tests})"] if tests != 0 else []
    found += [f"the benchmark (exit {bench})"] if bench != 0 else []
    found += [f"the compiled step's benchmark (exit {compiled})"] if compiled != 0 else []
    if not ran:
        found.append("the paper_cifar10 run")
    elif not learned and not smoke:
        found.append("paper_cifar10 did not learn (accuracy at chance)")
    return found


if __name__ == "__main__":
    sys.exit(main())
