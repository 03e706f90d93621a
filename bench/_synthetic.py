"""A synthetic 10 m scene stack and DEM written window by window (bounded RAM), shared by the
large-scene benches (`map_scene.py --size`, `memory.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Reflectance off and on the glaciers (blue, green, red, nir, swir1, swir2)
BASE = np.array([0.12, 0.14, 0.15, 0.25, 0.18, 0.12], np.float32)
ICE = np.array([0.55, 0.60, 0.62, 0.55, 0.10, 0.08], np.float32)


def write_scene_and_dem(folder: Path, scene_name: str, n: int, transform: Any, crs: str,
                        outlines: Any, *, dem_base: float, dem_amplitude: float,
                        sun_elevation: float, step: int = 512) -> None:
    """N x N 6-band float32 scene (ice reflectance inside `outlines`, a gentle shading) and
    a DEM of `dem_base` +- `dem_amplitude` m on the same grid, `step` rows at a time."""
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as win_transform

    from glacierfacies.outlines import rasterise_outlines
    from glacierfacies.scenes.grid import Grid

    common = dict(driver="GTiff", width=n, height=n, crs=crs, transform=transform,
                  tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                  BIGTIFF="YES", dtype="float32", nodata=np.nan)
    with rasterio.open(folder / scene_name, "w", count=6, **common) as sc, \
            rasterio.open(folder / "dem.tif", "w", count=1, **common) as dem:
        sc.update_tags(ACQUISITION_TIME="2022-07-08T10:36:29Z", SUN_AZIMUTH="150",
                       SUN_ELEVATION=f"{sun_elevation:g}", SCENE_ID="synthetic_T32TPS")
        for r in range(0, n, step):
            h = min(step, n - r)
            win = Window(0, r, n, h)
            rows = np.arange(r, r + h, dtype=np.float32)[:, None]
            cols = np.arange(n, dtype=np.float32)[None, :]
            z = (dem_base + dem_amplitude * np.sin(cols / 700.0) * np.cos(rows / 900.0)
                 + 0.01 * rows)
            dem.write(z.astype(np.float32)[None], window=win)
            g = rasterise_outlines(Grid(crs, win_transform(win, transform), h, n), outlines,
                                   as_mask=True)
            shade = (0.9 + 0.1 * np.sin(cols / 97.0) * np.cos(rows / 53.0)).astype(np.float32)
            for b in range(6):
                band = np.where(g, ICE[b], BASE[b]) * shade
                sc.write(np.round(band, 3).astype(np.float32), b + 1, window=win)
