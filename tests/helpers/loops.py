"""Federated loops built in the test's own process, on a serial executor, for tests that look inside."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from afl.config import load_config
from afl.experiments.build import Setup, build, make_loop
from afl.sim.executors import SerialExecutor
from afl.sim.loop import FederatedLoop


@contextmanager
def serial_loop(
    config: Sequence[str] | DictConfig, train: Callable[[Setup], Any] | None = None, **kwargs: Any
) -> Iterator[tuple[Setup, FederatedLoop]]:
    """The built run of ``config`` (a config, or overrides) and its loop, not yet run, on a serial executor.

    Args:
        train: ``setup -> job function`` to run the jobs with instead of ``setup.runtime`` (e.g. one
            that records them).
        kwargs: for :func:`~afl.experiments.build.make_loop` (``on_checkpoint``, ...).
    """
    cfg = config if isinstance(config, DictConfig) else load_config(list(config))
    setup = build(cfg)
    with SerialExecutor(setup.runtime if train is None else train(setup)) as executor:
        yield setup, make_loop(setup, executor, **kwargs)
