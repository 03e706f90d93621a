"""FeatureStack: scene + DEM + outlines -> the 11 per-pixel features on the scene grid."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies import terrain
from glacierfacies._io import atomic_output
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES, OPTICAL_BANDS
from glacierfacies.outlines import rasterise_outlines, read_outlines
from glacierfacies.scenes.base import Scene
from glacierfacies.scenes.grid import Grid, _open_raster, _read_onto

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
        lo, hi = math.inf, -math.inf
        step = max(1, (1 << 24) // max(int(win.width), 1))
        for r in range(int(win.row_off), int(win.row_off + win.height), step):
            h = min(step, int(win.row_off + win.height) - r)
            try:
                z = src.read(1, window=Window(win.col_off, r, win.width, h), masked=True)
            except rasterio.errors.RasterioError as exc:
                raise InputError(dem_path, f"cannot read DEM ({str(exc).splitlines()[0]})"
                                 ) from None
            z = np.ma.masked_invalid(z.astype(np.float32))
            if z.count():
                lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
    return hi - lo if hi >= lo else 0.0


def _inside_radius_m(outlines_path, grid: Grid, cap_m: float) -> float:
    """An upper bound of the distance from a glacier pixel to the nearest ice edge: half the
    smaller side of the bounding box of each connected ice body (union of the outlines)."""
    from shapely.ops import unary_union

    try:
        near = read_outlines(outlines_path, grid=_pad_grid(grid, 0))
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


@dataclass
class FeatureStack:
    """The 11 per-pixel features of one scene (FEATURE_NAMES order) and its glacier index.

    `features` units: reflectance (6 optical), elevation m, slope deg, shadow_mask 0/1,
    hillshade 0..255 (gdaldem byte scale, 1 = darkest lit), proximity m (signed distance to
    the nearest outline edge, > 0 inside a glacier, < 0 outside). Each feature is NaN where
    its own input is missing: the optical bands where the scene is not `observed` (nodata
    or removed by the product mask), the DEM features where the DEM is void; `valid` is
    where all 11 are finite. Models then mask only on the features they use.
    `glacier_index` is 0 off glacier and i for `outlines.iloc[i - 1]`.
    """

    features: np.ndarray  # (11, H, W) float32
    valid: np.ndarray  # (H, W) bool
    glacier_index: np.ndarray  # (H, W) int32
    outlines: Any  # GeoDataFrame in the scene CRS (the outlines that touch the scene)
    transform: Any
    crs: Any
    scene: Scene  # metadata; its reflectance is a view of features[:6]
    feature_names: tuple[str, ...] = FEATURE_NAMES
    terrain: TerrainContext | None = None  # the margins and sun the terrain features used
    observed: np.ndarray | None = None  # (H, W) bool: the scene's own valid pixels

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.crs, self.transform, *self.valid.shape)


def _pad_grid(grid: Grid, pad: int) -> Grid:
    from rasterio.transform import Affine

    t = grid.transform
    return Grid(
        grid.crs, t @ Affine.translation(-pad, -pad), grid.height + 2 * pad, grid.width + 2 * pad
    )


def _read_dem(dem_path, grid: Grid, scene_grid: Grid) -> np.ndarray:
    """DEM elevation (float32, NaN nodata) on `grid` (the scene grid + terrain margin),
    reading only the DEM window under it."""
    from rasterio.warp import transform_bounds

    with _open_raster(dem_path) as src:
        if src.crs is None:
            raise InputError(dem_path, "DEM has no CRS")
        w, s, e, n = transform_bounds(scene_grid.crs, src.crs, *scene_grid.bounds)
        b = src.bounds
        if w >= b.right or e <= b.left or s >= b.top or n <= b.bottom:
            raise InputError(dem_path, "DEM does not overlap the scene")
        nodata = src.nodata

        def to_float(_k: int, raw: np.ndarray) -> np.ndarray:
            z = raw.astype(np.float32)
            if nodata is not None:
                z[z == nodata] = np.nan
            z[~np.isfinite(z)] = np.nan
            return z

        return _read_onto(src, [1], dem_path, grid, to_float)[0]


def build_feature_stack(
    scene: Scene, dem_path: str | os.PathLike, outlines_path: str | os.PathLike,
    require_outline: bool = True, context: TerrainContext | None = None,
) -> FeatureStack:
    """The 11 features on the scene's grid (FEATURE_NAMES order; units in FeatureStack).

    The DEM is reprojected onto the scene grid plus the `context` margin (bilinear; see
    TerrainContext: it covers the shadow reach, the inside distance of the glaciers and the
    kernel), so slopes, cast shadows and proximity see terrain and outlines beyond the scene
    edge, and a block built with the whole scene's `context` gets exactly the whole scene's
    features on glacier pixels. Only the DEM window and the outlines under the padded grid
    are read. Cast shadow and hillshade use the context's sun, its azimuth turned to grid
    north. Outlines in another CRS are reprojected. `require_outline=False` (a window of a scene, e.g. around off-glacier
    labels) gives an empty outline table instead of an InputError when none is near.
    """
    from shapely.geometry import box

    grid = scene.grid
    ctx = terrain_context(scene, dem_path, outlines_path) if context is None else context
    res_x, res_y = abs(grid.transform.a), abs(grid.transform.e)
    pad = int(math.ceil(ctx.margin_m / min(res_x, res_y))) + 2
    pgrid = _pad_grid(grid, pad)
    inner = (slice(pad, pad + grid.height), slice(pad, pad + grid.width))
    # Outlines within the terrain margin count for proximity; `outlines` (and the indices
    # in glacier_index) are those that touch the scene, in file order.
    try:
        near = read_outlines(outlines_path, grid=pgrid)
    except InputError as exc:
        if require_outline or "no outline intersects" not in exc.problem:
            raise
        near = _empty_outlines(outlines_path, grid.crs)
    touch = near.geometry.intersects(box(*grid.bounds)).to_numpy()
    if require_outline and not touch.any():
        raise InputError(outlines_path, "no outline intersects the scene")
    outlines = near[touch].reset_index(drop=True)
    z = _read_dem(dem_path, pgrid, grid)
    if not np.isfinite(z[inner]).any():
        raise InputError(dem_path, "DEM has no valid elevation over the scene")
    grads = terrain.horn_gradients(z, (res_x, res_y))
    slope = terrain.slope_from_gradients(*grads)
    shadow = terrain.cast_shadow(z, (res_x, res_y), ctx.sun_azimuth_grid_deg,
                                 ctx.sun_elevation_deg, max_distance_m=ctx.shadow_reach_m,
                                 region=inner)
    hs = terrain.hillshade(
        z,
        (res_x, res_y),
        ctx.sun_azimuth_grid_deg,
        max(ctx.sun_elevation_deg, 0.0),
        gradients=grads,
    )
    del grads
    prox = terrain.proximity(rasterise_outlines(pgrid, near, as_mask=True), (res_x, res_y))
    # on the scene grid itself, as mapping burns its masks: the same pixels in both
    gidx = rasterise_outlines(grid, outlines)

    feats = np.empty((len(FEATURE_NAMES),) + grid.shape, dtype=np.float32)
    feats[: len(OPTICAL_BANDS)] = scene.reflectance
    zin = z[inner]
    terrain_layers = {
        "elevation": zin,
        "slope": slope[inner],
        "shadow_mask": shadow[inner].astype(np.float32),
        "hillshade": hs[inner].astype(np.float32),
        "proximity": prox[inner],
    }
    for name, layer in terrain_layers.items():
        feats[FEATURE_NAMES.index(name)] = layer
    dem_ok = np.isfinite(zin)
    valid = scene.valid & dem_ok
    feats[: len(OPTICAL_BANDS), ~scene.valid] = np.nan  # per input: see FeatureStack
    for name in ("elevation", "slope", "shadow_mask", "hillshade"):
        feats[FEATURE_NAMES.index(name), ~dem_ok] = np.nan
    meta = dataclasses.replace(scene, reflectance=feats[: len(OPTICAL_BANDS)], valid=valid)
    return FeatureStack(
        features=feats,
        valid=valid,
        glacier_index=gidx,
        outlines=outlines,
        transform=grid.transform,
        crs=grid.crs,
        scene=meta,
        terrain=ctx,
        observed=np.asarray(scene.valid, bool),
    )


def _empty_outlines(outlines_path: str | os.PathLike, crs: Any) -> Any:
    """No outline near a window: an empty table with the file's columns, in `crs`."""
    import geopandas as gpd

    return gpd.GeoDataFrame(geometry=[], crs=crs)


