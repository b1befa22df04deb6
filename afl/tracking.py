"""Experiment tracking with Weights & Biases, and an offline reader for what it writes.

Two halves:

* :class:`WandbTracker` makes one W&B run per training run. It works without an account or a
  network: ``mode="offline"`` writes the run to ``<dir>/wandb/offline-run-<time>-<id>/`` and
  ``mode="disabled"`` writes nothing. ``mode="online"`` is passed to W&B untouched.
* :func:`read_offline_run` reads such an offline run folder back (config, every logged row, final
  summary) with no network and no W&B server, by decoding the run's ``run-<id>.wandb`` file
  directly. Tests and the comparison plots use it.

The ``run-<id>.wandb`` file format, as written by wandb-core (checked against wandb 0.31.0):

* A 7-byte file header: ``struct.pack("<4sHB", b":W&B", 0xBEE1, 0)``, i.e. the bytes
  ``3a 57 26 42 e1 be 00`` (ident, magic, version 0).
* Then LevelDB's log framing, with the file header counted as the start of the first block:
  32 KiB blocks; each chunk has a 7-byte header ``<IHB`` (checksum, payload length, chunk type
  FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) and never crosses a block boundary; a block tail shorter
  than 7 bytes is zero padding. Unlike LevelDB, the checksum is the plain, unmasked zlib CRC-32
  (IEEE) of the type byte followed by the payload, not a masked CRC-32C.
* Each reassembled record is one serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # wandb takes about a second to import: only import it when it is used.
    from wandb.proto.wandb_internal_pb2 import Record  # type: ignore[attr-defined]

__all__ = ["ALLOWED_MODES", "OfflineRun", "WandbTracker", "read_offline_run"]

ALLOWED_MODES: tuple[str, ...] = ("offline", "online", "disabled")
"""The values :class:`WandbTracker` accepts for ``mode``."""

# Settings that keep W&B quiet and fast. Keys missing from the installed ``wandb.Settings`` are dropped
# (see ``_quiet_settings``) so that older or newer wandb releases still start.
_QUIET_SETTINGS: dict[str, Any] = {
    "console": "off",  # no stdout/stderr capture (no output.log, no wrapped streams)
    "save_code": False,  # no copy of the main script
    "disable_code": True,
    "disable_git": True,  # no `git` subprocesses, no diff.patch
    "x_disable_stats": True,  # no system metrics sampling (CPU/GPU/memory)
    "x_disable_meta": True,  # no wandb-metadata.json (host, args, python, ...)
    "x_disable_machine_info": True,
    "x_save_requirements": False,  # no `pip freeze` into requirements.txt
}

# Which metrics are x-axes, which follow `client_updates`, and which get aggregated summaries.
_X_AXES = ("client_updates", "sim_time")
_STEP_METRIC = "client_updates"
_STEPPED_GLOBS = ("test/*", "train/*", "staleness/*")
_SUMMARIES = {"test/accuracy": "max,last", "test/loss": "min,last"}
_BEST_KEY = "test/accuracy"
_BEST_CONTEXT = ("client_updates", "sim_time")  # recorded next to the best accuracy
_FLUSH_TIMEOUT_S = 30.0  # how long finish() waits for wandb-core to write the run's exit record

# Trackers created and not yet finished (main thread only, so no lock).
_OPEN_TRACKERS: weakref.WeakSet[WandbTracker] = weakref.WeakSet()


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what} must be called from the main thread (WandbTracker is main-thread only)")


def _plain(value: Any) -> Any:
    """Turns numpy / torch scalars into Python numbers; leaves everything else alone."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):  # not a one-element array / tensor
            return value
    return value


