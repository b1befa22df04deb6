"""Real processes: the installed commands, and fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cli(
    name: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed command ``name`` (``afl-train``, ...) in ``cwd``."""
    exe = BIN / name
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the entry points with `pip install -e . --no-deps`")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def run_fresh(code: str, timeout: float = 120, cwd: str | Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter (so ``sys.modules`` shows what it imported); its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
