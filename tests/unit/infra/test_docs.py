"""Documents that cannot drift: what README.md, docs/*.md, the comments of configs/**/*.yaml (and of
pyproject.toml and the Makefile) and the docstrings of afl/ and callbacks/ name must exist.

Checked, with plain regular expressions (the message names the file, the line and the text):

1. a repository path (``afl/…``, ``docs/….md``, ``configs/…``, ``scripts/…``, ``tests/…``,
   ``callbacks/…``) or a relative markdown link (and its ``#anchor``, a heading of the target) that
   does not exist;
2. a module ``afl.x.y`` (or ``afl_callbacks.x``) that is not there, or an ``afl.x.y.Name`` without
   that attribute;
3. a config key in backticks (``federation.concurrency``: dotted, lower case, the first part a
   top-level key of configs/defaults.yaml) that the composed default config lacks; a component's
   options (beside its ``name``) are checked against the registered components' options;
4. ``experiment=NAME`` with no such preset, ``arm=NAME`` / ``--arms A,B`` with no such arm, a command
   ``afl-xxx`` not in pyproject's ``[project.scripts]``, ``make TARGET`` not in the Makefile;
5. facts stated twice: the default arms (README, docs/compare.md) against
   :data:`afl.arms.DEFAULT_ARMS`, docs/configuration.md's preset table against configs/experiment/,
   docs/sweeps.md against configs/sweep/, docs/resume.md against :data:`afl.config.RESUMABLE_KEYS`,
   ``make gpu-check``'s duration against the Makefile's, README sections named in comments, and the
   docstrings that list a whole set (``LoopConfig``'s fields, ``ClientJob``'s faults);
6. what a reader of the repository cannot open: issue numbers and the design notes kept outside it.

A false alarm is fixed by making the document precise; where the text is right (an example of a user's
own file or component), by an entry of :data:`ALLOWED` with its reason.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomllib
from helpers import ROOT
from omegaconf import DictConfig, ListConfig, OmegaConf

#: Text that looks like a mistake and is not, each with why.
ALLOWED: dict[str, str] = {
    # docs/extending.md's components and arm of one's own (my_components), and the misspelt option of
    # its example of an error
    "model.hidden": "a plug-in model's option (tiny_mlp in docs/extending.md)",
    "model.hiden": "the misspelt option of docs/extending.md's example of an error",
    "server.aggregator.share": "a plug-in aggregator's option (halfway in docs/extending.md)",
    "server.aggregator.staleness.rate": "a plug-in staleness function's option (exp in docs/extending.md)",
    "server.lr_schedule.every": "a plug-in LR schedule's option (step in docs/extending.md)",
    "delay.speed.slow_share": "a plug-in speed distribution's option (two_tier in docs/extending.md)",
    "halfway": "an arm a preset of one's own defines (docs/extending.md)",
    "compare.arms.halfway": "an arm a preset of one's own defines (docs/configuration.md)",
    # names of other libraries that begin like a config key
    "ray.init": "Ray's function, not the config's ray.* keys",
    "trainer.global_step": "Lightning's Trainer attribute, not the config's trainer.* keys",
}


# ------------------------------------------------------------------------------------------- documents
@dataclass(frozen=True)
class Doc:
    """One piece of documentation: where it is (``path`` relative to the root, first ``line``), its
    ``text``, and its ``kind``: ``md`` (a markdown page), ``comment`` (YAML, TOML or Makefile comments)
    or ``docstring`` (reStructuredText)."""

    path: str
    line: int
    text: str
    kind: str

    def where(self, offset: int) -> str:
        return f"{self.path}:{self.line + self.text.count(chr(10), 0, offset)}"


def _comments(path: Path) -> Iterator[Doc]:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        found = re.search(r"(?:^|\s)#(.*)$", line)
        if found:
            yield Doc(str(path.relative_to(ROOT)), number, found.group(1), "comment")


def _docstrings(path: Path) -> Iterator[Doc]:
    source = path.read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=False)
            if text is not None:
                yield Doc(str(path.relative_to(ROOT)), node.body[0].lineno, text, "docstring")
    for number, line in enumerate(source.splitlines(), start=1):  # Sphinx's ``#:`` comments document too
        found = re.match(r"\s*#:(.*)$", line)
        if found:
            yield Doc(str(path.relative_to(ROOT)), number, found.group(1), "docstring")


@functools.cache
def documents() -> tuple[Doc, ...]:
    docs = [Doc(str(p.relative_to(ROOT)), 1, p.read_text(), "md") for p in _pages()]
    for path in [*sorted((ROOT / "configs").rglob("*.yaml")), ROOT / "pyproject.toml", ROOT / "Makefile"]:
        docs.extend(_comments(path))
    for folder in ("afl", "callbacks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            docs.extend(_docstrings(path))
    return tuple(docs)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_SPAN = re.compile(r"(``?)([^`\n]+?)\1")  # `x` and ``x``; a role's :mod:`x` too
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def code(doc: Doc) -> Iterator[tuple[int, str]]:
    """``(offset, text)`` of the code in ``doc``: spans in backticks and fenced blocks; a comment is all
    code (it has no backticks to mark it)."""
    if doc.kind == "comment":
        yield 0, doc.text
        return
    fenced = []
    if doc.kind == "md":
        for block in _FENCE.finditer(doc.text):
            fenced.append(block.span())
            yield block.start(1), block.group(1)
    for span in _SPAN.finditer(doc.text):
        if not any(a <= span.start() < b for a, b in fenced):
            yield span.start(2), span.group(2).lstrip("~")


def problems_in(pattern: re.Pattern[str], judge, *, everywhere: bool = False) -> list[str]:
    """``file:line: text: why`` for each match of ``pattern`` (in code, or ``everywhere``) that ``judge``
    (match → None if fine, else why) finds wrong."""
    found = []
    for doc in documents():
        pieces = [(0, doc.text)] if everywhere else list(code(doc))
        for offset, text in pieces:
            for match in pattern.finditer(text):
                why = judge(match, doc)
                if why:
                    found.append(f"{doc.where(offset + match.start())}: {match.group(0)!r}: {why}")
    return sorted(set(found))


def _report(found: list[str], what: str) -> None:
    assert not found, f"{len(found)} {what}:\n" + "\n".join(found)


# ------------------------------------------------------------------------------------- 1. paths, links
_TOP = "afl|docs|configs|scripts|tests|callbacks"
_PATH = re.compile(rf"(?<![\w/.~-])(?:{_TOP})/[\w./*-]*")
_PLACEHOLDER = re.compile(r"(^|/)[A-Z][A-Z_]*(\.|/|$)|<|…|\.\.\.")


def _path_problem(text: str, base: Path) -> str | None:
    text = text.rstrip(".,:;")
    if _PLACEHOLDER.search(text):
        return None  # configs/sweep/NAME.yaml: a placeholder
    if "*" in text:
        return None if any(base.glob(text)) else "matches no file"
    return None if (base / text).exists() else "no such file or folder"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def _anchors(page: Path) -> frozenset[str]:
    text = _FENCE.sub("", page.read_text())
    return frozenset(_slug(h) for h in re.findall(r"^#+ (.*)$", text, re.M))


def test_every_named_path_and_link_exists() -> None:
    found = problems_in(_PATH, lambda m, doc: _path_problem(m.group(0), ROOT), everywhere=True)

    def link(match: re.Match[str], doc: Doc) -> str | None:
        target = match.group(1)
        if re.match(r"[a-z]+:", target):
            return None  # https:, mailto:
        file, _, anchor = target.partition("#")
        page = (ROOT / doc.path).parent / file if file else ROOT / doc.path
        if not page.exists():
            return "no such file or folder"
        if anchor and page.suffix == ".md" and anchor not in _anchors(page):
            return f"{page.name} has no heading #{anchor}"
        return None

    found += [f for f in problems_in(_LINK, link, everywhere=True)]
    _report(found, "paths or links to nothing")


# ------------------------------------------------------------------------------------------ 2. modules
_MODULE = re.compile(
    r"(?<![\w.-])(?:afl|afl_callbacks)(?:\.[A-Za-z_][\wǁ]*)+|(?<=`)~?callbacks(?:\.[A-Za-z_]\w*)+"
)


@functools.cache
def _module_files() -> dict[str, Path]:
    found = {}
    for package, folder in {"afl": ROOT / "afl", "afl_callbacks": ROOT / "callbacks"}.items():
        for path in sorted(folder.rglob("*.py")):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _defined(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """The names a module or class body defines, by reading it (no import: torch costs seconds)."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(_defined([*node.body, *getattr(node, "orelse", [])]))
    return names


