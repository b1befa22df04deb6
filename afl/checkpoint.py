"""Checkpoints of a federated run: written atomically, read safely, refused when they do not fit.

A checkpoint is one file, ``checkpoint.pt`` in the run folder, holding the complete federated state
(:meth:`afl.sim.loop.FederatedLoop.state_dict`: the global model, version, clock, counters, aggregator
buffers, the in-flight jobs with their dispatched models, the evaluation rows and the arrival log), the
W&B run id and a fingerprint of the config that produced it. Everything else a run needs (data,
partition, client speeds, who is sampled next, faults) is a pure function of the config and the counters,
so it is rebuilt rather than stored.

Writing goes to ``checkpoint.pt.tmp``, is flushed and fsync'ed, then renamed over the old checkpoint
(``os.replace`` is atomic), so a crash at any moment leaves either the previous checkpoint or the new
one, never a half-written file. Reading uses ``torch.load(..., weights_only=True)``: tensors and plain
Python containers only, no arbitrary objects.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from afl.config import RESUMABLE_KEYS
from afl.errors import ConfigError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1  # bump when the layout of the state changes


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The config's settings that decide a run's results: everything but :data:`RESUMABLE_KEYS`."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    for key in RESUMABLE_KEYS:
        *parents, last = key.split(".")
        node: Any = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    plain.pop("compare", None)  # what made the settings, already in them
    plain.pop("arm", None)  # a name: its rule and step sizes are in the settings
    return {str(k): v for k, v in plain.items()}


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted key of the first difference between two plain configs, or None if they are equal.

    Example:
        >>> first_difference({"client": {"lr": 0.1, "epochs": 1}}, {"client": {"lr": 0.2, "epochs": 1}})
        'client.lr'
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else prefix.rstrip(".") or "config"


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved fingerprint with the keys it lacks (keys added by a later release: ``trainer``,
    ``federation.sampling``, ``availability``, ...) at their defaults, which keep the earlier behaviour."""
    from afl.config import CONFIG_DIR, Config

    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(CONFIG_DIR / "defaults.yaml"))
    assert isinstance(merged, DictConfig)
    defaults = fingerprint(merged)

    def fill(base: Any, given: Any) -> Any:
        if isinstance(base, dict) and isinstance(given, dict):
            return {**base, **{k: fill(base.get(k), v) for k, v in given.items()}}
        return given

    return fill(defaults, saved)


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: temporary file, flush, fsync, rename, fsync the folder."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def load(path: Path, cfg: DictConfig) -> dict[str, Any]:
    """Read the checkpoint at ``path`` and check that it was written by a run with ``cfg``'s settings.

    Raises:
        ConfigError: (key ``resume``) the file is missing, unreadable, corrupt or truncated, of another
            format, or written by a run with other settings (naming the first key that differs).
    """
    if not path.is_file():
        raise ConfigError(
            "resume",
            f"{path.parent} has no {CHECKPOINT} (the run stopped before its first checkpoint, or it was "
            "started with checkpoint.every=0): start it again as a new run",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds on a damaged file; every one means the same here
        raise ConfigError(
            "resume", f"{path} is not a readable checkpoint (corrupt or truncated): {type(err).__name__}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError("resume", f"{path} is not an afl checkpoint of format {FORMAT} (found {found!r})")
    key = first_difference(_with_defaults(payload["config"]), fingerprint(cfg))
    if key is not None:
        raise ConfigError(
            "resume",
            f"{path} was written by a run with another config ({key} differs): a run resumes only with "
            "the settings it started with",
        )
    return payload
