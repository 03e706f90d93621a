"""Find scenes in a folder and read any supported product: the entry points of `scenes`."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from glacierfacies.errors import InputError
from glacierfacies.scenes.base import Scene
from glacierfacies.scenes.generic import _is_stack, _read_generic
from glacierfacies.scenes.grid import Grid, _grid_of_files, _open_raster
from glacierfacies.scenes.landsat import (
    _find_mtl,
    _landsat_files,
    _landsat_product,
    _mtl_get,
    _parse_mtl,
    _read_landsat,
)
from glacierfacies.scenes.sentinel2 import (
    _is_s2_band_folder,
    _is_safe,
    _read_s2,
    _s2_files,
    sentinel2,
)


def find_scenes(directory: str | os.PathLike) -> list[Path]:
    """Scenes under `directory` (sorted): Sentinel-2 `.SAFE` folders, folders of S2 band files,
    Landsat folders (with an `_MTL.txt`/`.xml`), and GeoTIFF stacks of >= 6 bands."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(root, "scene folder not found")
    found: list[Path] = []

    def walk(d: Path) -> None:
        if _is_safe(d) or _find_mtl(d) is not None or _is_s2_band_folder(d):
            found.append(d)
            return
        for q in sorted(d.iterdir()):
            if q.is_dir():
                walk(q)
            elif q.suffix.lower() in (".tif", ".tiff") and _is_stack(q):
                found.append(q)

    walk(root)
    return sorted(found)


def expand_scenes(patterns: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Scene paths from paths and glob patterns (``*.SAFE``, ``~`` expanded), in the order
    given, each pattern's matches sorted, duplicates dropped.

    InputError naming the pattern when a glob matches nothing or a plain path is missing.
    """
    if isinstance(patterns, str | os.PathLike):
        patterns = [patterns]
    out: list[Path] = []
    for given in patterns:
        pattern = os.path.expanduser(os.fspath(given))
        if any(ch in pattern for ch in "*?["):
            hits = sorted(glob.glob(pattern))
            if not hits:
                raise InputError(given, "no scene matches this pattern")
        elif os.path.exists(pattern):
            hits = [pattern]
        else:
            raise InputError(given, "scene not found")
        for hit in map(Path, hits):
            if hit not in out:
                out.append(hit)
    return out


def read_scene(
    path: str | os.PathLike,
    grid: Any = None,
    band_map: dict[str, int] | None = None,
    scale: float | None = None,
    offset: float | None = None,
) -> Scene:
    """Read one scene (S2 .SAFE / S2 band folder / Landsat C2 L2 folder or MTL / GeoTIFF
    stack) to 6-band float32 surface reflectance on a 10 m grid (or `grid`: a Grid, Scene,
    FeatureStack or raster path). `band_map`/`scale`/`offset` are for plain GeoTIFFs."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "scene not found")
    target = None if grid is None else Grid.of(grid)
    if _is_safe(p):
        scene = _read_s2(p, target, safe=True)
    elif (mtl := _find_mtl(p)) is not None:
        scene = _read_landsat(mtl, target)
    elif p.is_dir() and _is_s2_band_folder(p):
        scene = _read_s2(p, target, safe=False)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        scene = _read_generic(p, target, band_map, scale, offset)
    else:
        raise InputError(
            p,
            "not a recognised scene (.SAFE, S2 band folder, Landsat folder "
            "with _MTL.txt/.xml, or GeoTIFF)",
        )
    if not scene.valid.any():
        raise InputError(p, "scene has no valid pixel (all nodata or saturated on the grid)")
    return scene


def scene_grid(path: str | os.PathLike) -> Grid:
    """The 10 m grid `read_scene(path)` would use, from the band files' headers only (no
    pixels read): lets block-wise mapping plan blocks of a huge scene cheaply."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "scene not found")
    if _is_safe(p) or (p.is_dir() and _find_mtl(p) is None and _is_s2_band_folder(p)):
        files = _s2_files(p, sentinel2(), safe=_is_safe(p))
    elif (mtl := _find_mtl(p)) is not None:
        _, prefix, _, spec = _landsat_product(mtl)
        files = _landsat_files(mtl, prefix, spec)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        files = [(p, 1)]
    else:
        raise InputError(
            p,
            "not a recognised scene (.SAFE, S2 band folder, Landsat folder "
            "with _MTL.txt/.xml, or GeoTIFF)",
        )
    return _grid_of_files(files)


def scene_ids(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The scene_id each path would get from read_scene, without reading pixels."""
    out = []
    for p in map(Path, paths):
        if _is_safe(p) or _is_s2_band_folder(p):
            out.append(p.name[:-5] if p.name.upper().endswith(".SAFE") else p.name)
        elif (mtl := _find_mtl(p)) is not None:
            groups = _parse_mtl(mtl)
            out.append(
                _mtl_get(groups, "LANDSAT_PRODUCT_ID")
                or re.sub(r"_MTL\.(txt|xml)$", "", mtl.name, flags=re.I)
            )
        else:
            with _open_raster(p) as src:
                out.append(src.tags().get("SCENE_ID", p.stem))
    return out

