"""The benchmarks behind ``afl-bench`` (torch and Lightning imported here, not by ``afl.cli.bench``)."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from afl.client import ClientJob, ClientRuntime, batch_loader
from afl.config import load_config
from afl.data.datasets import load_dataset
from afl.models import build_model
from afl.run import run


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_client(model: str, side: int, samples: int, epochs: int, repeat: int) -> None:
    data = load_dataset(
        "synthetic", root="data", synthetic={"train_size": samples, "test_size": 10, "image_size": side}
    )
    x, y = data.train.x, data.train.y

    def factory() -> torch.nn.Module:
        return build_model(model, in_channels=1, num_classes=10, image_size=side)

    state = factory().state_dict()
    runtime = ClientRuntime([(x, y)], factory, num_classes=10, local_epochs=epochs, batch_size=32)

    def lightning_job() -> None:
        runtime(ClientJob(0, 0, state, 1e-3, 0))

    def plain_job() -> None:
        m = factory()
        m.load_state_dict(state)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        batches = batch_loader(x, y, 32, 0)
        for _ in range(epochs):
            for xb, yb in batches:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                opt.step()
        {k: v.detach().clone() for k, v in m.state_dict().items()}

    lightning_job()  # warm-up
    plain_job()
    pairs = [(_best_of(lightning_job, 1), _best_of(plain_job, 1)) for _ in range(repeat)]  # interleaved
    lt = min(p[0] for p in pairs)
    pt = min(p[1] for p in pairs)
    print(
        f"client job  {model:<6} {samples:>5} samples x{epochs} epochs {1}x{side}x{side}: "
        f"lightning {lt * 1e3:7.1f} ms  plain {pt * 1e3:7.1f} ms  ratio {lt / pt:5.2f}  "
        f"({samples * epochs / lt:,.0f} samples/s)"
    )


def bench_executors(updates: int) -> None:
    base = [
        "experiment=demo",
        f"federation.max_updates={updates}",
        "federation.eval_every=1000",
        "logging.wandb.mode=disabled",
        "logging.progress=false",
    ]
    variants = {
        "thread x2": ["federation.workers=2"],
        "thread x1": ["federation.workers=1"],
        "serial": ["federation.executor=serial"],
        "thread x1, 2 torch threads": ["federation.workers=1", "federation.torch_threads=2"],
    }
    walls: dict[str, list[float]] = {k: [] for k in variants}
    finals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            for name, extra in variants.items():
                out = f"{tmp}/{name.replace(' ', '').replace(',', '')}-{rep}"
                r = run(load_config([*base, *extra, f"output_dir={out}"]))
                walls[name].append(r.summary["wall_time_s"])
                finals[name] = r.summary["final_test_accuracy"]
    ref = statistics.median(walls["serial"])
    for name, w in walls.items():
        m = statistics.median(w)
        print(
            f"executor    {name:<26} {updates} demo updates: {m:6.2f} s  speed-up vs serial {ref / m:4.2f}x  "
            f"final acc {finals[name]:.4f}"
        )
    one_thread = {v for k, v in finals.items() if "torch threads" not in k}
    assert len(one_thread) == 1, "executors must give identical results at the same torch thread count"


def bench_torch_threads(repeat: int) -> None:
    data = load_dataset(
        "synthetic", root="data", synthetic={"train_size": 2000, "test_size": 10, "image_size": 28}
    )

    def factory() -> torch.nn.Module:
        return build_model("cnn", in_channels=1, num_classes=10, image_size=28)

    runtime = ClientRuntime(
        [(data.train.x, data.train.y)], factory, num_classes=10, local_epochs=1, batch_size=32
    )
    state = factory().state_dict()
    res = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        res[threads] = _best_of(lambda: runtime(ClientJob(0, 0, state, 1e-3, 0)), repeat)
    torch.set_num_threads(1)
    print(
        f"torch threads  paper CNN, 2000 samples 28x28: 1 thread {res[1]:.2f} s, 2 threads {res[2]:.2f} s "
        f"(speed-up {res[1] / res[2]:.2f}x; two 1-thread workers use both cores with no sharing)"
    )
