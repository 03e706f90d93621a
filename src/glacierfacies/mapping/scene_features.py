"""The 11 features of the windows of a scene that mapping needs, terrain computed with torch
on the map's device.

`stack.build_feature_stack` builds every feature of a whole block plus a terrain margin, and
the shadow march runs over the whole block. A map needs features only where a mapped pixel's
S x S window reaches: `SceneFeatures.window` computes them on one window (the bounding box of
a block's glacier pixels plus the receptive halo), reading that window of the scene once, the
DEM under it plus the shadow reach, and the outlines within the proximity reach. The terrain
(Horn gradients, slope, hillshade, cast shadow: `terrain_torch`) runs on `device`; proximity
is the exact distance transform of the outline mask on the window plus the proximity reach
(one per window, not per whole block margin): scipy's on the CPU, `terrain_torch.proximity`'s
search over the boundary pixels on CUDA (the same values).

Values on every pixel a mapped pixel's window can see equal `build_feature_stack`'s with the
same `TerrainContext` (the DEM and outline reads are window-independent; see the module notes
in docs/benchmarks.md, issue 21): the same map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glacierfacies import terrain, terrain_torch
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES, OPTICAL_BANDS

__all__ = ["WindowFeatures", "SceneFeatures"]

_I = {name: FEATURE_NAMES.index(name) for name in FEATURE_NAMES}


@dataclass
class WindowFeatures:
    """Features (11, h, w) float32 of one window (a tensor on the map's device), the scene's
    own valid pixels (`observed`, (h, w) bool numpy), the QA band (or None) and the scene
    metadata of the read."""

    features: torch.Tensor
    observed: np.ndarray
    qa: np.ndarray | None
    scene: Any
    seconds: dict


class SceneFeatures:
    """Window features of one scene: see the module docstring.

    `grid` is the scene's grid; windows are (r0, c0, h, w) in it (they may reach beyond it:
    pixels there are NaN, as in block mapping). The `TerrainContext` is the whole scene's,
    made on the first window read (from that read's sun angles), as block mapping makes it.
    """

    def __init__(self, scene: Any, dem: Any, outlines: Any, grid: Any, *, read: Any = None,
                 device: str | torch.device = "cpu", buffer_m: float = 0.0, halo: int = 16
                 ) -> None:
        from glacierfacies.outlines import read_outlines
        from glacierfacies.stack import _pad_grid

        self.scene_path, self.dem, self.outlines_path, self.grid = scene, dem, outlines, grid
        self.read, self.device, self.buffer_m, self.halo = read, torch.device(device), \
            float(buffer_m), int(halo)
        self.res_x, self.res_y = abs(grid.transform.a), abs(grid.transform.e)
        self.context = None
        cap = int(math.ceil(10_000.0 / min(self.res_x, self.res_y))) + 2
        # every outline that can reach a window's proximity (the cap bounds any margin)
        self.near = read_outlines(outlines, grid=_pad_grid(grid, cap))

    def read_window(self, r0: int, c0: int, h: int, w: int,
                    outer: tuple[int, int, int, int] | None = None) -> Any:
        """The scene read on the window (or on `outer` (r0, c0, h, w), a window holding it)
        plus the gap-filling context: (scene, rows, cols), the window's slices in the
        scene's arrays, and the read's origin (row, col) in the grid; None when the read
        has no valid pixel. Thread-safe (each read opens its own datasets)."""
        from glacierfacies.scenes.reader import read_scene

        m = 0 if self.read is None else int(self.read.fill_gaps_px)
        R0, C0, RH, RW = (r0, c0, h, w) if outer is None else outer
        try:
            sc = read_scene(self.scene_path, grid=self.grid.window(R0 - m, C0 - m, RH + 2 * m,
                                                                   RW + 2 * m),
                            options=self.read)
        except InputError as exc:
            if "no valid pixel" in exc.problem:
                return None
            raise
        o_r, o_c = r0 - R0 + m, c0 - C0 + m
        return sc, (slice(o_r, o_r + h), slice(o_c, o_c + w)), (R0 - m, C0 - m)

    def ensure_context(self, sc: Any) -> Any:
        from glacierfacies.stack import terrain_context

        if self.context is None:
            self.context = terrain_context(sc, self.dem, self.outlines_path, grid=self.grid)
        return self.context

    def dem_pad(self) -> int:
        """DEM pixels read beyond a window: the shadow reach, the 3x3 kernel and 2 more."""
        ctx = self.context
        return int(math.ceil(ctx.shadow_reach_m / min(self.res_x, self.res_y))) + 3

    def prox_pad(self) -> int:
        """Outline mask pixels burned beyond a window for proximity: an inside pixel's
        nearest edge lies within the largest inside distance; an outside pixel that a
        mapped pixel's window sees within the buffer + the window's diagonal."""
        ctx = self.context
        res = min(self.res_x, self.res_y)
        return int(math.ceil((ctx.proximity_margin_m + self.buffer_m) / res)) + 2 * self.halo + 4

    def read_dem(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """DEM (float32, NaN void) under the window + `dem_pad`, as `stack._read_dem` reads it."""
        from glacierfacies.stack import _read_dem

        p = self.dem_pad()
        return _read_dem(self.dem, self.grid.window(r0 - p, c0 - p, h + 2 * p, w + 2 * p),
                         self.grid.window(r0, c0, h, w))

    def proximity(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """Signed distance to the outline edge (m) on the window (float32)."""
        from glacierfacies.outlines import rasterise_outlines

        p = self.prox_pad()
        m = rasterise_outlines(self.grid.window(r0 - p, c0 - p, h + 2 * p, w + 2 * p),
                               self.near, as_mask=True)
        if self.device.type == "cuda":  # the same values, by a brute-force search on the GPU
            return terrain_torch.proximity(m, (self.res_x, self.res_y),
                                           region=(slice(p, p + h), slice(p, p + w)),
                                           device=self.device).cpu().numpy()
        return terrain.proximity(m, (self.res_x, self.res_y))[p : p + h, p : p + w]

    def window(self, r0: int, c0: int, h: int, w: int, read: Any = None,
               dem: np.ndarray | None = None) -> WindowFeatures | None:
        """Features of the window (r0, c0, h, w); `read` / `dem` from `read_window` /
        `read_dem` when a reader thread made them already. None: no valid pixel."""
        import time

        t0 = time.perf_counter()
        read = self.read_window(r0, c0, h, w) if read is None else read
        if read is None:
            return None
        sc, (rows, cols), _ = read
        self.ensure_context(sc)
        t1 = time.perf_counter()
        z = self.read_dem(r0, c0, h, w) if dem is None else dem
        t2 = time.perf_counter()
        p = self.dem_pad()
        inner = (slice(p, p + h), slice(p, p + w))
        if not np.isfinite(z[inner]).any():
            raise InputError(self.dem, "DEM has no valid elevation over the scene")
        ctx = self.context
        dev = self.device
        res = (self.res_x, self.res_y)
        zt = torch.from_numpy(z).to(dev)
        # Horn on the window + 1 px (its neighbours are real terrain, as in the whole stack)
        zk = zt[p - 1 : p + h + 1, p - 1 : p + w + 1]
        gx, gy = terrain_torch.horn_gradients(zk, res)
        slope = terrain_torch.slope_from_gradients(gx, gy)[1:-1, 1:-1]
        hs = terrain_torch.hillshade(gx, gy, ctx.sun_azimuth_grid_deg,
                                     max(ctx.sun_elevation_deg, 0.0))[1:-1, 1:-1]
        del gx, gy
        shadow = terrain_torch.cast_shadow(zt, res, ctx.sun_azimuth_grid_deg,
                                           ctx.sun_elevation_deg,
                                           max_distance_m=ctx.shadow_reach_m, region=inner)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t3 = time.perf_counter()
        prox = self.proximity(r0, c0, h, w)
        t4 = time.perf_counter()

        valid = np.asarray(sc.valid[rows, cols], bool)
        refl = torch.from_numpy(np.ascontiguousarray(sc.reflectance[:, rows, cols]))
        feats = torch.empty((len(FEATURE_NAMES), h, w), dtype=torch.float32, device=dev)
        n_opt = len(OPTICAL_BANDS)
        feats[:n_opt] = refl.to(dev)
        zin = zt[inner]
        dem_ok = torch.isfinite(zin)
        feats[_I["elevation"]] = zin
        feats[_I["slope"]] = slope
        feats[_I["shadow_mask"]] = shadow.float()
        feats[_I["hillshade"]] = hs.float()
        feats[_I["proximity"]] = torch.from_numpy(np.ascontiguousarray(prox)).to(dev)
        obs = torch.from_numpy(valid).to(dev)
        feats[:n_opt] = torch.where(obs, feats[:n_opt], math.nan)  # per input: FeatureStack
        for name in ("elevation", "slope", "shadow_mask", "hillshade"):
            feats[_I[name]] = torch.where(dem_ok, feats[_I[name]], math.nan)
        qa = None if sc.qa is None else np.asarray(sc.qa[rows, cols])
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t5 = time.perf_counter()
        return WindowFeatures(feats, valid, qa, sc, {
            "read": t1 - t0, "dem": t2 - t1, "terrain": t3 - t2, "proximity": t4 - t3,
            "assemble": t5 - t4})
