"""Plug-ins: the user's own components (aggregators, staleness functions, LR schedules, delay
distributions, executors, models, data sets, partition schemes, optimizers, client callbacks), registered
in their module with the usual ``@REGISTRY.register("name")`` and imported before the config is checked.

Two ways to have a module imported:

* the config key ``plugins``, a list of module names (``plugins=[my_agg]`` on the command line, or in a
  preset), importable from the working folder or the environment;
* the entry-point group ``afl.plugins`` of an installed package, imported without being named::

      [project.entry-points."afl.plugins"]
      my_components = "my_package.components"

Every command (``afl-train``, ``afl-compare``, ``afl-sweep``) and every run checks its config with
:func:`afl.config.check`, which calls :func:`load` first; a Ray executor ships the plug-in modules to its
workers (:mod:`afl.sim.ray_executor`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from afl.errors import ConfigError

GROUP = "afl.plugins"

_loaded: dict[str, ModuleType] = {}  # module name -> module, in the order they were loaded
_entry_points_done = False


def load(names: Sequence[str] = ()) -> list[ModuleType]:
    """Import the ``afl.plugins`` entry points (once per process) and the modules ``names``.

    The working folder is searched first, as ``python -c`` would, so a module beside the command is found.

    Returns:
        The modules ``names``, imported.

    Raises:
        ConfigError: a name that is not a module name, or a module that cannot be found (its own
            errors, a bug in the plug-in, propagate with their traceback).
    """
    global _entry_points_done
    if not _entry_points_done:
        _entry_points_done = True
        for entry in entry_points(group=GROUP):
            _loaded.setdefault(entry.value, _import(entry.value, f"entry point {entry.name!r} of {GROUP}"))
    modules = []
    for index, name in enumerate(names):
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"plugins[{index}]", f"expected a module name like my_pkg.my_agg, got {name!r}")
        if name not in _loaded:
            _loaded[name] = _import(name, f"plugins[{index}]")
        modules.append(_loaded[name])
    return modules


def loaded() -> list[ModuleType]:
    """Every plug-in module imported so far (named or by entry point)."""
    return list(_loaded.values())


def _import(name: str, key: str) -> ModuleType:
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(f"{err.name}.")):
            raise  # the plug-in itself imports something missing: its own traceback says what
        raise ConfigError(
            key, f"cannot import {name!r}: no module {err.name!r} in the working folder or the environment"
        ) from None