def scene_notes(scene: Scene) -> dict[str, str]:
    """What a reader assumed or applied, as tags: the product mask, the saturation flag, where
    the sun came from, an assumed time of day."""
    keys = {"product_mask": "product_mask", "saturation": "saturation",
            "sun_angles": "sun_angles", "time_note": "time_note",
            "boa_offset_from": "s2_offset_from"}
    return {tag: str(scene.metadata[k]) for k, tag in keys.items() if scene.metadata.get(k)}


def _stack_profile(h: int, w: int, crs: Any, transform: Any) -> dict:
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(FEATURE_NAMES),
        "dtype": "float32",
        "crs": crs,
        "transform": transform,
        "nodata": np.nan,
        "compress": "deflate",
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
        "interleave": "band",
    }
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _stack_tags(sc: Scene, names: tuple[str, ...], ctx: TerrainContext | None) -> dict:
    return dict(
        sensor=sc.sensor,
        scene_id=sc.scene_id,
        acquired=sc.acquired.isoformat(),
        sun_azimuth_deg=f"{sc.sun_azimuth_deg:.4f}",
        sun_elevation_deg=f"{sc.sun_elevation_deg:.4f}",
        source=str(sc.source),
        features=",".join(names),
        units="reflectance x6, m, deg, 0/1, 0..255 (gdaldem), m (>0 inside glacier)",
        **scene_notes(sc),
        **({} if ctx is None else ctx.tags()),
    )


