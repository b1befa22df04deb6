"""Shared fixtures: tiny real configs composed from the project's own configs/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.configs import TINY, afl_unless_named
from hypothesis import Phase, settings

import afl
from afl.config import load_config

# Subprocesses the tests start (scripts, crash drivers, fresh interpreters) import the same afl as the tests
# themselves, also when that is not the installed one (mutmut's mutants/ copy, a git worktree).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(afl.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
)

# Hypothesis profiles (tests/property/test_properties.py), picked by HYPOTHESIS_PROFILE: "default" keeps
# the fast suite fast and the same on every run (derandomised); "ci" is CI's larger, random search;
# "mutation" is for `make mutate`.
settings.register_profile("default", max_examples=20, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True)
# `make mutate`: a failure is all it needs, so no shrinking (which can take longer than the test itself)
settings.register_profile(
    "mutation",
    max_examples=8,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` skip, saying why, where torch sees no CUDA GPU (CI, this project's machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check runs it on one)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """W&B stays local and quiet; nothing a developer has set in the environment leaks in."""
    for name in (
        "WANDB_MODE",
        "WANDB_DIR",
        "WANDB_API_KEY",
        "WANDB_RUN_ID",
        "WANDB_RESUME",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_RUN_GROUP",
        "WANDB_JOB_TYPE",
        "WANDB_NAME",
        "WANDB_TAGS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_home" / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_home" / "config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_home" / "data"))


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> None:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(tmp_path: Path):
    """``tiny(*overrides)`` → a validated config of a seconds-long run writing under ``tmp_path``."""
    counter = iter(range(1_000_000))

    def make(*overrides: str):
        out = f"output_dir={tmp_path / f'run{next(counter)}'}"
        return load_config(afl_unless_named([*TINY, out, *overrides]))

    return make
