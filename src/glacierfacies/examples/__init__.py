"""Real example data shipped with the package (see each folder's README.md for attribution).

`example_path("athabasca")` is the folder of the Athabasca Glacier HLS clips, DEM and outline.
"""

from __future__ import annotations

from pathlib import Path

from glacierfacies.errors import InputError

__all__ = ["EXAMPLES", "example_path"]

EXAMPLES = ("athabasca",)


def example_path(name: str = "athabasca") -> Path:
    """The folder of example `name` inside the installed package."""
    if name not in EXAMPLES:
        raise InputError(None, f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    path = Path(__file__).resolve().parent / name
    if not path.is_dir():
        raise InputError(path, "example data not installed (package-data missing)")
    return path
