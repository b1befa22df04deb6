"""Configuration: a typed schema (:mod:`.schema`), YAML defaults and presets with OmegaConf dotlist overrides
(:mod:`.loading`), and strict checks that build nothing (:mod:`.checks`).

Values come from ``configs/defaults.yaml``, then ``configs/experiment/<name>.yaml`` (only the
differences), then ``key=value`` overrides. Every mistake is one :class:`~afl.errors.ConfigError`
naming the key: unknown keys, wrong types, impossible values, unknown component names or options. A
component's own checks of its option values run when a run builds it, once
(:func:`afl.experiments.components.build_components`).
"""

from afl.config.checks import check, check_relations, to_dict
from afl.config.loading import EMPTY, experiments, load_config, preset_path, to_yaml
from afl.config.schema import CONFIG_DIR, RESUMABLE_KEYS, Config

__all__ = [
    "CONFIG_DIR",
    "EMPTY",
    "RESUMABLE_KEYS",
    "Config",
    "check",
    "check_relations",
    "experiments",
    "load_config",
    "preset_path",
    "to_dict",
    "to_yaml",
]
