"""Pure computation stays importable with torch and numpy alone (as on a bare GPU box)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE_MODULES = (
    "glacierfacies.classes",
    "glacierfacies.features",
    "glacierfacies.errors",
    "glacierfacies.terrain",
    "glacierfacies.terrain_torch",
    "glacierfacies.smoothing",
    "glacierfacies.model.network",
    "glacierfacies.mapping.inference",
    "glacierfacies.mapping.points",
    "glacierfacies.model.builtin",
    "glacierfacies.data.normalisation",
    "glacierfacies.training.metrics",
    "glacierfacies.training.calibration",
    "glacierfacies.training.cleaning",
    "glacierfacies.products.massbalance",
    "glacierfacies.products.fitting",
)
BLOCKED = ("rasterio", "geopandas", "pandas", "dask", "distributed", "pyogrio", "shapely",
           "rioxarray", "xarray", "matplotlib")

_BLOCKER = f"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError(f"blocked: {{name}}")
        return None
sys.meta_path.insert(0, _Block())
"""


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_without_io_libraries(module):
    code = _BLOCKER + f"import {module}\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-800:]


def test_blocker_really_blocks():
    proc = subprocess.run([sys.executable, "-c", _BLOCKER + "import pandas"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "blocked: pandas" in proc.stderr
