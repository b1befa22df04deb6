"""Explicit registries of short names to component classes, and strict construction from config.

A component's options are its constructor's keyword arguments: a misspelt or unknown option, a value of
the wrong type or an impossible value is a :class:`~afl.errors.ConfigError` naming the full config key.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from afl.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Short name → class (or factory function), for one kind of pluggable component: aggregators,
    staleness functions, LR schedules, delay distributions, executors, data sets, models, partition
    schemes, optimizers. Every kind uses this one style: register with ``@KIND.register("name")``, look up
    with :meth:`get` (an unknown name is a :class:`ConfigError` listing the allowed ones).

    Args:
        kind: what the components are, for error messages ("aggregator").
        nested: option name → registry, for options that are components themselves (built from a
            mapping with a ``name`` key, e.g. an aggregator's ``staleness``).
        lazy: name → ``"module:attr"``, components listed without importing their module (torch and
            Lightning cost seconds to import, which listing or checking names should not pay): the module
            is imported on first :meth:`get`. Its ``@KIND.register(name)`` then fills the entry, if the
            decorated object is that ``module:attr``.

    Example:
        >>> SHAPES: Registry[object] = Registry("shape")
        >>> @SHAPES.register("square")
        ... class Square:
        ...     def __init__(self, *, side: float = 1.0) -> None:
        ...         self.side = side
        >>> SHAPES.build({"name": "square", "side": 2}, key="shape").side
        2
        >>> LAZY: Registry[object] = Registry("thing", lazy={"odict": "collections:OrderedDict"})
        >>> LAZY.names(), LAZY.get("odict").__name__  # listed without importing; imported by get
        (['odict'], 'OrderedDict')
    """

    def __init__(
        self,
        kind: str,
        nested: Mapping[str, Registry[Any]] | None = None,
        lazy: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.nested = dict(nested or {})
        self._classes: dict[str, Callable[..., T] | str] = dict(lazy or {})

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers a class or function under ``name``."""

        def add(cls: F) -> F:
            if name in self._classes and self._classes[name] != _address(cls):  # not its lazy entry
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._classes[name] = cls
            return cls

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in registered for a while, e.g. in a test or a notebook)."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str, key: str = "name") -> Callable[..., T]:
        if name not in self._classes:
            raise ConfigError(key, f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        entry = self._classes[name]
        if isinstance(entry, str):  # lazy: importing the module registers it with its decorator
            module, _, attr = entry.partition(":")
            found = getattr(importlib.import_module(module), attr)
            if isinstance(self._classes[name], str):  # not decorated: the attribute itself
                self._classes[name] = found
            entry = self._classes[name]
        assert not isinstance(entry, str)
        return entry

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword options of a registered component, with their defaults."""
        params = inspect.signature(self.get(name)).parameters
        return {p.name: p for p in params.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def build(self, node: Mapping[str, Any], key: str, **given: Any) -> T:
        """Build the component that ``node`` (``{"name": ..., option: value, ...}``) describes.

        Args:
            node: the config node; its ``name`` picks the class, every other entry is an option.
            key: the node's dotted config key, used in error messages.
            given: arguments the caller supplies (a model's ``num_classes`` and ``input_shape``, from the
                data set): passed to the component if its signature takes them, and never options.
        """
        kwargs = self.check(node, key, given=given)  # first: it also checks that node names a component
        for opt, value in kwargs.items():  # options that are components themselves, built first
            if opt in self.nested and isinstance(value, Mapping):
                kwargs[opt] = self.nested[opt].build(value, f"{key}.{opt}")
        cls = self.get(node["name"], f"{key}.name")
        params = inspect.signature(cls).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        supplied = {k: v for k, v in given.items() if takes_any or k in params}
        try:
            return cls(**supplied, **kwargs)
        except ConfigError as err:
            raise ConfigError(f"{key}.{err.key}", err.message) from None

    def check(self, node: Mapping[str, Any], key: str, given: Mapping[str, Any] | Sequence[str] = ()) -> dict:
        """The options of ``node`` as keyword arguments, checked against the component's signature (known
        option, type) without building it (nor the components among its options: their nodes are
        checked the same way and returned as they are). ``given``: the names the caller supplies, which
        are no options.
        """
        if not isinstance(node, Mapping) or "name" not in node:
            raise ConfigError(key, f"expected a mapping with a 'name' ({', '.join(self.names())})")
        name = node["name"]
        cls = self.get(name, f"{key}.name")
        options = {k: p for k, p in self.options(name).items() if k not in given}
        try:
            hints = typing.get_type_hints(cls.__init__ if inspect.isclass(cls) else cls)
        except NameError:  # an annotation naming what its module imports only for type checkers
            hints = {}  # the options are still checked by name; the component checks their values
        kwargs: dict[str, Any] = {}
        for opt, value in node.items():
            if opt == "name":
                continue
            if opt in given:
                raise ConfigError(f"{key}.{opt}", f"set by afl for {self.kind} {name!r}, not an option")
            if opt not in options:
                allowed = ", ".join(sorted(options)) or "none"
                raise ConfigError(
                    f"{key}.{opt}", f"not an option of {self.kind} {name!r} (options: {allowed})"
                )
            if opt in self.nested and isinstance(value, Mapping):
                self.nested[opt].check(value, f"{key}.{opt}")  # built by build, not here
            elif opt in hints and not _matches(value, hints[opt]):
                raise ConfigError(
                    f"{key}.{opt}",
                    f"expected {_type_name(hints[opt])}, got {value!r} ({type(value).__name__})",
                )
            kwargs[opt] = value
        return kwargs


def _address(obj: Any) -> str:
    """``"module:qualname"`` of a class or function, as lazy entries name them."""
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:  # finite: nan passes every range check and inf is no setting
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if inspect.isclass(hint):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is float:
        return "a finite number"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def require(condition: bool, option: str, message: str) -> None:
    """Raise ``ConfigError(option, message)`` unless ``condition``: for validating constructor options."""
    if not condition:
        raise ConfigError(option, message)