def _resolves(dotted: str) -> bool:
    files = _module_files()
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module in files:
            break
    else:
        return False
    rest = parts[cut:]
    scope = _defined(ast.parse(files[module].read_text()).body)
    for i, name in enumerate(rest):
        node = scope.get(name)
        if node is None:
            break
        if i == len(rest) - 1:
            return True
        if not isinstance(node, ast.ClassDef):
            break  # an attribute of something else: ask Python
        scope = _defined(node.body)
    else:
        return True
    try:  # set at run time (an instance attribute, a registry's entry): import it, look it up
        obj = importlib.import_module(module)
        for name in rest:
            obj = getattr(obj, name)
    except (ImportError, AttributeError):
        return False
    return True


def test_every_named_module_and_attribute_exists() -> None:
    def judge(match: re.Match[str], doc: Doc) -> str | None:
        if "__mutmut_" in match.group(0):
            return None  # a mutant's name (docs/mutants.md), mutmut's, not a module
        if match.group(0).lstrip("~").startswith("callbacks."):
            if match.group(0).rpartition(".")[2] in _FILE_SUFFIXES:
                return None  # a file: callbacks.py
            return "the package callbacks/ is imported as afl_callbacks"
        return None if _resolves(match.group(0)) else "no such module or attribute"

    _report(problems_in(_MODULE, judge, everywhere=True), "modules or attributes that are not there")