class WandbTracker:
    """One W&B run per training run.

    Creating the tracker starts the run (``wandb.init``); :meth:`log` adds one evaluation row;
    :meth:`finish` closes it. Several trackers can be made one after another in one process (the
    comparison script trains AFL, then the synchronous baseline). A tracker still open when the
    next one is created (for example after an exception that skipped :meth:`finish`) is finished
    first, with exit code 0; ``wandb.init`` is called with ``reinit="finish_previous"``, so any other
    W&B run open in the process (one not made by this class) is finished too rather than reused.

    Metrics: ``client_updates`` and ``sim_time`` are x-axes; ``test/*``, ``train/*`` and
    ``staleness/*`` are plotted against ``client_updates``. The summary keeps ``max`` and ``last`` of
    ``test/accuracy``, ``min`` and ``last`` of ``test/loss`` (W&B writes these as
    ``{"max": ..., "last": ...}``), and the tracker adds ``best/test_accuracy`` with the
    ``best/client_updates`` and ``best/sim_time`` of the row where it was reached.

    The tracker must be used from the main thread only (creating it, :meth:`log`,
    :meth:`set_summary`, :meth:`finish`); calls from other threads raise ``RuntimeError``. W&B
    installs process-wide state (the global run, atexit hooks) on ``wandb.init``.

    It is also a context manager: leaving the ``with`` block finishes the run, with exit code 1 if
    an exception is propagating.

    Args:
        mode: ``"offline"`` (write to disk only), ``"online"`` (passed to W&B untouched; needs an
            account) or ``"disabled"`` (W&B does nothing and writes nothing).
        project: W&B project.
        group: run group; use the experiment name, so the AFL and synchronous runs of one
            experiment sit side by side.
        job_type: the algorithm label, e.g. ``"afl"`` or ``"sync"``.
        name: display name of the run.
        config: the full resolved config, stored as the run's config.
        dir: the training run's output folder. W&B writes ``<dir>/wandb/...``; the folder is created
            if missing (in disabled mode too, but left empty).
        tags: run tags.
        entity: W&B entity (user or team); ``None`` uses W&B's default.

    Raises:
        ValueError: ``mode`` is not one of :data:`ALLOWED_MODES`.
        RuntimeError: called from a thread other than the main thread.
    """

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        group: str,
        job_type: str,
        name: str,
        config: dict,
        dir: str | os.PathLike,
        tags: Sequence[str] = (),
        entity: str | None = None,
    ) -> None:
        if mode not in ALLOWED_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, ALLOWED_MODES))}; got {mode!r}")
        _require_main_thread("WandbTracker()")
        import wandb

        # Finish our own runs still open (through finish(), which waits for their logs) before
        # wandb.init(reinit="finish_previous") would finish them without waiting.
        for tracker in list(_OPEN_TRACKERS):
            tracker.finish()

        out_dir = Path(dir).absolute()
        out_dir.mkdir(parents=True, exist_ok=True)  # wandb.init creates it anyway, even when disabled
        self._mode = mode
        self._finished = False
        self._best: float | None = None
        self._run = wandb.init(
            mode=mode,  # type: ignore[arg-type]
            project=project,
            group=group,
            job_type=job_type,
            name=name,
            config=dict(config),
            dir=os.fspath(out_dir),
            tags=list(tags),
            entity=entity,
            reinit="finish_previous",
            settings=_quiet_settings(wandb, mode),
        )
        self._run_dir = None if mode == "disabled" else Path(self._run.settings.sync_dir)
        _OPEN_TRACKERS.add(self)
        for axis in _X_AXES:
            self._run.define_metric(axis)
        for glob in _STEPPED_GLOBS:
            self._run.define_metric(glob, step_metric=_STEP_METRIC)
        for key, summary in _SUMMARIES.items():
            self._run.define_metric(key, step_metric=_STEP_METRIC, summary=summary)

    @property
    def run_dir(self) -> Path | None:
        """The run's folder (``<dir>/wandb/offline-run-*/`` offline), or ``None`` when disabled."""
        return self._run_dir

    @property
    def run_id(self) -> str:
        """The W&B run id (also the ``<id>`` of ``run-<id>.wandb``)."""
        return str(self._run.id)

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called."""
        return self._finished

    def log(self, row: Mapping[str, float | int]) -> None:
        """Logs one evaluation row as one W&B history row.

        No ``step=`` is passed: W&B numbers rows itself (``_step``), and the x-axis is the
        ``client_updates`` value in the row, so rows never clash on a non-monotonic step. Numpy
        and torch scalars are turned into Python numbers.

        Args:
            row: metric name to value, e.g. ``{"client_updates": 40, "sim_time": 123.4,
                "test/accuracy": 0.81, ...}``.

        Raises:
            TypeError: a key is not a string.
            RuntimeError: the run is finished, or not called from the main thread.
        """
        self._check_open("log")
        values: dict[str, Any] = {}
        for key, value in row.items():
            if not isinstance(key, str):
                raise TypeError(f"metric names must be strings, got {key!r}")
            values[key] = _plain(value)
        self._run.log(values)
        accuracy = values.get(_BEST_KEY)
        if (
            isinstance(accuracy, (int, float))
            and not math.isnan(accuracy)
            and (self._best is None or accuracy > self._best)
        ):
            self._best = float(accuracy)
            best = {"best/test_accuracy": self._best}
            best.update({f"best/{k}": values[k] for k in _BEST_CONTEXT if k in values})
            self._run.summary.update(best)

    def set_summary(self, values: Mapping[str, Any]) -> None:
        """Sets (overwrites) run summary values, e.g. final results or wall-clock totals.

        Args:
            values: summary key to value.

        Raises:
            RuntimeError: the run is finished, or not called from the main thread.
        """
        self._check_open("set_summary")
        self._run.summary.update({k: _plain(v) for k, v in values.items()})

    def finish(self, exit_code: int = 0) -> None:
        """Finishes the run and waits until W&B has written it; later calls do nothing.

        wandb-core writes the run's log file asynchronously: ``wandb.Run.finish()`` (wandb 0.31)
        can return while ``run-<id>.wandb`` still holds only its 7-byte header. So, when there is
        a run folder, this also waits (polling, at most ``_FLUSH_TIMEOUT_S`` seconds, normally a
        few milliseconds) until the exit record is on disk; afterwards :func:`read_offline_run`
        sees the whole run. On timeout it warns and returns.

        Args:
            exit_code: 0 for success; anything else marks the run as failed.

        Raises:
            RuntimeError: not called from the main thread.
        """
        if self._finished:
            return
        _require_main_thread("WandbTracker.finish()")
        self._finished = True
        _OPEN_TRACKERS.discard(self)
        self._run.finish(exit_code=exit_code)
        if self._run_dir is not None:
            _wait_for_exit_record(self._run_dir / f"run-{self.run_id}.wandb", _FLUSH_TIMEOUT_S)

    def __enter__(self) -> WandbTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    def _check_open(self, what: str) -> None:
        _require_main_thread(f"WandbTracker.{what}()")
        if self._finished:
            raise RuntimeError(f"WandbTracker.{what}() called after finish()")


def _wait_for_exit_record(wandb_file: Path, timeout: float) -> None:
    """Polls ``wandb_file`` until its last records include the run's exit record."""
    from google.protobuf.message import DecodeError
    from wandb.proto.wandb_internal_pb2 import Record  # type: ignore[attr-defined]

    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            payloads, _ = _read_payloads(wandb_file.read_bytes(), wandb_file)
        except (OSError, ValueError):  # not created, or header not written yet
            payloads = []
        for payload in reversed(payloads[-8:]):  # the exit record is the last, or nearly
            record = Record()
            try:
                record.ParseFromString(payload)
            except DecodeError:
                continue
            if record.HasField("exit"):
                return
        if time.monotonic() > deadline:
            warnings.warn(
                f"W&B did not write the exit record of {wandb_file} within {timeout:.0f} s; "
                "read_offline_run may see an unfinished run",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _quiet_settings(wandb: Any, mode: str) -> Any:
    """Builds the ``wandb.Settings`` for :class:`WandbTracker`, keeping only fields wandb knows."""
    wanted = dict(_QUIET_SETTINGS)
    # Offline/disabled: say nothing at all. Online: keep W&B's warnings and the run's URL.
    wanted["silent" if mode != "online" else "quiet"] = True
    known = getattr(wandb.Settings, "model_fields", None)
    if known is not None:
        wanted = {k: v for k, v in wanted.items() if k in known}
    return wandb.Settings(**wanted)


# --------------------------------------------------------------------------------------------------
# Reading an offline run back
# --------------------------------------------------------------------------------------------------

_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_FILE_IDENT = b":W&B"
_FILE_MAGIC = 0xBEE1
_FILE_VERSIONS = (0,)
_BLOCK_SIZE = 32 * 1024
_CHUNK_HEADER = struct.Struct("<IHB")  # checksum, payload length, chunk type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What :func:`read_offline_run` found in a run's transaction log.

    Attributes:
        run_id: the W&B run id.
        config: the run's config as plain values (W&B's internal ``_wandb`` key removed, and a
            ``{"value": ...}`` wrapping removed if every top-level entry has it).
        history: one dict per logged row, in order, with plain Python values. Besides the logged
            keys each row has W&B's ``_step`` (0, 1, ...), ``_runtime`` and ``_timestamp``. Nested
            keys are joined with ``"."``.
        summary: the final summary: every summary update and removal applied in order, W&B's
            internal ``_wandb`` key removed (``_step``, ``_runtime``, ``_timestamp`` kept). Keys
            whose summary W&B aggregates are dicts, e.g. ``summary["test/accuracy"] == {"max": ...,
            "last": ...}``.
        group: run group, or ``None`` if unset.
        job_type: job type, or ``None`` if unset.
        name: display name, or ``None`` if unset.
        project: project, or ``None`` if unset.
        entity: entity, or ``None`` if unset (offline runs usually have none).
        tags: run tags.
        exit_code: the exit code recorded by ``finish``, or ``None`` if the log has no exit record
            (the run was not finished, or is still running).
        truncated: ``True`` if reading stopped before a clean end of the file: a torn or partly
            written chunk, a checksum mismatch, or a record whose chunks are missing. Everything
            before that point is returned; nothing after it is.
    """

    run_id: str
    config: dict
    history: list[dict]
    summary: dict
    group: str | None
    job_type: str | None
    name: str | None
    project: str | None
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    exit_code: int | None = None
    truncated: bool = False

    @property
    def finished(self) -> bool:
        """Whether the log contains the run's exit record."""
        return self.exit_code is not None


