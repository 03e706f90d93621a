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
from glacierfacies.terrain_context import (  # noqa: F401 (re-exported)
    TERRAIN_MARGIN_CAP_M,
    TERRAIN_MARGIN_M,
    TerrainContext,
    grid_convergence_deg,
    terrain_context,
)


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
    return grid.window(-pad, -pad, grid.height + 2 * pad, grid.width + 2 * pad)


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

        z = _read_onto(src, [1], dem_path, grid, to_float)[0]
    from glacierfacies.dem import check_elevations

    check_elevations(z, dem_path, nodata, require_valid=False)  # -9999 voids without a tag
    return z


def _terrain_layers(z: np.ndarray, res: tuple[float, float], ctx: TerrainContext,
                    inner: tuple[slice, slice], device: str | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slope, cast shadow and hillshade of the padded DEM `z`, on its `inner` part."""
    if device is None or str(device) == "cpu":
        grads = terrain.horn_gradients(z, res)
        slope = terrain.slope_from_gradients(*grads)
        shadow = terrain.cast_shadow(z, res, ctx.sun_azimuth_grid_deg, ctx.sun_elevation_deg,
                                     max_distance_m=ctx.shadow_reach_m, region=inner)
        hs = terrain.hillshade(z, res, ctx.sun_azimuth_grid_deg,
                               max(ctx.sun_elevation_deg, 0.0), gradients=grads)
        return slope[inner], shadow[inner], hs[inner]
    import torch

    from glacierfacies import terrain_torch

    zt = torch.from_numpy(np.ascontiguousarray(z)).to(device)
    gx, gy = terrain_torch.horn_gradients(zt, res)
    slope = terrain_torch.slope_from_gradients(gx, gy)[inner].cpu().numpy()
    hs = terrain_torch.hillshade(gx, gy, ctx.sun_azimuth_grid_deg,
                                 max(ctx.sun_elevation_deg, 0.0))[inner].cpu().numpy()
    del gx, gy
    shadow = terrain_torch.cast_shadow(zt, res, ctx.sun_azimuth_grid_deg, ctx.sun_elevation_deg,
                                       max_distance_m=ctx.shadow_reach_m, region=inner)
    return slope, shadow.cpu().numpy(), hs


def build_feature_stack(
    scene: Scene, dem_path: str | os.PathLike, outlines_path: str | os.PathLike,
    require_outline: bool = True, context: TerrainContext | None = None,
    device: str | None = None,
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
    `device` 'cuda'/'cuda:N' computes slope, hillshade and cast shadow with `terrain_torch`
    there (the same shadow mask; slope and hillshade to float rounding); None or 'cpu': numpy.
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
        near = _empty_outlines(grid.crs)
    touch = near.geometry.intersects(box(*grid.bounds)).to_numpy()
    if require_outline and not touch.any():
        raise InputError(outlines_path, "no outline intersects the scene")
    outlines = near[touch].reset_index(drop=True)
    z = _read_dem(dem_path, pgrid, grid)
    if not np.isfinite(z[inner]).any():
        raise InputError(dem_path, "DEM has no valid elevation over the scene")
    slope, shadow, hs = _terrain_layers(z, (res_x, res_y), ctx, inner, device)
    prox = terrain.proximity(rasterise_outlines(pgrid, near, as_mask=True), (res_x, res_y))
    # on the scene grid itself, as mapping burns its masks: the same pixels in both
    gidx = rasterise_outlines(grid, outlines)

    feats = np.empty((len(FEATURE_NAMES),) + grid.shape, dtype=np.float32)
    feats[: len(OPTICAL_BANDS)] = scene.reflectance
    zin = z[inner]
    terrain_layers = {
        "elevation": zin,
        "slope": slope,
        "shadow_mask": shadow.astype(np.float32),
        "hillshade": hs.astype(np.float32),
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


def _empty_outlines(crs: Any) -> Any:
    """No outline near a window: an empty outline table (geometry only) in `crs`."""
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
    device: str | None = None,
) -> dict[str, Any]:
    """The 11-band stack of a scene written block by block (RAM of one block, any scene
    size), with the whole scene's TerrainContext: the same values as `build_feature_stack`
    on glacier pixels (`device`: see `build_feature_stack`). Returns {"shape",
    "valid_fraction", "glaciers", "scene_id"}."""
    import rasterio
    from rasterio.windows import Window

    from glacierfacies.scenes.reader import read_scene, scene_grid

    grid = scene_grid(scene_path, 10.0 if read_options is None else read_options.resolution_m)
    h, w = grid.shape
    blocks = [(r, c) for r in range(0, h, block_size) for c in range(0, w, block_size)]
    ctx, first, n_valid, glaciers = None, None, 0, set()
    bar = None
    if progress:
        from glacierfacies.progress import tqdm

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
                bgrid = grid.window(r0 - m, c0 - m, bh + 2 * m, bw + 2 * m)
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
                                             context=ctx, device=device)
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