# -------------------------------------------------------------------------------------- 3. config keys
_KEY = re.compile(r"(?<![\w./$-])[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+(?![\w./(-])")
_FILE_SUFFIXES = {
    "py",
    "md",
    "yaml",
    "yml",
    "json",
    "csv",
    "pt",
    "png",
    "pdf",
    "svg",
    "txt",
    "npz",
    "gz",
    "toml",
}


@functools.cache
def _default_config() -> DictConfig:
    from afl.config import load_config

    return load_config(["logging.wandb.mode=disabled"])


def _class_options(module: str, attr: str) -> set[str]:
    """A lazily registered component's options, read from its source (its module may import torch)."""
    for node in ast.parse(_module_files()[module].read_text()).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == attr:
            function = node
            if isinstance(node, ast.ClassDef):
                inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
                if not inits:
                    return set()
                function = inits[0]
            args = function.args
            return {a.arg for a in [*args.args, *args.kwonlyargs] if a.arg != "self"}
    return set()


@functools.cache
def _component_options() -> dict[str, set[str] | None]:
    """Config node → the options any of its registered components takes (None: anything, a plug-in's)."""
    from afl.models import MODEL_INPUTS, MODELS
    from afl.server.aggregators import AGGREGATORS
    from afl.server.lr_schedules import LR_SCHEDULES
    from afl.server.staleness import STALENESS
    from afl.sim.availability import AVAILABILITY
    from afl.sim.delays import COMM_DELAYS, SPEEDS
    from afl.sim.sampling import SAMPLERS

    def union(registry) -> set[str]:
        return {"name"} | {o for n in registry.names() for o in registry.options(n)}

    models = set()
    for name, entry in MODELS._classes.items():
        if isinstance(entry, str):  # not imported yet: its options read from its source
            models |= _class_options(*entry.partition(":")[::2])
        else:  # imported (by an earlier test): the registry reads its signature
            models |= set(MODELS.options(name))
    return {
        "server.aggregator": union(AGGREGATORS),
        "server.aggregator.staleness": union(STALENESS),
        "server.lr_schedule": union(LR_SCHEDULES),
        "delay.speed": union(SPEEDS),
        "delay.comm": union(COMM_DELAYS),
        "federation.sampling": union(SAMPLERS),
        "availability": union(AVAILABILITY),
        "model": {"name"} | (models - set(MODEL_INPUTS)),
        "dataset.synthetic": set(_synthetic_defaults()),
        "dataset.options": None,
    }


