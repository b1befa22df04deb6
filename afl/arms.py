"""Arms: named rules, the unit every surface compares (runs, folders, summaries, W&B, plots, tables).

An **arm** is a rule with its own defaults (:data:`ARMS`): the overrides that make it (aggregator, LR
schedule, their options), never step sizes. A run is an arm at a seed in a setting (a preset). The
config key ``arm`` names it; :func:`afl.config.load_config` composes, later layers winning:

1. ``configs/defaults.yaml``, then the preset (``experiment=NAME``);
2. the arm's rule (``ARMS[arm].overrides``), then the preset's selected step sizes for it
   (``compare.arms.ARM``, chosen on validation data; the commands that chose them are in the preset);
3. the command line's ``key=value`` overrides.

So ``afl-train experiment=demo arm=afl-later seed=1`` composes exactly what ``afl-compare
experiment=demo --arms afl-later --seeds 1`` runs for that arm and seed.

Without ``arm=`` the arm is the preset's (``arm:`` in the preset, else the defaults'), except that a
command line naming a rule runs that rule's own arm (:func:`implied_arm`): ``server.aggregator.name=fedbuff``
is plain FedBuff (the ``fedbuff`` arm: constant client LR, no delay factor), ``federation.mode=sync`` or
``server.aggregator.name=fedavg`` is ``sync``; an aggregator without an arm of its own (a plug-in) runs
as an arm of its name with the defaults' other settings. ``arm=A`` together with an aggregator or mode
that is not A's is refused (one line): that run would carry one name and another rule.

This module imports nothing heavy: the config's checks use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    """A named rule: the overrides that make it, the source it follows (``afl-compare --help``) and, for
    the paper's AFL, which reading of its learning rate it is (docs/readings.md)."""

    overrides: tuple[str, ...]
    source: str
    reading: str | None = None  # ours | released | later (the paper's AFL); None for other rules

    def value(self, key: str) -> str | None:
        """The value this arm's rule sets for ``key`` (``None`` if it sets none)."""
        for item in self.overrides:
            k, _, v = item.partition("=")
            if k == key:
                return v
        return None


