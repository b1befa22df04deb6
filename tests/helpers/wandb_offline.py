"""Reads an offline W&B run back for the tests, with wandb's own reader: ``wandb leet inspect --json``.

``wandb leet inspect --json RUN.wandb`` (wandb 0.31) prints one JSON object per record of the run's
transaction log, ``{"num": N, "type": T, T: {...}}``, with ``T`` one of ``header``, ``run``,
``telemetry``, ``metric``, ``config``, ``summary``, ``history``, ``exit``, ... Config, summary and
history values are already decoded from JSON, except that NaN and infinities are printed as the
strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` and nested keys are joined with ``"."``. A
log that ends early (a run still running, or killed) prints the records before that point, exits 0
and says so on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OfflineRun", "find_run_log", "inspect_records", "read_offline_run"]

TIMEOUT_S = 120.0
_NON_FINITE = {"NaN", "Infinity", "-Infinity"}


@dataclass
class OfflineRun:
    """What ``wandb leet inspect --json`` found in a run's log.

    Attributes:
        run_id: the W&B run id.
        config: the run's config (W&B's internal ``_wandb`` key removed).
        history: one dict per logged row, in order; besides the logged keys each row has W&B's
            ``_step`` (0, 1, ...), ``_runtime`` and ``_timestamp``.
        summary: the final summary, every update and removal applied in order (``_wandb*`` keys
            removed). Aggregated keys are dicts, e.g. ``{"max": ..., "last": ...}``.

    In ``history`` and ``summary`` the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` are
    turned back into floats (the inspector prints non-finite numbers that way, so a logged string
    with one of those exact values reads back as a float).
        group, job_type, name, project: the run's metadata, ``None`` if unset.
        tags: the run's tags.
        exit_code: the exit code recorded by ``finish``, or ``None`` without an exit record.
        stderr: what ``wandb leet inspect`` said on stderr (empty for a complete, intact log).
    """

    run_id: str
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    group: str | None = None
    job_type: str | None = None
    name: str | None = None
    project: str | None = None
    tags: list[str] = field(default_factory=list)
    exit_code: int | None = None
    stderr: str = ""

    @property
    def finished(self) -> bool:
        """Whether the log holds the run's exit record."""
        return self.exit_code is not None


def find_run_log(path: str | os.PathLike) -> Path:
    """The ``run-<id>.wandb`` file of a run: given as the file, its run folder, the ``wandb/``
    folder or the output folder holding ``wandb/`` (the last two must hold exactly one run)."""
    path = Path(path)
    if path.is_file():
        return path
    for pattern in ("run-*.wandb", "offline-run-*/run-*.wandb", "wandb/offline-run-*/run-*.wandb"):
        found = sorted(path.glob(pattern))
        if len(found) > 1:
            raise FileNotFoundError(f"{path} holds {len(found)} runs: {[str(p) for p in found]}")
        if found:
            return found[0]
    raise FileNotFoundError(f"no offline W&B run at {path}")


def inspect_records(wandb_file: str | os.PathLike, timeout: float = TIMEOUT_S) -> tuple[list[dict], str]:
    """Runs ``wandb leet inspect --json`` on a ``.wandb`` file; returns its records and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", os.fspath(wandb_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WANDB_ERROR_REPORTING": "false"},  # no error reports over the network
        check=False,
    )
    if result.returncode != 0:
        command = f"wandb leet inspect --json {wandb_file}"
        raise RuntimeError(f"`{command}` exited with {result.returncode}: {result.stderr.strip()}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()], result.stderr.strip()


def read_offline_run(path: str | os.PathLike, timeout: float = TIMEOUT_S) -> OfflineRun:
    """Reads an offline run (any ``path`` :func:`find_run_log` accepts) with ``wandb leet inspect``."""
    wandb_file = find_run_log(path)
    records, stderr = inspect_records(wandb_file, timeout)
    run = OfflineRun(run_id=wandb_file.stem.removeprefix("run-"), stderr=stderr)
    for record in records:
        kind = record["type"]
        body = record.get(kind) or {}
        if kind == "run":
            run.run_id = body.get("run_id", run.run_id)
            run.group = body.get("run_group", run.group)
            run.job_type = body.get("job_type", run.job_type)
            run.name = body.get("display_name", run.name)
            run.project = body.get("project", run.project)
            run.tags = list(body.get("tags", run.tags))
            _apply(run.config, body.get("config") or {})
            _apply(run.summary, body.get("summary") or {})
        elif kind == "config":
            _apply(run.config, body)
        elif kind == "summary":
            _apply(run.summary, body)
        elif kind == "history":
            run.history.append(_numbers(body.get("item") or {}))
        elif kind == "exit":
            run.exit_code = int(body.get("exit_code", 0))
    run.config.pop("_wandb", None)
    run.summary = _numbers(
        {k: v for k, v in run.summary.items() if k != "_wandb" and not k.startswith("_wandb.")}
    )
    return run


def _apply(target: dict, items: dict) -> None:
    """Applies a config or summary record: ``{"update": {key: value}, "remove": [{"key": ...}]}``."""
    target.update(items.get("update") or {})
    for item in items.get("remove") or []:
        target.pop(item.get("key") or ".".join(item.get("nested_key", [])), None)


def _numbers(value: Any) -> Any:
    """Turns the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` the inspector prints back into floats."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, str) and value in _NON_FINITE:
        return float(value)
    return value