def _synthetic_defaults() -> dict[str, object]:
    tree = ast.parse((ROOT / "afl" / "data" / "builtin.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "SYNTHETIC_DEFAULTS":
            return ast.literal_eval(node.value)
    raise AssertionError("afl/data/builtin.py: SYNTHETIC_DEFAULTS not found")


def _key_problem(key: str) -> str | None:
    cfg = _default_config()
    parts = key.split(".")
    if parts[0] not in cfg or _FILE_SUFFIXES & set(parts[1:]) or key in ALLOWED:
        return None
    components = _component_options()
    node = cfg
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i])
        if prefix in components:  # a component's option: any of its registered components'
            options = components[prefix]
            if options is None:
                return None
            if part not in options:
                return f"no component of {prefix} has an option {part!r}"
            nested = f"{prefix}.{part}"
            if nested in components:
                node = None
                continue
            return None if i == len(parts) - 1 else f"{nested} is an option, not a mapping"
        if prefix == "compare.arms":
            return None if part in _arms() else f"{part!r} is no arm"
        if isinstance(node, ListConfig) or (node is None and prefix in components):
            return None
        if not isinstance(node, DictConfig) or part not in node:
            return f"not a key of the composed default config ({prefix or 'top level'} has no {part!r})"
        node = node[part]
    return None


def test_every_config_key_in_backticks_exists() -> None:
    found = problems_in(_KEY, lambda m, doc: _key_problem(m.group(0)))
    _report(found, "config keys that the config does not have")


# ------------------------------------------------------------------------- 4. presets, arms, commands
@functools.cache
def _arms() -> frozenset[str]:
    """The built-in arms, and those the presets and defaults define in ``compare.arms``."""
    from afl.arms import ARMS

    own = set()
    for path in [ROOT / "configs" / "defaults.yaml", *(ROOT / "configs" / "experiment").glob("*.yaml")]:
        arms = OmegaConf.select(OmegaConf.load(path), "compare.arms")
        own |= set(arms or {})
    return frozenset(ARMS) | own


@functools.cache
def _commands() -> frozenset[str]:
    return frozenset(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


@functools.cache
def _make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))


