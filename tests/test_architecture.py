"""The layers of docs/architecture.md: no module of salt/ imports from a layer above its own.

Every import counts, at the top of a file or inside a function, so a lazy import cannot
hide an upward dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SALT = Path(__file__).resolve().parent.parent / "salt"

# Bottom to top; a module may import its own layer and the ones before it.
LAYERS: dict[str, tuple[str, ...]] = {
    "core": (
        "salt.io",
        "salt.folders",
        "salt.config",
        "salt.hookspecs",
        "salt.plugins",
        "salt.registry",
        "salt.masking",
        "salt.contracts",
        "salt.quant",
        "salt.hub",
        "salt.distributed",
        "salt.errors",
        "salt.progress",
    ),
    "data": (
        "salt.decoders",
        "salt.lerobot",
        "salt.video",
        "salt.synthetic",
        "salt.motion",
        "salt.natural",
        "salt.batch",
        "salt.cache",
        "salt.cache.index",
        "salt.cache.shards",
        "salt.cache.store",
        "salt.cache.legacy",
        "salt.cache.verify",
        "salt.data",
        "salt.clipspec",
        "salt.cache.build",
    ),
    "models": (
        "salt.teachers",
        "salt.models",
        "salt.assemble",
        "salt.losses",
        "salt.optim",
        "salt.perf",
    ),
    "training": (
        "salt.checkpoints",
        "salt.metrics",
        "salt.runlog",
        "salt.step",
        "salt.validate",
        "salt.memory",
        "salt.plan",
        "salt.train",
    ),
    "evaluation": (
        "salt.eval",
        "salt.eval.distill",
        "salt.eval.stats",
        "salt.eval.report",
        "salt.eval.heads",
        "salt.eval.tokens",
        "salt.eval.baseline",
        "salt.eval.temporal",
        "salt.eval.classify",
        "salt.eval.curve",
        "salt.runs",
        "salt.export",
        "salt.encoder",
        "salt.plots",
    ),
    "interfaces": (
        "salt.quickstart",
        "salt.doctor",
        "salt.cli.options",
        "salt.cli.train",
        "salt.cli.cache",
        "salt.cli.evaluate",
        "salt.cli.export",
        "salt.cli.runs",
        "salt.cli.quickstart",
        "salt.cli.info",
        "salt.cli.app",
        "salt.cli.parser",
        "salt.cli",
        "salt.cli.__main__",
    ),
}
LAYER_OF = {module: i for i, modules in enumerate(LAYERS.values()) for module in modules}
NAMES = list(LAYERS)


def module_name(path: Path) -> str:
    parts = path.relative_to(SALT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def salt_imports(path: Path, module: str | None = None) -> set[str]:
    """Every ``salt.*`` module a file imports, however it is spelled (``import salt.x``,
    ``from salt.x import y``, ``from salt import x``, ``from . import x``). The package root
    ``salt`` - its version and the lazy ``salt.VideoEncoder`` - is the public facade and
    belongs to no layer. ``module`` names the file's module (default: from its path)."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if base == "salt" or base.startswith("salt."):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in LAYER_OF}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("salt.")}
    return found - {"salt"}


# The one way out of salt/: `salt app` starts the viewer, which lives in apps/.
ALLOWED_OUTSIDE = {"salt.cli.app": {"salt_app.app"}}


def outside_imports(path: Path) -> set[str]:
    """Imports of the plugins and the viewer, which sit above every layer."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.split(".")[0].startswith("salt_")}
    return found


MODULES = sorted(SALT.rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in MODULES if module_name(p) not in (*LAYER_OF, "salt")]
    assert unplaced == [], f"add these to a layer here and in docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_layer_above_its_own(path):
    name = module_name(path)
    if name == "salt":
        return
    mine = LAYER_OF[name]
    upward = sorted(
        f"{other} ({NAMES[LAYER_OF[other]]})"
        for other in salt_imports(path)
        if LAYER_OF.get(other, -1) > mine
    )
    assert upward == [], f"{name} ({NAMES[mine]}) imports from a layer above: {upward}"
    outside = outside_imports(path) - ALLOWED_OUTSIDE.get(name, set())
    assert outside == set(), f"{name} imports plugins or the viewer: {sorted(outside)}"


def test_the_data_spec_alone_chooses_the_data():
    """The data layer's sources never reach for a cache: which cache a run reads (a
    ``cached:`` teacher's) is decided above it, in salt/assemble.py."""
    cache = {m for m in salt_imports(SALT / "data.py") if m.startswith("salt.cache")}
    assert cache == set(), f"salt/data.py imports {sorted(cache)}"


def test_the_import_walk_sees_every_spelling(tmp_path):
    text = "from salt import train\nfrom .models import x\nimport salt.cli\n"
    stand_in = tmp_path / "data.py"
    stand_in.write_text(text)
    assert salt_imports(stand_in, "salt.data") == {"salt.train", "salt.models", "salt.cli"}


