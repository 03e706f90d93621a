"""Glacier outlines: read them, rasterise them, vectorise masks; the one home of
raster<->vector work (after geoutils' `interface/rasterization.py`).

Every glacier mask or index in the package (feature stack, whole-scene and block-wise
mapping, product tables, the built-in sample) comes from `rasterise_outlines`, so the same
outlines on the same grid give the same pixels wherever they are burned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glacierfacies.errors import InputError
from glacierfacies.scenes.grid import Grid, _first_line

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "ID_COLUMNS",
    "find_id_column",
    "polygonise_mask",
    "rasterise_outlines",
    "read_outlines",
]

#: Columns that name glaciers, tried in this order when no id column is given.
ID_COLUMNS = ("glacier", "rgi_id", "RGIId", "name", "Name", "wgms_id")


def read_outlines(path: str | os.PathLike, *, grid: Any = None) -> gpd.GeoDataFrame:
    """Glacier outlines of a vector file, in file (FID) order, empty geometries dropped.

    With `grid` (a Grid, or anything `Grid.of` takes): only the outlines that intersect it,
    reprojected to its CRS, reading only features whose bounding box meets it (GeoPackage /
    shapefile spatial index), so a huge inventory costs what one scene needs; an
    InputError naming the file when none does. Without: every outline, in the file's CRS.
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputError(p, "outline file not found")
    target = None if grid is None else Grid.of(grid)
    bbox = None if target is None else _file_bbox(p, target)
    try:
        gdf = gpd.read_file(p, bbox=bbox, engine="pyogrio", fid_as_index=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(p, f"cannot read outlines ({_first_line(exc)})") from None
    if target is None and gdf.empty:
        raise InputError(p, "no outlines")
    if gdf.crs is None:
        raise InputError(p, "outlines have no CRS")
    gdf = gdf.sort_index()
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = _checked_geometries(gdf, p)
    if target is None:
        return gdf.reset_index(drop=True)
    from shapely.geometry import box

    if gdf.crs != target.crs:
        gdf = gdf.to_crs(target.crs)
    gdf = gdf[gdf.geometry.intersects(box(*target.bounds))].reset_index(drop=True)
    if gdf.empty:
        raise InputError(p, "no outline intersects the scene")
    return gdf


def _ids(gdf: Any, rows: Any, limit: int = 5) -> str:
    """The ids (first ID_COLUMNS column present, else the file's feature ids) of `rows`."""
    col = next((c for c in ID_COLUMNS if c in gdf.columns), None)
    values = (gdf.loc[rows, col] if col else gdf.index[rows]).tolist()
    more = f" ... ({len(values)} in all)" if len(values) > limit else ""
    return f"{col or 'fid'} {', '.join(map(str, values[:limit]))}{more}"


def _checked_geometries(gdf: Any, path: Path) -> Any:
    """Polygons only (an InputError naming the ids of other geometries), invalid ones
    repaired with shapely's `make_valid` (its polygonal part), counted in
    `gdf.attrs["repaired"]` and a warning that names them."""
    import warnings

    from shapely import make_valid
    from shapely.geometry import MultiPolygon, Polygon

    types = gdf.geometry.geom_type
    other = ~types.isin(["Polygon", "MultiPolygon"])
    if other.any():
        kinds = ", ".join(sorted(set(types[other])))
        raise InputError(path, f"outlines must be polygons: {int(other.sum())} {kinds} "
                               f"geometr{'y' if other.sum() == 1 else 'ies'} ({_ids(gdf, other)})")
    invalid = ~gdf.geometry.is_valid
    gdf.attrs["repaired"] = int(invalid.sum())
    if invalid.any():
        def polygonal(geom: Any) -> Any:
            fixed = make_valid(geom)
            if isinstance(fixed, (Polygon, MultiPolygon)):
                return fixed
            parts = [g for g in getattr(fixed, "geoms", [])
                     if isinstance(g, (Polygon, MultiPolygon))]
            polys = [q for g in parts for q in (g.geoms if isinstance(g, MultiPolygon) else [g])]
            return MultiPolygon(polys) if polys else None

        gdf = gdf.copy()
        gdf.loc[invalid, gdf.geometry.name] = gdf.geometry[invalid].map(polygonal)
        lost = invalid & (gdf.geometry.isna() | gdf.geometry.is_empty)
        if lost.any():
            raise InputError(path, f"invalid outline(s) with no area after repair "
                                   f"({_ids(gdf, lost)})")
        warnings.warn(f"{path}: {int(invalid.sum())} invalid outline geometr"
                      f"{'y' if invalid.sum() == 1 else 'ies'} repaired with make_valid "
                      f"({_ids(gdf, invalid)})", stacklevel=2)
    return gdf


def _file_bbox(path: Path, grid: Grid) -> tuple[float, float, float, float] | None:
    """The grid's box in the file's CRS, densified and widened a little; None (no filter,
    the exact intersection test follows) when the file has no CRS or the box cannot be
    transformed."""
    import pyogrio
    from rasterio.warp import transform_bounds

    try:
        crs = pyogrio.read_info(path).get("crs")
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(path, f"cannot read outlines ({_first_line(exc)})") from None
    if not crs:
        return None
    try:
        w, s, e, n = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - rasterio/pyproj raise several types
        return None
    pad = 1e-3 * max(e - w, n - s)
    return (w - pad, s - pad, e + pad, n + pad)


def find_id_column(
    outlines: gpd.GeoDataFrame, *, path: str | os.PathLike | None = None,
    id_column: str | None = None,
) -> str:
    """The column that names glaciers: `id_column`, else the first of `ID_COLUMNS` present;
    an InputError naming `path` (the outline file) when there is none or when two outlines
    share an id (they would give two rows of one glacier)."""
    col = id_column or next((c for c in ID_COLUMNS if c in outlines.columns), None)
    if col is None or col not in outlines.columns:
        raise InputError(path, f"no glacier id column (tried {', '.join(ID_COLUMNS)}); "
                               "pass --id-column")
    ids = outlines[col]
    dup = ids.notna() & ids.duplicated(keep=False)
    if dup.any():
        raise InputError(path, f"duplicate glacier id(s) in column {col}: "
                               f"{', '.join(map(str, sorted(set(ids[dup].astype(str)))[:5]))}; "
                               "each outline needs its own id (dissolve the parts of a glacier "
                               "into one multipolygon, or pass another --id-column)")
    return col


def rasterise_outlines(
    grid: Any,
    outlines: gpd.GeoDataFrame | gpd.GeoSeries | Sequence[Any],
    *,
    buffer_m: float = 0.0,
    as_mask: bool = False,
    all_touched: bool = False,
) -> np.ndarray:
    """Burn outlines onto `grid` (a Grid, or anything `Grid.of` takes): the glacier index.

    Returns int32 (H, W): 0 off glacier, i where pixel centres lie in the i-th outline
    (`outlines.iloc[i - 1]`; a later outline wins where outlines overlap), or, with
    `as_mask`, a bool (H, W) mask of all of them. `buffer_m` > 0 adds the pixels within
    `buffer_m` metres (grid CRS units) of each outline, so a buffer never removes a pixel
    (in the index, an outline's own pixels keep its number over a neighbour's ring).
    `all_touched` burns every pixel a shape touches (GDAL's option), not only centres.
    Outlines with a CRS other than the grid's are reprojected; a plain sequence of shapely
    geometries is taken to be in the grid CRS; None / empty geometries burn nothing but
    keep their number.
    """
    from rasterio.features import rasterize

    g = Grid.of(grid)
    geoms = _geometries(outlines, g)
    shapes: list[tuple[Any, int]] = []
    if buffer_m > 0:
        import geopandas as gpd

        rings = gpd.GeoSeries(geoms).buffer(buffer_m)
        shapes += [(r, i) for i, r in enumerate(rings, start=1) if _burnable(r)]
    shapes += [(geom, i) for i, geom in enumerate(geoms, start=1) if _burnable(geom)]
    dtype = np.uint8 if as_mask else np.int32
    if not shapes:
        out = np.zeros(g.shape, dtype)
    else:
        out = rasterize(
            ((geom, 1) for geom, _ in shapes) if as_mask else shapes,
            out_shape=g.shape, transform=g.transform, fill=0, all_touched=all_touched,
            dtype=dtype,
        )
    return out.view(bool) if as_mask else out


def _geometries(outlines: Any, grid: Grid) -> list[Any]:
    """The outlines as a list of shapely geometries in the grid CRS (None kept in place)."""
    crs = getattr(outlines, "crs", None)
    if crs is not None and grid.crs is not None and crs != grid.crs:
        outlines = outlines.to_crs(grid.crs)
    geometry = getattr(outlines, "geometry", outlines)
    return list(geometry)


def _burnable(geom: Any) -> bool:
    return geom is not None and not geom.is_empty


def polygonise_mask(mask: np.ndarray, transform: Any) -> Any:
    """The union of the pixel polygons where `mask` is True (shapely geometry, in the
    transform's CRS): rasterising it on the same grid gives `mask` back."""
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    mask = np.asarray(mask, dtype=bool)
    polys = [shape(geom) for geom, _ in shapes(mask.astype(np.uint8), mask=mask,
                                                transform=transform)]
    return unary_union(polys)