def read_offline_run(run_dir: str | os.PathLike) -> OfflineRun:
    """Reads an offline W&B run back from disk, without network or W&B server.

    ``run_dir`` may be any of:

    1. a run folder: a directory holding exactly one ``run-*.wandb`` file (normally
       ``<out>/wandb/offline-run-<time>-<id>/``; :attr:`WandbTracker.run_dir`);
    2. the ``run-<id>.wandb`` file itself;
    3. a ``wandb/`` folder: a directory with exactly one ``offline-run-*`` sub-folder;
    4. a training run's output folder: a directory whose ``wandb/`` sub-folder has exactly one
       ``offline-run-*`` sub-folder (the ``dir`` given to :class:`WandbTracker`).

    They are tried in that order. The ``latest-run`` link W&B leaves in ``wandb/`` is ignored.

    The log may belong to a run that is still running or was killed: a partly written tail is
    dropped (see :attr:`OfflineRun.truncated`) and :attr:`OfflineRun.exit_code` is ``None``.
    Chunk checksums are verified (zlib CRC-32, cheap); reading stops at the first bad chunk.

    Args:
        run_dir: where the run is; see above.

    Returns:
        The run's metadata, config, history rows and final summary.

    Raises:
        FileNotFoundError: ``run_dir`` is none of the above, or holds several runs (the message
            lists them; pass one run folder instead).
        ValueError: the file is not a W&B transaction log (wrong header) or has an unknown version.
    """
    wandb_file = _find_wandb_file(Path(run_dir))
    records, truncated = _read_records(wandb_file)
    run = _assemble(records, default_run_id=wandb_file.stem.removeprefix("run-"))
    run.truncated = truncated
    return run


