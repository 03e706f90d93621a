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
from glacierfacies.scenes.grid import Grid, _display, _grid_of_files, _open_raster, _read_onto
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
    #: (H, W) uint8 QA band from the product's own masks (`masks.QA_*` bits), or None when the
    #: product has no mask file (or masks are off)
    qa: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.crs, self.transform, *self.valid.shape)

    @classmethod
    def on_grid(cls, grid: Grid, *, sun_azimuth_deg: float, sun_elevation_deg: float,
                metadata: dict[str, Any], time_note: str | None = None, **fields: Any) -> Scene:
        """The Scene every product reader returns: pixels on `grid`, sun angles as floats,
        and `time_note` recorded in the metadata when the time of day was assumed."""
        if time_note:
            metadata = {**metadata, "time_note": time_note}
        return cls(transform=grid.transform, crs=grid.crs,
                   sun_azimuth_deg=float(sun_azimuth_deg),
                   sun_elevation_deg=float(sun_elevation_deg), metadata=metadata, **fields)


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


def _name_has_time(name: str) -> bool:
    return re.search(r"(?<!\d)(\d{8}|\d{7})T(\d{6})(?!\d)", name) is not None


#: Mean local solar time (hours) at the descending node of the sun-synchronous orbits.
NODE_LOCAL_TIME_H = {"sentinel2": 10.5, "landsat": 10.2}


def assumed_overpass(date: dt.date, lat_deg: float, lon_deg: float,
                     node_local_time_h: float = 10.5, inclination_deg: float = 98.2
                     ) -> dt.datetime:
    """UTC time at which a descending sun-synchronous pass, crossing the equator at
    `node_local_time_h` local mean solar time, passes over (lat, lon).

    Pure geometry: on the descending branch sin(lat) = sin(i) sin(u); the point's right
    ascension from the ascending node is atan2(cos(i) sin(u), cos(u)); its offset from the
    descending node's (180 deg), at 15 deg an hour, shifts the local solar time (about
    +35 min at 46 N, +42 min at 52 N). Off by the orbit's own spread (minutes), i.e. about
    a degree of sun azimuth; used only when a product gives a date and no time.
    """
    i = math.radians(inclination_deg)
    s = max(-1.0, min(1.0, math.sin(math.radians(lat_deg)) / math.sin(i)))
    u = math.pi - math.asin(s)
    alpha = math.atan2(math.cos(i) * math.sin(u), math.cos(u))
    d_alpha = (alpha - math.pi + math.pi) % (2 * math.pi) - math.pi
    local_h = node_local_time_h + math.degrees(d_alpha) / 15.0
    utc_h = local_h - lon_deg / 15.0
    midnight = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
    return midnight + dt.timedelta(hours=utc_h)


def _centre_lonlat(grid: Grid) -> tuple[float, float]:
    from rasterio.warp import transform as warp_transform

    w, s, e, n = grid.bounds
    lon, lat = warp_transform(grid.crs, "EPSG:4326", [(w + e) / 2], [(s + n) / 2])
    return float(lon[0]), float(lat[0])


def _assume_time(date: dt.date, grid: Grid, node: float, source: Any) -> tuple[dt.datetime, str]:
    """(assumed UTC acquisition time, the note for metadata) for a product with a date only,
    for an orbit whose descending node is at `node` hours local solar time; warns, since the
    sun (cast shadows, hillshade) then rests on an assumption."""
    import warnings

    lon, lat = _centre_lonlat(grid)
    when = assumed_overpass(date, lat, lon, node)
    hh, mm = divmod(round(node * 60), 60)
    note = (f"time of day assumed: {when:%H:%M} UTC, the overpass of a {hh:02d}:{mm:02d} "
            f"descending node at the scene centre ({lat:.3f}, {lon:.3f}); the product gives "
            f"the date {date.isoformat()} only")
    warnings.warn(f"{source}: {note}; sun position computed for that time", stacklevel=3)
    return when, note


def _sun_from_time(acquired: dt.datetime, grid: Grid) -> tuple[float, float]:
    """(azimuth, elevation) at the scene centre, from terrain.solar_position."""
    lon, lat = _centre_lonlat(grid)
    az, el = terrain.solar_position(acquired, lat, lon)
    return float(az), float(el)


