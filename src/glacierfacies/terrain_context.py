"""Scene-wide terrain settings: how far shadows reach, how much DEM and outline context a
scene or block needs, and the sun azimuth on the grid (grid convergence).

Computed once per scene and shared by every block of it, so that block-wise features equal
whole-scene features exactly (`stack.build_feature_stack`, `mapping`, `data.build`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from glacierfacies import terrain
from glacierfacies.errors import InputError
from glacierfacies.outlines import read_outlines
from glacierfacies.scenes.base import Scene
from glacierfacies.scenes.grid import Grid, _open_raster

__all__ = ["TERRAIN_MARGIN_CAP_M", "TERRAIN_MARGIN_M", "TerrainContext", "grid_convergence_deg",
           "terrain_context"]

#: Floor of the DEM margin (metres) around a scene or block for slope / shadows at edges.
TERRAIN_MARGIN_M = 1000.0
#: Cap of the cast-shadow reach and of the proximity margin (metres): a block then reads at
#: most this much terrain beyond its edge; shadows longer than it are not cast (stated in
#: the tags SHADOW_REACH_M / TERRAIN_MARGIN_M).
TERRAIN_MARGIN_CAP_M = 10_000.0


@dataclass(frozen=True)
class TerrainContext:
    """Scene-wide terrain settings, the same for the whole scene and every block of it, so
    that block-wise features equal whole-scene features exactly.

    `shadow_reach_m` = min(cap, relief / tan(sun elevation)) is how far shadows are
    marched; `margin_m` is the DEM/outline margin read around a scene or block (the reach,
    the largest inside distance of a glacier for proximity, and the 3x3 kernel);
    `sun_azimuth_grid_deg` is the sun azimuth from grid north (true azimuth + the angle of
    true north in the grid, the grid convergence at the scene centre).
    """

    relief_m: float
    sun_azimuth_deg: float
    sun_elevation_deg: float
    convergence_deg: float
    shadow_reach_m: float
    proximity_margin_m: float

    @property
    def sun_azimuth_grid_deg(self) -> float:
        return (self.sun_azimuth_deg + self.convergence_deg) % 360.0

    @property
    def margin_m(self) -> float:
        return max(TERRAIN_MARGIN_M, self.shadow_reach_m, self.proximity_margin_m)

    def tags(self) -> dict[str, str]:
        return {"TERRAIN_MARGIN_M": f"{self.margin_m:.1f}",
                "SHADOW_REACH_M": f"{self.shadow_reach_m:.1f}",
                "SHADOW_REACH_CAP_M": f"{TERRAIN_MARGIN_CAP_M:.0f}",
                "DEM_RELIEF_M": f"{self.relief_m:.1f}",
                "GRID_CONVERGENCE_DEG": f"{self.convergence_deg:.4f}",
                "SUN_AZIMUTH_GRID_DEG": f"{self.sun_azimuth_grid_deg:.4f}"}


def grid_convergence_deg(grid: Grid) -> float:
    """Azimuth of true north measured from grid north at the grid centre (degrees, > 0 when
    true north points east of grid north); 0 for a geographic CRS."""
    from pyproj import CRS, Transformer

    crs = CRS.from_user_input(grid.crs)
    if crs.is_geographic:
        return 0.0
    w, s, e, n = grid.bounds
    x, y = (w + e) / 2, (s + n) / 2
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    from_ll = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    lon, lat = to_ll.transform(x, y)
    x2, y2 = from_ll.transform(lon, lat + 1e-3)
    return math.degrees(math.atan2(x2 - x, y2 - y))


def _dem_relief(dem_path, grid: Grid, margin_m: float) -> float:
    """max - min of the DEM under `grid` widened by `margin_m`, read by strips at the DEM's
    own resolution (exact, bounded RAM)."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    w, s, e, n = grid.bounds
    with _open_raster(dem_path) as src:
        if src.crs is None:
            raise InputError(dem_path, "DEM has no CRS")
        b = transform_bounds(grid.crs, src.crs, w - margin_m, s - margin_m, e + margin_m,
                             n + margin_m)
        d = src.bounds
        if b[0] >= d.right or b[2] <= d.left or b[1] >= d.top or b[3] <= d.bottom:
            raise InputError(dem_path, "DEM does not overlap the scene")
        win = from_bounds(*b, transform=src.transform).round_offsets().round_lengths()
        win = win.intersection(Window(0, 0, src.width, src.height))
    step = max(1, (1 << 22) // max(int(win.width), 1))
    strips = [(r, min(step, int(win.row_off + win.height) - r))
              for r in range(int(win.row_off), int(win.row_off + win.height), step)]

    def strip_range(strip: tuple[int, int]) -> tuple[float, float]:
        r, h = strip
        with _open_raster(dem_path) as ds:  # one dataset per thread
            try:
                z = ds.read(1, window=Window(win.col_off, r, win.width, h), masked=True)
            except rasterio.errors.RasterioError as exc:
                raise InputError(dem_path, f"cannot read DEM ({str(exc).splitlines()[0]})"
                                 ) from None
        z = np.ma.masked_invalid(z.astype(np.float32))
        if not z.count():
            return math.inf, -math.inf
        return float(z.min()), float(z.max())

    # strips decoded on every core (GDAL releases the GIL): exact, like one pass
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(8, os.cpu_count() or 1, len(strips)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ranges = list(pool.map(strip_range, strips))
    lo = min((a for a, _ in ranges), default=math.inf)
    hi = max((b for _, b in ranges), default=-math.inf)
    return hi - lo if hi >= lo else 0.0


def _inside_radius_m(outlines_path, grid: Grid, cap_m: float) -> float:
    """An upper bound of the distance from a glacier pixel to the nearest ice edge: half the
    smaller side of the bounding box of each connected ice body (union of the outlines)."""
    from shapely.ops import unary_union

    try:
        near = read_outlines(outlines_path, grid=grid)
    except InputError:
        return 0.0
    union = unary_union(list(near.geometry))
    parts = getattr(union, "geoms", [union])
    r = 0.0
    for g in parts:
        minx, miny, maxx, maxy = g.bounds
        r = max(r, 0.5 * min(maxx - minx, maxy - miny))
    return min(cap_m, r)


def terrain_context(scene: Scene, dem_path, outlines_path, grid: Grid | None = None,
                    buffer_m: float = 0.0) -> TerrainContext:
    """The TerrainContext of the scene on `grid` (default: the scene's own grid). Give the
    whole scene's grid when `scene` is one block of it. Sun angles computed from the time
    (no metadata angles) are recomputed at the centre of `grid`, as the whole scene has them.
    """
    from glacierfacies.scenes.base import _sun_from_time

    grid = scene.grid if grid is None else grid
    az, el = scene.sun_azimuth_deg, scene.sun_elevation_deg
    if scene.metadata.get("sun_angles") == "computed" and scene.acquired is not None:
        az, el = _sun_from_time(scene.acquired, grid)
    res = max(abs(grid.transform.a), abs(grid.transform.e))
    relief = _dem_relief(dem_path, grid, TERRAIN_MARGIN_CAP_M)
    reach = terrain.shadow_reach_m(relief, el, TERRAIN_MARGIN_CAP_M)
    prox = min(TERRAIN_MARGIN_CAP_M,
               _inside_radius_m(outlines_path, grid, TERRAIN_MARGIN_CAP_M) + buffer_m + 2 * res)
    return TerrainContext(relief_m=relief, sun_azimuth_deg=float(az), sun_elevation_deg=float(el),
                          convergence_deg=grid_convergence_deg(grid), shadow_reach_m=reach,
                          proximity_margin_m=prox)
