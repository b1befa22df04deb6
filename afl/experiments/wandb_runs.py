"""The W&B runs of comparisons and sweeps: each a group of its own (:func:`new_group`), and one run of
their own in it that holds the results (:func:`log_results`). Light: no torch (the commands' ``--help``
imports this)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from afl.tracking import WandbTracker


def new_group(experiment: str, root: Path) -> str:
    """A W&B group of its own for a comparison or a sweep in folder ``root``: ``EXPERIMENT-FOLDER-XXXXXX``
    (six random hex digits: two comparisons in folders of one name never share a group)."""
    return f"{experiment}-{root.name}-{secrets.token_hex(3)}"


def log_results(
    cfg: DictConfig,
    *,
    kind: str,
    out: Path,
    tags: Sequence[str],
    config: dict[str, Any],
    tables: dict[str, tuple[Sequence[str], Sequence[Sequence[Any]]]],
    images: dict[str, Path],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """A comparison's or sweep's own W&B run, in the group of its runs (``cfg.logging.wandb``): job type
    and name ``kind``, its tables (``wandb.Table``), figures and summary (the target, each arm's time and
    updates to it). Returns where it went, for comparison.json / sweep.json (``run_id`` None when
    ``logging.wandb.mode=disabled``)."""
    w = cfg.logging.wandb
    where = {"project": w.project, "entity": w.entity, "group": w.group, "mode": w.mode, "run_id": None}
    if w.mode == "disabled":
        return where
    with WandbTracker(
        mode=w.mode,
        project=w.project,
        entity=w.entity,
        group=str(w.group),
        job_type=kind,
        name=kind,
        config=config,
        dir=out,
        tags=list(tags),
    ) as run:
        for key, (columns, rows) in tables.items():
            run.log_table(key, columns, rows)
        for key, path in images.items():
            run.log_image(key, path)
        run.log({})
        run.set_summary(summary)
        where["run_id"] = run.run_id
    return where


def table_rows(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Dicts as a table's columns and rows (every key of any record; lists as text, missing as None)."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    text = lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return columns, [[text(r.get(c)) for c in columns] for r in records]
