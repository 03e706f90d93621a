"""Find scenes in a folder and read any supported product: the entry points of `scenes`."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from glacierfacies.errors import InputError
from glacierfacies.scenes.base import Scene, check_plausible
from glacierfacies.scenes.generic import _is_stack, _read_generic
from glacierfacies.scenes.grid import TARGET_RES_M, Grid, _grid_of_files, _open_raster
from glacierfacies.scenes.hls import _hls_files, _read_hls, find_granules, is_hls
from glacierfacies.scenes.landsat import (
    _find_mtl,
    _is_landsat_tar,
    _landsat_files,
    _landsat_product,
    _landsat_source,
    _mtl_get,
    _parse_mtl,
    _read_landsat,
)
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.sentinel2 import (
    _is_s2_band_folder,
    _is_safe,
    _read_s2,
    _s2_files,
    _s2_tree,
    sentinel2,
)

_TAR = (".tar", ".tar.gz", ".tgz")

_NOT_A_SCENE = ("not a recognised scene (.SAFE or .SAFE.zip, S2 band folder, Landsat folder, "
                "_MTL.txt/.xml or .tar, HLS granule, or GeoTIFF)")


def find_scenes(directory: str | os.PathLike) -> list[Path]:
    """Scenes under `directory` (sorted): Sentinel-2 `.SAFE` folders and `.SAFE.zip` files,
    folders of S2 band files, Landsat folders (with an `_MTL.txt`/`.xml`) and `.tar` files,
    HLS granules (a folder of one granule, else one band file per granule), and GeoTIFF
    stacks of >= 6 bands."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(root, "scene folder not found")
    found: list[Path] = []

    def walk(d: Path) -> None:
        if _is_safe(d) or _find_mtl(d) is not None:
            found.append(d)
            return
        if is_hls(d):
            granules = find_granules(d)
            if len(granules) == 1:
                found.append(d)
            else:
                found.extend(min(g.files.values()) for g in granules)
            return
        if _is_s2_band_folder(d):
            found.append(d)
            return
        for q in sorted(d.iterdir()):
            if q.is_dir():
                walk(q)
            elif q.suffix.lower() in (".tif", ".tiff") and _is_stack(q):
                found.append(q)
            elif _is_safe(q) or _is_landsat_tar(q):
                found.append(q)

    walk(root)
    return sorted(found)


def _is_tar(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_TAR)


