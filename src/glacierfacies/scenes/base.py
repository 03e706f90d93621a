"""The Scene every product reader returns, and the one builder that assembles it."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies import terrain
from glacierfacies.errors import InputError
from glacierfacies.scenes.grid import Grid, _grid_of_files, _open_raster, _read_onto
from glacierfacies.scenes.spec import SensorSpec


@dataclass
class Scene:
    """Surface reflectance of one acquisition on a 10 m grid, with its sun geometry."""

    reflectance: np.ndarray  # (6, H, W) float32, OPTICAL_BANDS order, NaN where invalid
    valid: np.ndarray  # (H, W) bool
    transform: Any
    crs: Any
    sensor: str
    scene_id: str
    acquired: dt.datetime  # UTC, tz-aware
    sun_azimuth_deg: float
    sun_elevation_deg: float
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.crs, self.transform, *self.valid.shape)


def _parse_time(text: str) -> dt.datetime:
    """ISO-like UTC time ('2020-08-12T10:36:29.024Z', nanosecond fractions allowed)."""
    t = text.strip().strip('"').replace("Z", "")
    m = re.match(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?", t)
    if m:
        frac = float(m.group(3)) if m.group(3) else 0.0
        base = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
        return (base + dt.timedelta(seconds=frac)).replace(tzinfo=dt.UTC)
    m = re.match(r"(\d{8})T?(\d{6})?", t)
    if m:
        fmt = "%Y%m%d%H%M%S" if m.group(2) else "%Y%m%d"
        return dt.datetime.strptime(m.group(1) + (m.group(2) or ""), fmt).replace(tzinfo=dt.UTC)
    raise ValueError(f"unrecognised time {text!r}")


def _time_from_name(name: str) -> dt.datetime | None:
    m = re.search(r"(?<!\d)(\d{8})T(\d{6})(?!\d)", name) or re.search(
        r"(?<!\d)((?:19|20)\d{6})(?!\d)", name
    )
    if not m:
        return None
    try:
        return _parse_time(m.group(0))
    except ValueError:
        return None


def _sun_from_time(acquired: dt.datetime, grid: Grid) -> tuple[float, float]:
    """(azimuth, elevation) at the scene centre, from terrain.solar_position."""
    from rasterio.warp import transform as warp_transform

    w, s, e, n = grid.bounds
    lon, lat = warp_transform(grid.crs, "EPSG:4326", [(w + e) / 2], [(s + n) / 2])
    az, el = terrain.solar_position(acquired, lat[0], lon[0])
    return float(az), float(el)


def _assemble(
    files: list[tuple[Path, int]],
    spec: SensorSpec,
    grid: Grid | None,
    offsets: list[float | None],
    extra_nodata: list[float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Read the 6 (file, band index) pairs (only the window under `grid`; each file opened
    once, so a 6-band stack is read in one pass), decode DN, warp onto the grid."""
    if grid is None:
        grid = _grid_of_files(files)
    refl = np.empty((len(files),) + grid.shape, dtype=np.float32)
    by_file: dict[Path, list[int]] = {}
    for i, (f, _) in enumerate(files):
        by_file.setdefault(f, []).append(i)
    for f, slots in by_file.items():
        with _open_raster(f) as src:
            if src.crs is None:
                raise InputError(f, "raster has no CRS")

            def to_float(k: int, dn: np.ndarray, src=src, slots=slots) -> np.ndarray:
                i = slots[k]
                band = spec.decode(dn, offsets[i])
                nd = src.nodata if extra_nodata is None else extra_nodata[i]
                if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
                    band[dn == nd] = np.nan
                return band

            bands = _read_onto(src, [files[i][1] for i in slots], f, grid, to_float)
            for i, band in zip(slots, bands, strict=True):
                refl[i] = band
            del bands
    valid = np.isfinite(refl).all(axis=0)
    refl[:, ~valid] = np.nan
    return refl, valid, grid

