"""Composing a config: the schema ← ``configs/defaults.yaml`` ← a preset (``experiment=NAME`` or a file)
← its arm's rule and selected step sizes ← ``key=value`` overrides; or a stopped run's own config
(``resume=FOLDER``). Every mistake is one :class:`~afl.errors.ConfigError` naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from afl.config.checks import check
from afl.config.schema import CONFIG_DIR, RESUMABLE_KEYS, Config
from afl.errors import ConfigError


def experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the presets in ``configs/experiment/``."""
    return sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))


def _omegaconf_error(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = str(getattr(err, "full_key", "") or "") or "config"
    if isinstance(err, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return ConfigError(
            key,
            f"unknown key (from {source}); see the keys under "
            f"{parent or 'the top level'} in configs/defaults.yaml",
        )
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(key, f"wrong type (from {source}): {msg}")
    return ConfigError(key, f"{str(err).splitlines()[0]} (from {source})")


# Config nodes that name a pluggable component: picking another ``name`` in a later layer (preset or
# command line) starts that node afresh, so options of the old component do not leak into the new one.
COMPONENT_KEYS = (
    "model",
    "server.aggregator",
    "server.aggregator.staleness",
    "server.lr_schedule",
    "delay.speed",
    "delay.comm",
)


def _merge(cfg: DictConfig, other: Any, source: str) -> DictConfig:
    for key in COMPONENT_KEYS:
        new = OmegaConf.select(other, f"{key}.name", default=None)
        old = OmegaConf.select(cfg, f"{key}.name", default=None)
        if new is not None and old is not None and new != old:
            OmegaConf.update(cfg, key, {}, merge=False)
    try:
        merged = OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as err:
        raise _omegaconf_error(err, source) from None
    assert isinstance(merged, DictConfig)
    return merged


EMPTY = {
    "output_dir": "is empty: give a folder (output_dir=runs/mine), or leave it out for a new auto-named one",
    "experiment": "is empty: give a preset's name (see --help) or a file path/to/preset.yaml",
    "resume": "is empty: give the folder of the run to continue",
    "arm": "is empty: give an arm's name (afl-compare --help lists them)",
}


def _parse_overrides(overrides: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """``(experiment, resume, the other overrides)``."""
    experiment, resume, rest = None, None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "expected key=value (e.g. federation.concurrency=8)")
        if key.lstrip("+") in ("output_dir", "experiment", "resume", "arm") and not value.strip():
            raise ConfigError(key.lstrip("+"), EMPTY[key.lstrip("+")])
        if key.lstrip("+") == "experiment":
            experiment = value
        elif key.lstrip("+") == "resume":
            resume = value
        else:
            rest.append(item)
    return experiment, resume, rest


def preset_path(experiment: str, config_dir: Path = CONFIG_DIR) -> tuple[Path, str]:
    """The file of ``experiment=...`` and the experiment's name: a preset's name (``configs/experiment/``),
    or a YAML file of one's own (``experiment=path/to/mine.yaml``, named after the file: ``mine``)."""
    if experiment.endswith((".yaml", ".yml")):
        path = Path(experiment).expanduser()
        if not path.is_file():
            raise ConfigError("experiment", f"no file {experiment} (a preset of one's own: a YAML file)")
        return path, path.stem
    if experiment not in experiments(config_dir):  # a name, never a path (../defaults)
        raise ConfigError(
            "experiment",
            f"unknown experiment {experiment!r}; available: {', '.join(experiments(config_dir))}, "
            "or a file path/to/preset.yaml",
        )
    return config_dir / "experiment" / f"{experiment}.yaml", experiment


def _load_yaml(path: Path, key: str) -> Any:
    try:
        return OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as err:  # unreadable or not YAML
        raise ConfigError(key, f"cannot read {path}: {str(err).splitlines()[0]}") from None


def load_config(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose the config: schema ← defaults ← ``experiment=NAME`` preset (or ``experiment=FILE.yaml``)
    ← dotlist overrides; then import its ``plugins`` and check it (:func:`afl.config.check`).

    Example:
        >>> cfg = load_config(["experiment=demo", "federation.concurrency=3"])
        >>> cfg.dataset.name, cfg.federation.concurrency
        ('digits', 3)
    """
    experiment, resume, dotlist = _parse_overrides(overrides)
    cfg = OmegaConf.structured(Config)
    cfg = _merge(cfg, OmegaConf.load(config_dir / "defaults.yaml"), "configs/defaults.yaml")
    if resume is not None:
        return _resume_config(cfg, resume, experiment, dotlist)
    if experiment is not None:
        path, name = preset_path(experiment, config_dir)
        preset = _load_yaml(path, "experiment")
        cfg = _merge(cfg, preset, str(path))
        cfg.experiment = name
        if OmegaConf.select(preset, "compare.arms") is not None:  # a preset's arms replace the defaults'
            cfg.compare.arms = preset.compare.arms
    cfg = _with_arm(cfg, dotlist)
    cfg = _merge_dotlist(cfg, dotlist)
    check(cfg)
    return cfg


def _with_arm(cfg: DictConfig, dotlist: Sequence[str]) -> DictConfig:
    """The preset ``cfg`` with its arm's rule and selected step sizes merged in (:mod:`afl.arms`): the
    arm the command line names (``arm=``), else the one its rule implies, else the preset's. Arms of the
    preset's own (``compare.arms``, the command line's too) count, and so does every aggregator by its
    name (a plug-in's: an arm of its name, on the defaults' other settings)."""
    from afl import plugins
    from afl.arms import IDENTITY_KEYS, implied_arm, rule_overrides

    given = {k.lstrip("+"): v for k, _, v in (item.partition("=") for item in dotlist)}
    explicit = given.get("arm")
    implied = None if explicit is not None else implied_arm(given)
    arm = explicit or implied or str(cfg.arm)
    probe = _merge_dotlist(
        cfg.copy(), [i for i in dotlist if i.lstrip("+").startswith(("compare.", "plugins"))]
    )
    own = {str(k): [str(o) for o in v] for k, v in probe.compare.arms.items()}
    rule = rule_overrides(arm, own)
    if rule is None and arm == implied:
        rule = []  # an aggregator without an arm of its own (a plug-in): an arm of its name
    if rule is None:
        from afl.server.aggregators import AGGREGATORS

        plugins.load(list(probe.plugins))
        if arm in AGGREGATORS.names():
            rule = [f"server.aggregator.name={arm}"]
    if rule is None:
        from afl.arms import ARMS

        allowed = ", ".join([*ARMS, *(n for n in own if n not in ARMS)])
        raise ConfigError("arm", f"unknown arm {arm!r}; allowed: {allowed} (or define one in compare.arms)")
    if explicit is not None:
        sets = {k: v for k, _, v in (item.partition("=") for item in rule)}
        for key in IDENTITY_KEYS:
            if key in given and key in sets and given[key] != sets[key]:
                raise ConfigError(
                    key,
                    f"arm {arm} runs {key}={sets[key]}, not {given[key]}: leave out arm= to run the "
                    f"arm of {given[key]}, or leave out {key}",
                )
    try:
        layer = OmegaConf.from_dotlist(rule)
    except OmegaConfBaseException as err:
        raise ConfigError(f"compare.arms.{arm}", str(err).splitlines()[0]) from None
    cfg = _merge(cfg, layer, f"arm {arm}")
    cfg.arm = arm
    return cfg


def _merge_dotlist(cfg: DictConfig, dotlist: list[str]) -> DictConfig:
    """The command line's ``key=value`` overrides on top of ``cfg``."""
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as err:
        raise ConfigError(str(getattr(err, "full_key", "") or dotlist), str(err).splitlines()[0]) from None
    return _merge(cfg, cli, "the command line")


def _resume_config(cfg: DictConfig, folder: str, experiment: str | None, dotlist: list[str]) -> DictConfig:
    """``resume=FOLDER``: the run's own ``config.yaml`` on top of the defaults; on the command line only
    the :data:`RESUMABLE_KEYS` (models and evaluations identical, or equal to float rounding: see there)
    may be given."""
    saved = Path(folder) / "config.yaml"
    if not saved.is_file():
        raise ConfigError("resume", f"{folder} is not a run folder (it has no config.yaml)")
    try:
        cfg = _merge(cfg, OmegaConf.load(saved), str(saved))
    except (OSError, OmegaConfBaseException, ValueError) as err:  # unreadable or not YAML
        raise ConfigError("resume", f"cannot read {saved}: {str(err).splitlines()[0]}") from None
    if experiment is not None and experiment != cfg.experiment:
        raise ConfigError("experiment", f"the run in {folder} is of experiment {cfg.experiment!r}")
    changeable = ", ".join(k for k in RESUMABLE_KEYS if k not in ("resume", "output_dir"))
    for item in dotlist:
        key = item.partition("=")[0].lstrip("+")
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                key,
                "cannot be changed when resuming: a run continues with the settings it started with "
                f"(only {changeable} may be given)",
            )
    if OmegaConf.select(OmegaConf.load(saved), "arm") is None:  # a run from before arms: its rule's arm
        from afl.arms import ARM_OF_AGGREGATOR

        name = str(cfg.server.aggregator.get("name"))
        cfg.arm = ARM_OF_AGGREGATOR.get(name, name)
    cfg = _merge_dotlist(cfg, dotlist)
    cfg.resume = folder
    cfg.output_dir = folder
    check(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
