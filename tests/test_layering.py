"""The import graph follows the data flow: each package imports only the layers below it.

The table is the contract of docs/architecture.md; a new dependency is a design change, so
it changes here and there together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "glacierfacies"
GROUND = {"__version__", "classes", "features", "errors", "_io", "_testing", "layout", "tasks",
          "terrain", "terrain_torch", "smoothing", "progress"}
ALLOWED: dict[str, set[str]] = {
    "scenes": GROUND,
    "outlines": GROUND | {"scenes"},
    "dem": GROUND | {"scenes"},
    "terrain_context": GROUND | {"scenes", "outlines"},
    "stack": GROUND | {"scenes", "outlines", "terrain_context", "dem"},
    "data": GROUND | {"scenes", "stack", "outlines", "model"},
    "model": GROUND | {"data"},
    "training": GROUND | {"data", "model"},
    "stac": GROUND | {"scenes"},  # STAC out: items and catalogs of maps (issue 22)
    "mapping": GROUND | {"scenes", "stack", "outlines", "data", "model", "stac"},
    "products": GROUND | {"outlines", "scenes"},
    "sample": GROUND | {"outlines", "scenes"},
    "examples": GROUND | {"outlines", "scenes"},
    "workflow": GROUND | {"scenes", "stack", "outlines", "dem", "data", "model", "training",
                          "mapping", "products", "sample", "examples", "stac"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("glacierfacies."):
                out.add(node.module.split(".")[1])
            elif node.module == "glacierfacies":
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names
                       if a.name.startswith("glacierfacies."))
    return out


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    return rel.parts[0]


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path):
    unit = _unit(path)
    if unit in ("cli", "__init__", "__main__"):
        return
    used = _imports(path) - {unit}
    allowed = ALLOWED.get(unit, GROUND)
    assert used <= allowed, f"{path.relative_to(SRC)} imports {sorted(used - allowed)}"


def test_mapping_never_imports_training():
    for path in (SRC / "mapping").rglob("*.py"):
        assert "training" not in _imports(path), path
