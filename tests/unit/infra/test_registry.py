"""Registries: lazy built-in entries ("module:attr") are listed without importing their module and resolve
to what that module registers."""

from __future__ import annotations

import importlib

import pytest
from helpers.processes import run_fresh

from afl.client import OPTIMIZERS
from afl.data import DATASET_LOADERS, SCHEMES
from afl.errors import ConfigError
from afl.models import MODELS
from afl.registry import Registry

LAZY = {"models": MODELS, "optimizers": OPTIMIZERS, "datasets": DATASET_LOADERS, "schemes": SCHEMES}


def test_names_are_listed_without_importing_their_modules() -> None:
    code = (
        "import sys\n"
        "from afl.client import OPTIMIZERS\n"
        "from afl.data import DATASET_LOADERS, SCHEMES\n"
        "from afl.models import MODELS\n"
        "print([r.names() for r in (MODELS, OPTIMIZERS, DATASET_LOADERS, SCHEMES)])\n"
        "heavy = ('torch', 'lightning', 'afl.models.cnn', 'afl.models.resnet', 'afl.models.vit',\n"
        "         'afl.client.module',\n"
        "         'afl.data.datasets')\n"
        "print(sorted(m for m in sys.modules if m in heavy))\n"
    )
    names, imported = run_fresh(code, timeout=60).splitlines()
    assert names == str(
        [
            ["cnn", "lenet", "resnet14", "resnet20", "vit"],
            ["adam", "sgd"],
            ["cifar10", "digits", "fashion_mnist", "mnist", "synthetic"],
            ["dirichlet", "iid", "shards"],
        ]
    )
    assert imported == "[]"


@pytest.mark.parametrize("kind", sorted(LAZY))
def test_every_lazy_entry_is_what_its_module_registers(kind: str) -> None:
    """Importing a module whose decorator registers another object under a lazily declared name raises
    "registered twice"; so every entry resolving means each module registered what was declared."""
    registry = LAZY[kind]
    for name in registry.names():
        found = registry.get(name)
        assert found.__module__.startswith("afl.")
        assert getattr(importlib.import_module(found.__module__), found.__qualname__) is found
        assert registry.get(name) is found
    from afl.client import module
    from afl.data import datasets, partition
    from afl.models import cnn

    # the modules that define the entries register them in the package's own registry
    used = (cnn.MODELS, module.OPTIMIZERS, datasets.DATASET_LOADERS, partition.SCHEMES)
    assert all(a is b for a, b in zip(used, (MODELS, OPTIMIZERS, DATASET_LOADERS, SCHEMES)))


def test_a_lazy_entry_is_filled_by_its_own_decorator_only() -> None:
    things: Registry[object] = Registry("thing", lazy={"counter": "collections:Counter"})
    import collections

    assert things.register("counter")(collections.Counter) is collections.Counter  # the promised object
    assert things.get("counter") is collections.Counter
    with pytest.raises(ValueError, match="registered twice"):
        things.register("counter")(collections.OrderedDict)
    lazy: Registry[object] = Registry("thing", lazy={"odict": "collections:OrderedDict"})
    with pytest.raises(ValueError, match="registered twice"):
        lazy.register("odict")(dict)  # another object under a lazily declared name
    assert lazy.get("odict") is collections.OrderedDict  # not decorated: the attribute itself
    with pytest.raises(ConfigError, match="unknown thing 'x'; allowed: odict"):
        lazy.get("x", "thing.name")


def test_options_are_checked_by_name_when_a_hint_cannot_be_resolved() -> None:
    """A plug-in whose annotation names a type imported only for type checkers: its options are still
    checked by name, and the component is built (the hint is not read)."""
    things: Registry[object] = Registry("thing")
    namespace: dict = {}
    exec(
        "from __future__ import annotations\n"
        "class Thing:\n"
        "    def __init__(self, *, size: Missing = 3) -> None:\n"
        "        self.size = size\n",
        namespace,
    )
    things.register("thing")(namespace["Thing"])
    assert things.build({"name": "thing", "size": "anything"}, "x").size == "anything"
    with pytest.raises(ConfigError, match=r"x\.sise: not an option of thing 'thing' \(options: size\)"):
        things.build({"name": "thing", "sise": 1}, "x")
