"""One federated run, end to end: :func:`run` checks the config, builds the run, trains it on the loop and
writes its outputs (docs/outputs.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from afl import checkpoint
from afl.config import check, load_config
from afl.errors import ConfigError
from afl.experiments.build import Setup, build, make_executor, make_loop, partition_table
from afl.experiments.outputs import RunWriter, claim_output_dir, run_summary, tracker, wandb_group, wandb_row
from afl.messages import State
from afl.tracking import WandbTracker


@dataclass
class RunResult:
    """What :func:`run` returns: the summary, the evaluation rows (metrics.csv), one row per client
    update (updates.csv), where it wrote, and the final global model."""

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    output_dir: Path
    final_state: State
    config: DictConfig


def run(
    cfg: DictConfig | None = None, overrides: Sequence[str] = (), components: dict[str, Any] | None = None
) -> RunResult:
    """Train one federated run and write its outputs (docs/outputs.md).

    Args:
        cfg: a config from :func:`afl.config.load_config`; if omitted, one is composed from ``overrides``.
        overrides: ``key=value`` strings (including ``experiment=NAME``), used when ``cfg`` is None.
        components: ``cfg``'s components, if the caller built them already
            (:func:`afl.experiments.components.build_components`); else the run builds them.

    Returns:
        The :class:`RunResult`.

    Raises:
        ConfigError: bad input; nothing has been written.
    """
    if cfg is None:
        cfg = load_config(overrides)
    check(cfg)  # again: a caller may have changed it since load_config (cheap: it builds nothing)
    resumed = _resume_point(cfg)  # the checkpoint to continue from, checked before anything is written
    threads = torch.get_num_threads()
    flags = _torch_flags()
    torch.set_num_threads(cfg.federation.torch_threads)  # process-wide: restored when the run ends
    try:
        setup = build(
            cfg, components
        )  # the components, once; everything that can fail on bad input fails here
        setup.placement.setup()  # trainer.deterministic (process-wide too)
        out = Path(cfg.resume) if resumed is not None else claim_output_dir(cfg)
        result = _train(cfg, setup, out, resumed)
    finally:
        torch.set_num_threads(threads)
        _restore_torch_flags(flags)
    return result


def _train(cfg: DictConfig, setup: Setup, out: Path, resumed: dict[str, Any] | None) -> RunResult:
    """Train the built run on the loop (from the checkpoint ``resumed``, if given), writing its outputs to
    ``out`` and logging it to W&B; its result."""
    wandb_id = None if resumed is None else resumed["wandb_run_id"]
    history_so_far = [] if resumed is None else resumed["loop"]["history"]
    # the W&B run finishes as failed, and metrics.csv is closed, if anything below raises
    with (
        RunWriter(out, cfg, setup, history_so_far) as writer,
        tracker(cfg, out, wandb_id) as wandb_run,
    ):
        _log_again(wandb_run, setup, history_so_far)

        def on_eval(row: dict[str, Any]) -> None:
            writer.write_row(row)
            wandb_run.log(wandb_row(row))

        def on_checkpoint(state: dict[str, Any]) -> None:
            payload = {
                "format": checkpoint.FORMAT,
                "config": checkpoint.fingerprint(cfg),
                "wandb_run_id": wandb_run.run_id,
                "loop": state,
            }
            checkpoint.save(out / checkpoint.CHECKPOINT, payload)

        with make_executor(cfg, setup.runtime) as executor:
            loop = make_loop(setup, executor, on_eval, on_checkpoint)
            if resumed is not None:
                loop.load_state_dict(resumed["loop"])
            history = loop.run()
        summary = run_summary(setup, loop.state, history, loop.history[-1]["wall_time"], out)
        summary.update(wandb_run_id=wandb_run.run_id, wandb_group=wandb_group(cfg))
        writer.finish(summary, loop.state)
        wandb_run.set_summary({k: v for k, v in summary.items() if k != "output_dir"})
    return RunResult(
        summary=summary,
        history=history,
        updates=loop.state.arrivals,
        output_dir=out,
        final_state=loop.state.global_state,
        config=cfg,
    )


def _log_again(wandb_run: WandbTracker, setup: Setup, history_so_far: list[dict[str, Any]]) -> None:
    """Log again what a continued run's W&B run lacks (offline: everything, in a new folder with the same
    id), so that its W&B history is whole, from update 0, and _step never restarts; a new run logs only
    the partition table."""
    kept = wandb_run.rows_kept
    wandb_run.note_best([r["test_accuracy"] for r in history_so_far[:kept]])
    if kept == 0:
        columns, rows = partition_table(setup)
        wandb_run.log_table("partition", columns, rows)
    for row in history_so_far[kept:]:
        wandb_run.log(wandb_row(row))


def _torch_flags() -> tuple[bool, bool, bool]:
    """torch's process-wide settings a run's ``trainer.deterministic`` changes (its client Trainers too)."""
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )


def _restore_torch_flags(flags: tuple[bool, bool, bool]) -> None:
    deterministic, warn_only, benchmark = flags
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


def _resume_point(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``resume=FOLDER``: that run's checkpoint, checked against the config; else None."""
    if cfg.resume is None:
        return None
    folder = Path(cfg.resume)
    if (folder / "summary.json").exists():
        raise ConfigError(
            "resume", f"the run in {folder} is complete (it has summary.json): nothing to resume"
        )
    return checkpoint.load(folder / checkpoint.CHECKPOINT, cfg)