def write_feature_stack_blocks(
    scene_path: str | os.PathLike, dem_path: str | os.PathLike,
    outlines_path: str | os.PathLike, path: str | os.PathLike, read_options: Any = None,
    overwrite: bool = True, block_size: int = 2048, progress: bool = True,
) -> dict[str, Any]:
    """The 11-band stack of a scene written block by block (RAM of one block, any scene
    size), with the whole scene's TerrainContext: the same values as `build_feature_stack`
    on glacier pixels. Returns {"shape", "valid_fraction", "glaciers", "scene_id"}."""
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from glacierfacies.scenes.reader import read_scene, scene_grid

    grid = scene_grid(scene_path, 10.0 if read_options is None else read_options.resolution_m)
    h, w = grid.shape
    blocks = [(r, c) for r in range(0, h, block_size) for c in range(0, w, block_size)]
    ctx, first, n_valid, glaciers = None, None, 0, set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(blocks), desc="feature blocks", unit="block")
    try:
        with atomic_output(Path(path), overwrite=overwrite) as tmp, rasterio.Env(
                GDAL_CACHEMAX=256), rasterio.open(tmp, "w", **_stack_profile(
                    h, w, grid.crs, grid.transform)) as dst:
            for i, name in enumerate(FEATURE_NAMES, start=1):
                dst.set_band_description(i, name)
            for r0, c0 in blocks:
                bh, bw = min(block_size, h - r0), min(block_size, w - c0)
                win = Window(c0, r0, bw, bh)
                m = 0 if read_options is None else read_options.fill_gaps_px  # inpaint context
                bgrid = Grid(grid.crs, grid.transform @ Affine.translation(c0 - m, r0 - m),
                             bh + 2 * m, bw + 2 * m)
                try:
                    sc = read_scene(scene_path, grid=bgrid, options=read_options)
                except InputError as exc:
                    if "no valid pixel" not in exc.problem:
                        raise
                    dst.write(np.full((len(FEATURE_NAMES), bh, bw), np.nan, np.float32), window=win)
                else:
                    if ctx is None:
                        ctx, first = terrain_context(sc, dem_path, outlines_path, grid=grid), sc
                    st = build_feature_stack(sc, dem_path, outlines_path, require_outline=False,
                                             context=ctx)
                    dst.write(st.features[:, m : m + bh, m : m + bw], window=win)
                    n_valid += int(st.valid[m : m + bh, m : m + bw].sum())
                    glaciers.update(str(g) for g in st.outlines.geometry.to_wkb())
                    del st, sc
                if bar is not None:
                    bar.update(1)
            if first is None:
                raise InputError(scene_path, "scene has no valid pixel")
            if not glaciers:
                raise InputError(outlines_path, "no outline intersects the scene")
            dst.update_tags(**_stack_tags(first, FEATURE_NAMES, ctx))
    finally:
        if bar is not None:
            bar.close()  # its line ends before an error is printed
    return {"shape": (h, w), "valid_fraction": n_valid / max(h * w, 1),
            "glaciers": len(glaciers), "scene_id": first.scene_id}


def write_feature_stack(
    stack: FeatureStack, path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write the 11-band float32 GeoTIFF (NaN nodata, band descriptions = feature names,
    scene metadata as tags), atomically."""
    import rasterio

    dest = Path(path)
    h, w = stack.shape
    profile = _stack_profile(h, w, stack.crs, stack.transform)
    sc = stack.scene
    with atomic_output(dest, overwrite=overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(stack.features)
            for i, name in enumerate(stack.feature_names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(**_stack_tags(sc, stack.feature_names, stack.terrain))
    return dest