def _find_wandb_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix == ".wandb":
            return path
        raise FileNotFoundError(f"{path} is a file but not a W&B run log (run-<id>.wandb)")
    if not path.is_dir():
        raise FileNotFoundError(f"no such W&B run folder: {path}")

    logs = sorted(path.glob("run-*.wandb"))
    if len(logs) == 1:
        return logs[0]
    if len(logs) > 1:
        raise FileNotFoundError(f"{path} holds several run logs, expected one: {[p.name for p in logs]}")

    for parent in (path, path / "wandb"):
        runs = sorted(p for p in parent.glob("offline-run-*") if p.is_dir() and not p.is_symlink())
        if len(runs) > 1:
            raise FileNotFoundError(
                f"{parent} holds {len(runs)} offline runs, pass one of them: {[p.name for p in runs]}"
            )
        if len(runs) == 1:
            logs = sorted(runs[0].glob("run-*.wandb"))
            if len(logs) != 1:
                raise FileNotFoundError(
                    f"{runs[0]} should hold exactly one run-*.wandb file, found {len(logs)}"
                )
            return logs[0]
    raise FileNotFoundError(
        f"no W&B offline run at {path}: expected a run folder with a run-*.wandb file, a wandb/ folder "
        "with one offline-run-* folder, or an output folder whose wandb/ has one offline-run-* folder"
    )


def _read_records(wandb_file: Path) -> tuple[list[Record], bool]:
    """Decodes every complete record of a ``run-<id>.wandb`` file.

    Returns:
        The records in order, and whether reading stopped early (see ``OfflineRun.truncated``).
    """
    from google.protobuf.message import DecodeError
    from wandb.proto.wandb_internal_pb2 import Record  # type: ignore[attr-defined]

    payloads, truncated = _read_payloads(wandb_file.read_bytes(), wandb_file)
    records: list[Record] = []
    for payload in payloads:
        record = Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            return records, True
        records.append(record)
    return records, truncated


