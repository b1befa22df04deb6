"""``afl-train`` in this process, killed by SIGKILL at a chosen point (the resume tests run it).

Usage: ``python crash_driver.py POINT N key=value ...``

POINT is where the process kills itself, at the N-th occurrence:

* ``eval``: inside an evaluation of the global model (after computing it, before the row is written);
* ``write``: half-way through writing a checkpoint's temporary file;
* ``rename``: a checkpoint fully written to its temporary file, not yet renamed over the old one;
* ``none``: never (the run completes).

Nothing in the run is replaced: the wrappers call the real functions and only add the kill.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, n: int) -> None:
    """Install the kill at the ``n``-th occurrence of ``point``."""
    import builtins

    import afl.checkpoint
    import afl.experiments.build

    seen = {"count": 0}

    def nth() -> bool:
        seen["count"] += 1
        return seen["count"] == n

    if point == "eval":
        evaluate = afl.experiments.build.evaluate

        def evaluate_then_die(*args: Any, **kwargs: Any) -> Any:
            result = evaluate(*args, **kwargs)
            if nth():
                _kill()
            return result

        afl.experiments.build.evaluate = evaluate_then_die  # type: ignore[assignment]
    elif point == "write":

        class HalfWritten:
            def __init__(self, f: Any) -> None:
                self.f = f

            def __enter__(self) -> HalfWritten:
                return self

            def __exit__(self, *exc: object) -> None:
                self.f.close()

            def write(self, data: Any) -> int:
                data = bytes(data)
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                os.fsync(self.f.fileno())
                _kill()
                return len(data)

        def open_checkpoint(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = builtins.open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by the caller
            return HalfWritten(f) if str(path).endswith(".tmp") and nth() else f

        afl.checkpoint.open = open_checkpoint  # type: ignore[attr-defined]  # module global shadows builtin
    elif point == "rename":
        replace = os.replace

        def replace_or_die(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if str(src).endswith(".tmp") and nth():
                _kill()
            replace(src, dst, *args, **kwargs)

        os.replace = replace_or_die  # type: ignore[assignment]
    elif point != "none":
        raise SystemExit(f"unknown point {point!r}")


def main(argv: list[str]) -> int:
    point, n, overrides = argv[0], int(argv[1]), argv[2:]
    arm(point, n)
    from afl.cli.train import main as train

    return train(overrides)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
