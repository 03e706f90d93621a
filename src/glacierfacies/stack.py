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

#: Extra DEM margin (metres) around the scene for cast shadows / slope / proximity at edges.
TERRAIN_MARGIN_M = 1000.0


@dataclass
class FeatureStack:
    """The 11 per-pixel features of one scene (FEATURE_NAMES order) and its glacier index.

    `features` units: reflectance (6 optical), elevation m, slope deg, shadow_mask 0/1,
    hillshade 0..255 (gdaldem byte scale, 1 = darkest lit), proximity m (signed distance to
    the nearest outline edge, > 0 inside a glacier, < 0 outside). All 11 are NaN where
    `valid` is False. `glacier_index` is 0 off glacier and i for `outlines.iloc[i - 1]`.
    """

    features: np.ndarray  # (11, H, W) float32
    valid: np.ndarray  # (H, W) bool
    glacier_index: np.ndarray  # (H, W) int32
    outlines: Any  # GeoDataFrame in the scene CRS (the outlines that touch the scene)
    transform: Any
    crs: Any
    scene: Scene  # metadata; its reflectance is a view of features[:6]
    feature_names: tuple[str, ...] = FEATURE_NAMES

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
    require_outline: bool = True,
) -> FeatureStack:
    """The 11 features on the scene's grid (FEATURE_NAMES order; units in FeatureStack).

    The DEM is reprojected onto the scene grid plus a TERRAIN_MARGIN_M margin (bilinear),
    so slopes, cast shadows and proximity see terrain and outlines beyond the scene edge: a
    block of a scene gets the whole scene's features wherever that margin holds the terrain
    and the nearest outline edge. Only the DEM window and the outlines under the padded grid
    are read. Cast shadow and hillshade use the scene's sun. Outlines in another CRS are
    reprojected. `require_outline=False` (a window of a scene, e.g. around off-glacier
    labels) gives an empty outline table instead of an InputError when none is near.
    """
    from shapely.geometry import box

    grid = scene.grid
    res_x, res_y = abs(grid.transform.a), abs(grid.transform.e)
    pad = int(math.ceil(TERRAIN_MARGIN_M / max(res_x, res_y)))
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
    shadow = terrain.cast_shadow(z, (res_x, res_y), scene.sun_azimuth_deg, scene.sun_elevation_deg)
    hs = terrain.hillshade(
        z,
        (res_x, res_y),
        scene.sun_azimuth_deg,
        max(scene.sun_elevation_deg, 0.0),
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
    valid = scene.valid & np.isfinite(zin)
    feats[:, ~valid] = np.nan
    meta = dataclasses.replace(scene, reflectance=feats[: len(OPTICAL_BANDS)], valid=valid)
    return FeatureStack(
        features=feats,
        valid=valid,
        glacier_index=gidx,
        outlines=outlines,
        transform=grid.transform,
        crs=grid.crs,
        scene=meta,
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


def write_feature_stack(
    stack: FeatureStack, path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write the 11-band float32 GeoTIFF (NaN nodata, band descriptions = feature names,
    scene metadata as tags), atomically."""
    import rasterio

    dest = Path(path)
    h, w = stack.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(stack.feature_names),
        "dtype": "float32",
        "crs": stack.crs,
        "transform": stack.transform,
        "nodata": np.nan,
        "compress": "deflate",
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
        "interleave": "band",
    }
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    sc = stack.scene
    with atomic_output(dest, overwrite=overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(stack.features)
            for i, name in enumerate(stack.feature_names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(
                sensor=sc.sensor,
                scene_id=sc.scene_id,
                acquired=sc.acquired.isoformat(),
                sun_azimuth_deg=f"{sc.sun_azimuth_deg:.4f}",
                sun_elevation_deg=f"{sc.sun_elevation_deg:.4f}",
                source=str(sc.source),
                features=",".join(stack.feature_names),
                units="reflectance x6, m, deg, 0/1, 0..255 (gdaldem), m (>0 inside glacier)",
                **scene_notes(sc),
            )
    return dest