def _read_payloads(data: bytes, source: Path) -> tuple[list[bytes], bool]:
    """Splits the LevelDB-framed body of a W&B log into record payloads (see the module docstring)."""
    if len(data) < _FILE_HEADER.size:
        raise ValueError(f"{source} is not a W&B run log: {len(data)} bytes, shorter than the file header")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != _FILE_IDENT or magic != _FILE_MAGIC:
        raise ValueError(f"{source} is not a W&B run log: header {data[: _FILE_HEADER.size].hex(' ')}")
    if version not in _FILE_VERSIONS:
        raise ValueError(
            f"{source}: unsupported W&B log version {version} (this reader knows {_FILE_VERSIONS})"
        )

    payloads: list[bytes] = []
    pending: list[bytes] | None = None  # chunks of a record started by FIRST, awaiting LAST
    pos = _FILE_HEADER.size
    end = len(data)
    while pos < end:
        room = _BLOCK_SIZE - pos % _BLOCK_SIZE
        if room < _CHUNK_HEADER.size:  # block trailer: zero padding
            pos += room
            continue
        if pos + _CHUNK_HEADER.size > end:
            return payloads, True  # torn chunk header
        checksum, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if checksum == 0 and length == 0 and kind == 0:
            # Zeros instead of a chunk: unwritten (preallocated or torn) space. Clean only if it is
            # zeros to the end of the file and no record was left half-assembled.
            clean = pending is None and not data[pos:].strip(b"\0")
            return payloads, not clean
        start, stop = pos + _CHUNK_HEADER.size, pos + _CHUNK_HEADER.size + length
        if length > room - _CHUNK_HEADER.size or stop > end:
            return payloads, True  # chunk runs past its block or past the end of the file
        payload = data[start:stop]
        if zlib.crc32(payload, zlib.crc32(bytes((kind,)))) != checksum:
            return payloads, True
        pos = stop
        if kind == _FULL and pending is None:
            payloads.append(payload)
        elif kind == _FIRST and pending is None:
            pending = [payload]
        elif kind == _MIDDLE and pending is not None:
            pending.append(payload)
        elif kind == _LAST and pending is not None:
            pending.append(payload)
            payloads.append(b"".join(pending))
            pending = None
        else:  # unknown type, or chunks out of order
            return payloads, True
    return payloads, pending is not None


def _assemble(records: Iterable[Record], default_run_id: str) -> OfflineRun:
    run_id = default_run_id
    meta: dict[str, str | None] = {
        "group": None,
        "job_type": None,
        "name": None,
        "project": None,
        "entity": None,
    }
    tags: list[str] = []
    config: dict = {}
    summary: dict = {}
    history: list[dict] = []
    exit_code: int | None = None

    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run_id = r.run_id or run_id
            for key, value in (
                ("group", r.run_group),
                ("job_type", r.job_type),
                ("name", r.display_name),
                ("project", r.project),
                ("entity", r.entity),
            ):
                if value:
                    meta[key] = value
            if r.tags:
                tags = list(r.tags)
            _apply_items(config, r.config.update, r.config.remove)
            _apply_items(summary, r.summary.update, r.summary.remove)
        elif kind == "config":
            _apply_items(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply_items(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                row[item.key or ".".join(item.nested_key)] = _history_value(item)
            history.append(row)
        elif kind == "exit":
            exit_code = int(record.exit.exit_code)

    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    return OfflineRun(
        run_id=run_id,
        config=_unwrap_config(config),
        history=history,
        summary=summary,
        group=meta["group"],
        job_type=meta["job_type"],
        name=meta["name"],
        project=meta["project"],
        entity=meta["entity"],
        tags=tags,
        exit_code=exit_code,
    )


def _item_path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _apply_items(target: dict, updates: Iterable[Any], removes: Iterable[Any]) -> None:
    """Applies config/summary item updates (JSON values at a key path) and removals to ``target``."""
    for item in updates:
        path = _item_path(item)
        if not path:
            continue
        node = target
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = json.loads(item.value_json) if item.value_json else None
    for item in removes:
        path = _item_path(item)
        node = target
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node = child
        else:
            if path:
                node.pop(path[-1], None)


def _history_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)  # W&B writes NaN / Infinity as JSON constants
    which = item.WhichOneof("value")
    if which is None or which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def _unwrap_config(config: dict) -> dict:
    """Removes W&B's ``{"value": v, "desc": ...}`` wrapping, if every top-level entry has it.

    The transaction log normally stores plain values; the wrapped form is what ``config.yaml`` and
    the W&B API use. All-or-nothing, so a plain config that happens to hold one ``{"value": ...}``
    dict is left alone.
    """
    wrapped = bool(config) and all(
        isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"} for v in config.values()
    )
    return {k: v["value"] for k, v in config.items()} if wrapped else config