def test_the_architecture_page_names_every_layer_and_module():
    page = (SALT.parent / "docs" / "architecture.md").read_text()
    for layer, modules in LAYERS.items():
        assert layer in page
        for module in modules:
            assert f"`{module.replace('.', '/')}" in page, module


# ------------------------------------------------------------------ the size of things

LONGEST_FUNCTION = 90  # lines, decorators and docstring included
CODE = [SALT, SALT.parent / "plugins", SALT.parent / "apps"]


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.name, node.end_lineno - start + 1


def test_no_function_is_longer_than_a_screenful_and_a_half():
    long = sorted(
        f"{path.relative_to(SALT.parent)}:{name} ({lines} lines)"
        for root in CODE
        for path in root.rglob("*.py")
        if "build" not in path.parts
        for name, lines in functions(path)
        if lines > LONGEST_FUNCTION
    )
    assert long == [], f"split these into named steps (at most {LONGEST_FUNCTION} lines): {long}"


def test_the_size_check_counts_decorators_and_bodies(tmp_path):
    stand_in = tmp_path / "m.py"
    stand_in.write_text("@decorator\ndef f():\n" + "    x = 1\n" * 90)
    assert dict(functions(stand_in)) == {"f": 92}


EVALUATION = LAYERS["evaluation"]


def classes_of(module: str) -> set[str]:
    path = SALT.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)}


ROLES = ("Probe", "Classifier", "Pooler", "Head", "Encoder", "Tokens", "Source")


def stem(name: str) -> str:
    """A class name less its role word: AttentivePooler and AttentiveClassifier are both
    an attentive something."""
    for role in ROLES:
        if name.endswith(role) and name != role:
            return name[: -len(role)]
    return name


def test_no_class_is_defined_twice_in_the_evaluation_layer():
    seen: dict[str, tuple[str, str]] = {}
    twice = []
    for module in EVALUATION:
        for name in sorted(classes_of(module)):
            key = stem(name)
            if key in seen and seen[key][1] != module:
                twice.append(f"{name} in {module} is named like {seen[key][0]} in {seen[key][1]}")
            seen.setdefault(key, (name, module))
    assert twice == [], f"one definition each, imported where needed: {twice}"


def test_the_likeness_check_sees_a_second_attentive_probe():
    assert stem("AttentivePooler") == stem("AttentiveClassifier") == stem("AttentiveProbe")
    assert stem("ClipEncoder") != stem("FrozenEncoder") and stem("Tokens") == "Tokens"


# ------------------------------------------------------ "where each concept lives", checked

PATH_TOKEN = re.compile(r"^(salt|plugins|apps)/[\w/.]*$")
NAME_TOKEN = re.compile(r"^([A-Za-z_]\w*)(\.\w+)*(\(.*\))?$")
FILE_TOKEN = re.compile(r"\.(json|jsonl|pt|safetensors|png|md|toml|yaml)$")


def defined_names(path: Path) -> set[str]:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def concept_rows() -> list[tuple[str, str]]:
    page = (SALT.parent / "docs" / "architecture.md").read_text()
    table = page.split("## Where each concept lives", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return [(r[0].strip("| "), r[1].strip("| ")) for r in rows[2:]]


@pytest.mark.parametrize("concept, where", concept_rows(), ids=lambda v: v[:40])
def test_each_concept_is_where_the_page_says(concept, where):
    """Every path in a row exists, and each code name is defined in its file: the path
    named right after it (`` `Name` in `path` ``), else the last path before it."""
    path = None
    for found in re.finditer(r"`([^`]+)`", where):
        token = found.group(1)
        if PATH_TOKEN.match(token):
            path = SALT.parent / token.rstrip("/")
            assert path.exists(), f"{concept}: {token} does not exist"
            continue
        if " " in token:
            path = None  # a command: the names after it belong to no file
            continue
        match = NAME_TOKEN.match(token)
        plain = token.islower() and "(" not in token and ("_" not in token or "." in token)
        if not match or plain or FILE_TOKEN.search(token):
            continue  # a spec, a config field (train.eval_every) or a file name, not code
        after = re.match(r" in `((?:salt|plugins|apps)/[^`]+)`", where[found.end() :])
        home = SALT.parent / after.group(1).rstrip("/") if after else path
        if home is None:
            continue
        assert match.group(1) in defined_names(home), (
            f"{concept}: `{match.group(1)}` is not defined in {home.relative_to(SALT.parent)}"
        )


def test_the_concept_check_reads_the_table():
    concepts = dict(concept_rows())
    for needed in (
        "mask generation",
        "the loss",
        "teacher loading",
        "checkpoint save and resume",
        "the cache shard format",
        "`VideoEncoder` pooling",
        "a folder of videos as a source",
        "the LeRobot reader",
        "frozen evaluation (attentive / linear probes)",
        "the attentive probe",
        "a `salt` command's code",
    ):
        assert needed in concepts, needed