_ASYNC = ("federation.mode=async",)
_AFL = (*_ASYNC, "server.aggregator.name=afl")
#: Each arm: the rule's overrides and where the rule comes from. The three readings of the paper's
#: learning rate (docs/readings.md) are ``afl`` (ours), ``afl-released`` and ``afl-later`` (the authors'
#: codes); ``afl-noweight``, ``afl-nodecay`` and ``afl-nolr`` are ablations of ours.
ARMS: dict[str, Arm] = {
    "afl": Arm(
        (*_AFL, "server.lr_schedule.name=paper"),
        "our reading of the paper's text: s(τ) = 1/(1+0.2τ) per arrival, client LR γ0/(sqrt(r+1)(1+0.1τ)), "
        "r the round",
        "ours",
    ),
    "afl-noweight": Arm(
        (*_AFL, "server.aggregator.staleness.name=constant", "server.lr_schedule.name=paper"),
        "ablation of afl: no staleness weight (s ≡ 1)",
        "ours",
    ),
    "afl-nodecay": Arm(
        (*_AFL, "server.lr_schedule.name=paper", "server.lr_schedule.decay=none"),
        "ablation of afl: its LR without the sqrt(r+1) decay",
        "ours",
    ),
    "afl-nolr": Arm(
        (*_AFL, "server.lr_schedule.name=constant"),
        "ablation of afl: its aggregation at a constant LR",
        "ours",
    ),
    "afl-released": Arm(
        (
            *_AFL,
            "server.aggregator.buffer_size=null",  # M = J: each step adds the mean delta of J arrivals
            "server.aggregator.staleness.name=constant",
            "server.lr_schedule.name=paper",
            "server.lr_schedule.alpha=0.01",
            "server.lr_schedule.delay_at=dispatch",
            "server.lr_schedule.decay_over=local_epoch",
            "client.optimizer_reset=epoch",
        ),
        "the code released with the paper: epoch e of a job at γ0/(sqrt(e+1)(1+0.01τ)), a new Adam every "
        "epoch, sample-weighted FedAvg of each J arrivals, no staleness weight",
        "released",
    ),
    "afl-later": Arm(
        (
            *_ASYNC,
            "server.aggregator.name=fedbuff",
            "server.aggregator.buffer_size=null",  # K = J: one step per round of arrivals
            "server.aggregator.staleness.name=constant",
            "server.aggregator.server_lr_decay=sqrt",
            "server.lr_schedule.name=constant",
        ),
        "the authors' later code, AFL mode: constant client LR, server step η_g/sqrt(r+1) on the mean "
        "delta of each J arrivals, no staleness weight",
        "later",
    ),
    "fedasync": Arm(
        (*_ASYNC, "server.aggregator.name=fedasync", "server.lr_schedule.name=constant"),
        "FedAsync (Xie et al. 2019)",
    ),
    "fedbuff": Arm(
        (*_ASYNC, "server.aggregator.name=fedbuff", "server.lr_schedule.name=constant"),
        "FedBuff (Nguyen et al. 2022): constant client LR, s(τ) = 1/sqrt(1+τ), server step on each buffer",
    ),
    "ca2fl": Arm(
        (*_ASYNC, "server.aggregator.name=ca2fl", "server.lr_schedule.name=constant"),
        "CA2FL (Wang et al., ICLR 2024): cached per-client deltas calibrate each buffer of J arrivals",
    ),
    "fadas": Arm(
        (
            *_ASYNC,
            "server.aggregator.name=fadas",
            "server.aggregator.delay_threshold=1",  # the authors' code's τ_c, with its adjustment on
            "server.lr_schedule.name=constant",
        ),
        "FADAS (Wang et al., ICML 2024): AMSGrad server steps on each buffer's mean delta, η/τ_max "
        "beyond τ_c = 1",
    ),
    "dc": Arm(
        (*_ASYNC, "server.aggregator.name=dc", "server.lr_schedule.name=constant"),
        "delay compensation after DC-ASGD (Zheng et al., ICML 2017): g + λ g⊙g⊙(θ_t − θ_v) per arrival",
    ),
    "sync": Arm(
        ("federation.mode=sync", "server.aggregator.name=fedavg", "server.lr_schedule.name=constant"),
        "synchronous FedAvg, the paper's baseline, at a constant client LR",
    ),
}
#: What ``afl-compare`` runs without ``--arms``: the three readings of the paper's AFL and sync.
DEFAULT_ARMS = ("afl", "afl-released", "afl-later", "sync")
#: The arm every speed-up is measured against.
BASELINE = "sync"
#: The arm each aggregator runs as when the command line names the aggregator without an arm.
ARM_OF_AGGREGATOR = {
    "afl": "afl",
    "fedavg": "sync",
    "fedasync": "fedasync",
    "fedbuff": "fedbuff",
    "ca2fl": "ca2fl",
    "fadas": "fadas",
    "dc": "dc",
}
#: What identifies a rule: ``arm=A`` with another value of these on the command line is refused.
IDENTITY_KEYS = ("server.aggregator.name", "federation.mode")


def implied_arm(command_line: Mapping[str, str]) -> str | None:
    """The arm a command line without ``arm=`` asks for by naming a rule, or None.

    Example:
        >>> implied_arm({"server.aggregator.name": "fedbuff"}), implied_arm({"federation.mode": "sync"})
        ('fedbuff', 'sync')
        >>> implied_arm({"client.lr": "0.1"}) is None
        True
    """
    name = command_line.get("server.aggregator.name")
    if name is not None:
        return ARM_OF_AGGREGATOR.get(name, name)
    if command_line.get("federation.mode") == "sync":
        return "sync"
    return None


def rule_overrides(arm: str, own: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The overrides that make ``arm``: its rule (:data:`ARMS`), then ``own[arm]`` (the preset's
    ``compare.arms``: selected step sizes, or the whole of an arm the preset defines); None if ``arm`` is
    neither."""
    if arm not in ARMS and arm not in own:
        return None
    return [*(ARMS[arm].overrides if arm in ARMS else ()), *own.get(arm, ())]


def tags(arm: str) -> list[str]:
    """W&B tags that say which rule a run is: ``reading:ours|released|later`` for the paper's AFL.

    Example:
        >>> tags("afl-released"), tags("sync")
        (['reading:released'], [])
    """
    reading = ARMS[arm].reading if arm in ARMS else None
    return [f"reading:{reading}"] if reading else []
