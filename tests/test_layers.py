"""Imports point down the layers, so that a module can be read (and tested) knowing only
what is below it: errors, vocabulary, checks, _io <- loading <- adapters <- tokenization,
tiers, analysis, training <- cli, notebook. Every import counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

UTILS = Path(__file__).resolve().parents[1] / "utils"
LAYERS = {
    "errors": 0,
    "vocabulary": 0,
    "checks": 0,
    "_io": 0,
    "_frames": 0,
    "loading": 1,
    "examples": 1,
    "adapters": 2,
    "tokenization": 3,
    "tiers": 3,
    "analysis": 3,
    "training": 3,
    "cli": 4,
    "commands": 4,
    "__main__": 4,
    "notebook": 4,
}


def modules() -> list[Path]:
    """The package's own modules; the embedded example models are user code, not layers."""
    return [p for p in UTILS.rglob("*.py") if not (p.parent != UTILS / "examples" and UTILS / "examples" in p.parents)]


def component(path: Path) -> str | None:
    """The top-level part of utils a file belongs to (None for utils/__init__.py, the
    lazy public facade that names everything)."""
    rel = path.relative_to(UTILS).parts
    if rel == ("__init__.py",):
        return None
    return rel[0].removesuffix(".py")


def imported_components(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.level == 0
            else []
        )
        for name in names:
            parts = name.split(".")
            if parts[0] == "utils" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_component_has_a_layer():
    unknown = {component(p) for p in modules()} - set(LAYERS) - {None}
    assert not unknown, f"add {sorted(unknown)} to LAYERS in tests/test_layers.py"


def test_imports_point_down_the_layers():
    upward = []
    for path in modules():
        own = component(path)
        if own is None:
            continue
        for other in imported_components(path):
            if other in LAYERS and LAYERS[other] > LAYERS[own]:
                upward.append(
                    f"{path.relative_to(UTILS.parent)} imports utils.{other} "
                    f"(layer {LAYERS[other]} above {LAYERS[own]})"
                )
    assert not upward, "\n".join(upward)


def test_no_two_components_import_each_other():
    edges = {}
    for path in modules():
        own = component(path)
        if own is not None:
            edges.setdefault(own, set()).update(imported_components(path) - {own})
    cycles = sorted(f"{a} <-> {b}" for a, deps in edges.items() for b in deps if a < b and a in edges.get(b, set()))
    assert not cycles, cycles


def test_imports_inside_functions_are_seen(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import utils.errors\n\ndef f():\n    from utils.cli import main\n    from . import sibling\n")
    assert imported_components(source) == {"errors", "cli"}
