"""The layers of docs/architecture.md: no module of salt/ imports from a layer above its own.

Every import counts, at the top of a file or inside a function, so a lazy import cannot
hide an upward dependency.
"""

from __future__ import annotations

import ast
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
    ),
    "data": (
        "salt.decoders",
        "salt.lerobot",
        "salt.video",
        "salt.synthetic",
        "salt.motion",
        "salt.batch",
        "salt.cache",
        "salt.cache.index",
        "salt.cache.shards",
        "salt.cache.store",
        "salt.cache.legacy",
        "salt.cache.verify",
        "salt.data",
        "salt.cache.build",
    ),
    "models": ("salt.teachers", "salt.models", "salt.losses", "salt.optim", "salt.perf"),
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
        "salt.distill",
        "salt.probes",
        "salt.classify",
        "salt.curve",
        "salt.runs",
        "salt.export",
        "salt.encoder",
        "salt.plots",
    ),
    "interfaces": ("salt.quickstart", "salt.doctor", "salt.cli"),
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
ALLOWED_OUTSIDE = {"salt.cli": {"salt_app.app"}}


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