def expand_scenes(patterns: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Scene paths from paths and glob patterns (``*.SAFE``, ``~`` expanded), in the order
    given, each pattern's matches sorted, duplicates dropped. A STAC ItemCollection or
    catalog gives its items (``FILE.json#ITEM_ID`` / the items' files; `scenes.stac`).

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
        elif _is_stac_ref(pattern):  # FILE.json#ITEM_ID
            hits = [pattern]
        else:
            raise InputError(given, "scene not found")
        for hit in map(Path, _stac_expanded(hits)):
            if hit not in out:
                out.append(hit)
    return out


def _is_stac_ref(text: str) -> bool:
    from glacierfacies.scenes.stac import is_stac

    return is_stac(text)


def _stac_expanded(hits: list[str]) -> list[str]:
    """Each STAC ItemCollection / catalog among `hits` replaced by its items."""
    from glacierfacies.scenes.stac import expand_stac, is_stac

    out: list[str] = []
    for h in hits:
        out.extend(expand_stac(h) if str(h).lower().endswith(".json") and is_stac(h) else [h])
    return out


def read_scene(
    path: str | os.PathLike,
    grid: Any = None,
    band_map: dict[str, int] | None = None,
    scale: float | None = None,
    offset: float | None = None,
    options: ReadOptions | None = None,
) -> Scene:
    """Read one scene (S2 .SAFE / .SAFE.zip / band folder, Landsat C2 L2 folder / MTL / .tar,
    HLS v2.0 granule, GeoTIFF stack) to 6-band float32 surface reflectance on a 10 m grid (or
    `grid`: a Grid, Scene, FeatureStack or raster path), with the product's own masks applied.

    `options` (a `ReadOptions`) says how; `band_map`/`scale`/`offset` are shorthands for its
    GeoTIFF-stack fields. Input whose median blue/green/red reflectance is implausible is
    refused with a one-line InputError naming the file (see `check_plausible`).
    """
    from glacierfacies.scenes.stac import is_stac, read_stac

    p = Path(path)  # a STAC item JSON (or FILE.json#ITEM_ID) is read by scenes.stac
    stac = is_stac(path)
    if not stac and not p.exists():
        raise InputError(p, "scene not found")
    opts = options or ReadOptions()
    if band_map is not None or scale is not None or offset is not None:
        import dataclasses

        opts = dataclasses.replace(
            opts, band_map=band_map if band_map is not None else opts.band_map,
            scale=scale if scale is not None else opts.scale,
            offset=offset if offset is not None else opts.offset)
    if grid is None and opts.resolution_m != TARGET_RES_M:
        grid = scene_grid(p, opts.resolution_m)
    target = None if grid is None else Grid.of(grid)
    if stac:
        scene = read_stac(path, target, opts)
    elif _is_safe(p):
        scene = _read_s2(p, target, safe=True, options=opts)
    elif _is_tar(p) or _find_mtl(p) is not None:
        scene = _read_landsat(_landsat_source(p), target, opts)
    elif is_hls(p):
        scene = _read_hls(p, target, opts)
    elif p.is_dir() and _is_s2_band_folder(p):
        scene = _read_s2(p, target, safe=False, options=opts)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        scene = _read_generic(p, target, opts)
    else:
        raise InputError(p, _NOT_A_SCENE)
    if opts.fill_gaps_px:
        from glacierfacies.scenes.gaps import fill_gaps

        scene = fill_gaps(scene, opts.fill_gaps_px)
    if not scene.valid.any():
        raise InputError(p, "scene has no valid pixel (all nodata, saturated or masked on the "
                            "grid)")
    check_plausible(scene.reflectance, scene.valid, p)
    return scene


def scene_grid(path: str | os.PathLike, resolution_m: float = TARGET_RES_M) -> Grid:
    """The grid `read_scene(path)` would use (10 m, or `ReadOptions.resolution_m`), from the
    band files' headers only (no pixels read): lets block-wise work plan blocks cheaply."""
    from glacierfacies.scenes.stac import is_stac, stac_files

    p = Path(path)
    if is_stac(path):
        return _grid_of_files(stac_files(path).files, resolution_m)
    if not p.exists():
        raise InputError(p, "scene not found")
    if _is_safe(p):
        files = _s2_files(_s2_tree(p), sentinel2(), safe=True)
    elif _is_tar(p) or _find_mtl(p) is not None:
        tree, mtl = _landsat_source(p)
        _, prefix, _, spec, _ = _landsat_product(tree, mtl)
        files = _landsat_files(tree, mtl, prefix, spec)
    elif is_hls(p):
        files = _hls_files(p)
    elif p.is_dir() and _is_s2_band_folder(p):
        files = _s2_files(_s2_tree(p), sentinel2(), safe=False)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        files = [(p, 1)]
    else:
        raise InputError(p, _NOT_A_SCENE)
    return _grid_of_files(files, resolution_m)


def scene_ids(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The scene_id each path would get from read_scene, without reading pixels."""
    import re

    from glacierfacies.scenes.hls import _granule
    from glacierfacies.scenes.stac import is_stac, stac_scene_id

    out = []
    for given in paths:
        p = Path(given)
        if is_stac(given):
            out.append(stac_scene_id(given))
        elif _is_safe(p) or (p.is_dir() and not is_hls(p) and _find_mtl(p) is None
                           and _is_s2_band_folder(p)):
            name = _s2_tree(p).product_name if p.is_file() else p.name
            out.append(name[:-5] if name.upper().endswith(".SAFE") else name)
        elif _is_tar(p) or _find_mtl(p) is not None:
            tree, mtl = _landsat_source(p)
            groups = _parse_mtl(tree.display(mtl), tree.read_text(mtl))
            out.append(
                _mtl_get(groups, "LANDSAT_PRODUCT_ID")
                or re.sub(r"_MTL\.(txt|xml)$", "", mtl.rsplit("/", 1)[-1], flags=re.I)
            )
        elif is_hls(p):
            out.append(_granule(p).scene_id)
        else:
            with _open_raster(p) as src:
                out.append(src.tags().get("SCENE_ID", p.stem))
    return out