def _is_placeholder(value: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*|<.*|.*(…|\.\.\.).*|\$.*|", value))


def _experiment(match: re.Match[str], doc: Doc) -> str | None:
    from afl.config import experiments

    name = match.group(1)
    if _is_placeholder(name) or "/" in name or name.endswith((".yaml", ".yml")) or name in ALLOWED:
        return None  # experiment=NAME, experiment=path/to/mine.yaml
    name = name.rstrip(".,:;")
    if any(fnmatch.fnmatch(e, name) for e in experiments()):  # experiment=authors_*
        return None
    return f"no preset {name!r} in configs/experiment/"


def _arm_list(match: re.Match[str], doc: Doc) -> str | None:
    names = [n for n in match.group(1).split(",") if n and not _is_placeholder(n) and n not in ALLOWED]
    unknown = [n for n in names if n not in _arms()]
    return f"unknown arm {', '.join(unknown)}" if unknown else None


def _command(match: re.Match[str], doc: Doc) -> str | None:
    name = match.group(0)
    if name in _commands() or name in _arms() or name in ALLOWED:
        return None
    return "neither a command of pyproject.toml's [project.scripts] nor an arm"


def test_every_named_preset_arm_command_and_make_target_exists() -> None:
    found = problems_in(re.compile(r"(?<![\w.-])experiment=([^\s`'\",;)\]]+)"), _experiment, everywhere=True)
    found += problems_in(re.compile(r"(?<![\w.-])arm=([\w-]+)"), _arm_list, everywhere=True)
    found += problems_in(re.compile(r"--arms[ =]([\w,-]+)"), _arm_list, everywhere=True)
    found += problems_in(
        re.compile(r"(?:(?<=bin/)|(?<![\w./-]))afl-[a-z]+(?![\w.-])"),
        _command,
        everywhere=True,
    )
    found += problems_in(
        re.compile(r"(?<![\w-])make ([a-z][\w-]*)(?![\w=-])"),
        lambda m, doc: None if m.group(1) in _make_targets() else "no such target in the Makefile",
    )
    _report(found, "presets, arms, commands or make targets that do not exist")


# ------------------------------------------------------------------------------- 5. facts stated twice
def _page(name: str) -> str:
    return (ROOT / name).read_text()


_DEFAULT_ARMS = re.compile(
    r"(?:[Ww]ithout `--arms`|`--arms` picks them \(default:|the default arms \()[^`]*?"
    r"((?:`[a-z0-9,-]+`(?:,\s*|,?\s+and\s+)?)+)"
)


def test_the_default_arms_are_afl_compares() -> None:
    from afl.arms import DEFAULT_ARMS

    said = {}
    for page in _pages():
        for statement in _DEFAULT_ARMS.finditer(page.read_text()):
            named = re.findall(r"[a-z0-9-]+", " ".join(re.findall(r"`([^`]+)`", statement.group(1))))
            said[(page.relative_to(ROOT).as_posix(), statement.group(0))] = named
    for page in ("README.md", "docs/compare.md"):
        assert any(p == page for p, _ in said), f"{page}: says nowhere which arms afl-compare runs by default"
    wrong = [
        f"{p}: {text!r} names {named}" for (p, text), named in said.items() if named != list(DEFAULT_ARMS)
    ]
    assert not wrong, f"afl.arms.DEFAULT_ARMS is {list(DEFAULT_ARMS)}, but\n" + "\n".join(wrong)


def test_the_preset_table_lists_every_preset() -> None:
    from afl.config import experiments

    text = _page("docs/configuration.md")
    table = text[text.index("## Presets") :].split("\n\n")[1]
    listed = set(re.findall(r"`(\w+)`", "\n".join(row.split("|")[1] for row in table.splitlines()[2:])))
    assert listed == set(experiments()), (
        f"docs/configuration.md's preset table: missing {sorted(set(experiments()) - listed)}, "
        f"no such preset {sorted(listed - set(experiments()))}"
    )


def test_the_sweeps_page_names_every_sweep_and_its_preset() -> None:
    text = _page("docs/sweeps.md")
    for path in sorted((ROOT / "configs" / "sweep").glob("*.yaml")):
        assert re.search(rf"sweep\.py {path.stem}\b", text), f"docs/sweeps.md: no command for {path.stem}"
        base = OmegaConf.to_container(OmegaConf.load(path).base)
        for preset in [b.partition("=")[2] for b in base if b.startswith("experiment=")]:
            assert f"`{preset}`" in text, f"docs/sweeps.md: {path.stem} runs on `{preset}`, never named"


def test_the_resume_page_lists_the_keys_a_resume_may_change() -> None:
    from afl.config import RESUMABLE_KEYS

    text = _page("docs/resume.md")
    missing = [k for k in RESUMABLE_KEYS if f"`{k}`" not in text and f"`{k}=" not in text]
    assert not missing, (
        f"docs/resume.md: the keys a resume may change omit {missing} (afl.config.RESUMABLE_KEYS)"
    )


def test_gpu_check_takes_what_the_makefile_says() -> None:
    minutes = re.search(r"in about (\d+) minutes", _page("Makefile")).group(1)
    for page in ["README.md", "Makefile", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]:
        for said in re.findall(r"gpu-check`?(?:[^.]|\.\d){0,80}?about (\d+) minutes", _page(page)):
            assert said == minutes, (
                f"{page}: make gpu-check takes about {said} minutes; the Makefile: {minutes}"
            )


def test_readme_sections_named_in_comments_exist() -> None:
    headings = {h.strip() for h in re.findall(r"^#+ (.*)$", _page("README.md"), re.M)}
    found = problems_in(
        re.compile(r"README(?:'s)? \"([^\"]+)\""),
        lambda m, doc: None if m.group(1) in headings else "README.md has no such section",
        everywhere=True,
    )
    _report(found, "README sections that are not there")


def test_docstrings_that_list_a_whole_set_list_all_of_it() -> None:
    from afl.messages import ClientJob
    from afl.sim.faults import FAULT_KINDS
    from afl.sim.loop import LoopConfig

    wrong = [
        f"afl/sim/loop.py: LoopConfig's docstring omits the field ``{f}``"
        for f in LoopConfig.__dataclass_fields__
        if f"``{f}``" not in (LoopConfig.__doc__ or "")
    ]
    wrong += [
        f"afl/messages.py: ClientJob's docstring omits the fault ``{k}`` (afl.sim.faults.FAULT_KINDS)"
        for k in FAULT_KINDS
        if f"``{k}``" not in (ClientJob.__doc__ or "")
    ]
    _report(wrong, "docstrings that list a set in part")


# ------------------------------------------------------------------- 6. what the reader cannot open
_UNSEEN = re.compile(r"DESIGN\.md|(?<![\w&/])#\d+\b|\b[Ii]ssues?\b(?:'s)?(?: #?\d+)?")


def test_no_document_sends_the_reader_to_an_issue_or_the_design_notes() -> None:
    _report(
        problems_in(_UNSEEN, lambda m, doc: "the reader of the repository cannot see it", everywhere=True),
        "references to issues or notes outside the repository",
    )
