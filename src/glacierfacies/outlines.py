"""Glacier outlines: reading them and rasterising them, the one home of raster<->vector work."""

from __future__ import annotations

from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.scenes.grid import Grid, _first_line


def _read_outlines(outlines_path, grid: Grid):
    """Outlines that intersect `grid`, in its CRS, in file (FID) order; only features whose
    bounding box meets the grid are read (GeoPackage/shapefile spatial index)."""
    import geopandas as gpd
    import pyogrio
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    p = Path(outlines_path)
    if not p.exists():
        raise InputError(p, "file not found")
    try:
        crs = pyogrio.read_info(p).get("crs")
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(p, f"cannot read outlines ({_first_line(exc)})") from None
    bbox = None
    if crs:
        try:  # the grid's box in the file CRS, densified and widened a little
            w, s, e, n = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
            pad = 1e-3 * max(e - w, n - s)
            bbox = (w - pad, s - pad, e + pad, n + pad)
        except Exception:  # noqa: BLE001 - no bbox filter then; the exact test follows
            bbox = None
    try:
        gdf = gpd.read_file(p, bbox=bbox, engine="pyogrio", fid_as_index=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(p, f"cannot read outlines ({_first_line(exc)})") from None
    if gdf.crs is None:
        raise InputError(p, "outlines have no CRS")
    gdf = gdf.sort_index()
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    inter = gdf.geometry.intersects(box(*grid.bounds))
    gdf = gdf[inter].reset_index(drop=True)
    if gdf.empty:
        raise InputError(p, "no outline intersects the scene")
    return gdf