def _finish(refl: np.ndarray, valid: np.ndarray, masks: list[tuple], grid: Grid,
            options: Any, reference: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply the product's own masks: `masks` is a list of (raster path, display path, decode)
    (see `masks.read_mask`). Returns (reflectance, valid, QA band or None without masks)."""
    from glacierfacies.scenes.masks import apply_masks, read_mask

    if not masks:
        return refl, valid, None
    masked = saturated = None
    for path, display, decode in masks:
        m, s = read_mask(path, display, grid, decode, reference)
        if m is not None:
            masked = m if masked is None else masked | m
        if s is not None:
            saturated = s if saturated is None else saturated | s
    return apply_masks(refl, valid, masked, saturated, options.mask_saturated)


#: Fewer valid pixels than this (a block of a scene mostly under cloud) say too little
#: about the coding to refuse a scene on them.
PLAUSIBILITY_MIN_PIXELS = 100
#: The median is taken over at most this many pixels (evenly spaced), so that a whole tile
#: costs no copy of its bands.
PLAUSIBILITY_SAMPLE = 200_000


def check_plausible(refl: np.ndarray, valid: np.ndarray, source: Any,
                    min_pixels: int = PLAUSIBILITY_MIN_PIXELS) -> float:
    """The median of the valid blue, green and red reflectance; a one-line InputError naming
    `source` when it is outside `PLAUSIBLE_REFLECTANCE` (DN read as reflectance, ...).
    Fewer than `min_pixels` valid pixels (or table rows) are not judged (NaN)."""
    from glacierfacies.scenes.options import PLAUSIBLE_REFLECTANCE

    idx = np.flatnonzero(valid.ravel())
    if idx.size < min_pixels:
        return float("nan")
    if idx.size > PLAUSIBILITY_SAMPLE:
        idx = idx[np.linspace(0, idx.size - 1, PLAUSIBILITY_SAMPLE).astype(np.int64)]
    med = float(np.median(refl[:3].reshape(3, -1)[:, idx]))
    lo, hi = PLAUSIBLE_REFLECTANCE
    if med > hi:
        raise InputError(source, f"median blue/green/red reflectance is {med:.4g}, not "
                                 f"{lo}..{hi}: these look like unscaled DN; pass --scale "
                                 "(e.g. --scale 0.0001 --nodata -9999 for int16 x 10,000)")
    if med < lo:
        raise InputError(source, f"median blue/green/red reflectance is {med:.4g}, not "
                                 f"{lo}..{hi}: wrong --offset or --scale?")
    return med


def _assemble(
    files: list[tuple[Path | str, int]],
    spec: SensorSpec,
    grid: Grid | None,
    offsets: list[float | None],
    extra_nodata: list[float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Read the 6 (file, band index) pairs (only the window under `grid`; each file opened
    once, so a 6-band stack is read in one pass), decode DN, warp onto the grid. The file's
    nodata and `extra_nodata[i]` (e.g. --nodata) are nodata besides the spec's codes."""
    if grid is None:
        grid = _grid_of_files(files)
    refl = np.empty((len(files),) + grid.shape, dtype=np.float32)
    by_file: dict[Path, list[int]] = {}
    for i, (f, _) in enumerate(files):
        by_file.setdefault(f, []).append(i)
    for f, slots in by_file.items():
        with _open_raster(f) as src:
            if src.crs is None:
                raise InputError(_display(f), "raster has no CRS")

            def to_float(k: int, dn: np.ndarray, src=src, slots=slots) -> np.ndarray:
                i = slots[k]
                band = spec.decode(dn, offsets[i])
                for nd in (src.nodata, None if extra_nodata is None else extra_nodata[i]):
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



def _warn_stack_options(options: Any, source: Any, product: str) -> None:
    """Products carry their own DN coding: stack options are ignored, with a warning."""
    import warnings

    if options.stack_coding_given:
        warnings.warn(f"{source}: --band-map/--scale/--offset/--nodata apply to GeoTIFF "
                      f"stacks; this {product} product's own coding is used", stacklevel=3)
