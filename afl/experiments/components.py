"""Building a run's pluggable components: the server's aggregator and LR schedule, the delay model's
speeds and communication delays, the client sampler, the availability model, and the client callbacks.

Light (no torch, no Lightning unless client callbacks are asked for), so that a command can build them
first and answer a bad option value at once. The config's checks (:func:`afl.config.check`) build nothing;
the components' own checks of their option values run here.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from afl.config import to_dict
from afl.config.checks import COMPONENTS, registry_of


def build_components(cfg: DictConfig) -> dict[str, Any]:
    """The pluggable components the config names (:data:`afl.config.checks.COMPONENTS`) and its client
    callbacks, built. A run builds them once (:func:`afl.experiments.build.build`, or given by the
    command that built them first); a comparison or sweep also builds each run's before its first run
    starts, so that a bad value in its last run stops it before anything trains.

    Raises:
        ConfigError: a component refused an option's value (the key names the option).
    """
    built = {
        name: registry_of(key).build(to_dict(OmegaConf.select(cfg, key)), key)
        for key, (name, _) in COMPONENTS.items()
    }
    return {**built, "client_callbacks": _client_callbacks(cfg)}


def _client_callbacks(cfg: DictConfig) -> list[Any]:
    if not cfg.client.callbacks and cfg.client.prox_mu <= 0:
        return []  # what build_client_callbacks gives, without importing Lightning
    from afl.client.callbacks import build_client_callbacks

    return build_client_callbacks(cfg)
