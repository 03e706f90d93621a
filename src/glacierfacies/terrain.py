"""Terrain features from a DEM array: slope/aspect (Horn), hillshade, cast shadow, proximity,
and the solar position.

Pure numpy/scipy, no file I/O, so it runs the same in tests, on a laptop and on a GPU box.
Array conventions: row 0 is the northern edge (north-up rasters, as GDAL/rasterio write
them), column 0 the western edge. Missing DEM values are NaN. Angles are degrees; azimuths
are clockwise from north (0 = N, 90 = E), as in gdaldem and the Sentinel-2/Landsat metadata.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "horn_gradients",
    "slope_from_gradients",
    "slope_aspect_horn",
    "hillshade",
    "cast_shadow",
    "shadow_steps",
    "ShadowStep",
    "SHADOW_LOW",
    "proximity",
    "solar_position",
    "shadow_reach_m",
]


def shadow_reach_m(relief_m: float, sun_elevation_deg: float, cap_m: float) -> float:
    """How far (m) toward the sun terrain can cast a shadow: relief / tan(sun elevation),
    at most `cap_m` (0 with the sun at or below the horizon, or overhead: nothing to march)."""
    if not (0.0 < sun_elevation_deg < 90.0) or not relief_m > 0:
        return 0.0
    return float(min(cap_m, relief_m / math.tan(math.radians(sun_elevation_deg))))


def _pixel_xy(pixel_size_m: float | tuple[float, float]) -> tuple[float, float]:
    """(x, y) pixel sizes in metres, both positive, from a scalar or an (x, y) pair."""
    if np.ndim(pixel_size_m) == 0:
        px = py = float(pixel_size_m)  # type: ignore[arg-type]
    else:
        px, py = (abs(float(v)) for v in pixel_size_m)  # type: ignore[union-attr]
    px, py = abs(px), abs(py)
    if not (px > 0 and py > 0 and math.isfinite(px) and math.isfinite(py)):
        raise ValueError(f"pixel size must be positive and finite, got {pixel_size_m!r}")
    return px, py


def _horn_gradients(dem: np.ndarray, pixel_size_m) -> tuple[np.ndarray, np.ndarray]:
    """Horn's 3x3 gradients (dz/dx east-positive, dz/dy north-positive), in m/m.

    Edges and NaN neighbours are handled like `gdaldem -compute_edges`: a missing
    neighbour takes the centre value. Pixels that are NaN themselves give NaN.
    """
    px, py = _pixel_xy(pixel_size_m)
    z = np.asarray(dem, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"dem must be 2-D, got shape {z.shape}")
    pad = np.pad(z, 1, mode="constant", constant_values=np.nan)
    h, w = z.shape
    dzdx = np.zeros(z.shape, dtype=np.float32)
    dzdy = np.zeros(z.shape, dtype=np.float32)
    diff = np.empty(z.shape, dtype=np.float32)
    # Accumulate neighbour-minus-centre differences (exact in float32 for nearby values,
    # and a missing neighbour then simply contributes 0), one neighbour at a time so that
    # large scenes need only a few arrays in memory. Weights: (x east, y north).
    for dr, dc, wx, wy in (
        (-1, -1, -1, 1),
        (-1, 0, 0, 2),
        (-1, 1, 1, 1),
        (0, -1, -2, 0),
        (0, 1, 2, 0),
        (1, -1, -1, -1),
        (1, 0, 0, -2),
        (1, 1, 1, -1),
    ):
        np.subtract(pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w], z, out=diff)
        np.copyto(diff, 0.0, where=np.isnan(diff))
        for acc, wgt in ((dzdx, wx), (dzdy, wy)):
            if wgt == 1:
                acc += diff
            elif wgt == -1:
                acc -= diff
            elif wgt:
                acc += np.float32(wgt) * diff
    dzdx /= np.float32(8.0 * px)
    dzdy /= np.float32(8.0 * py)
    missing = np.isnan(z)
    dzdx[missing] = np.nan
    dzdy[missing] = np.nan
    return dzdx, dzdy


def horn_gradients(
    dem: np.ndarray, pixel_size_m: float | tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Horn's (dz/dx east, dz/dy north) in m/m, float32; reuse them for slope and hillshade."""
    return _horn_gradients(dem, pixel_size_m)


def slope_from_gradients(dzdx: np.ndarray, dzdy: np.ndarray) -> np.ndarray:
    """Slope in degrees (float32) from Horn gradients."""
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy))).astype(np.float32)


def slope_aspect_horn(
    dem: np.ndarray, pixel_size_m: float | tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees, 0..90) and aspect (degrees, 0 = north, clockwise; the downslope
    direction) by Horn's method, matching `gdaldem slope|aspect -compute_edges`.

    `pixel_size_m` is a scalar or (x, y) pair in metres. Aspect is NaN on flat cells (gdaldem
    writes its nodata there) and both are NaN where the DEM is NaN. Returns float32 arrays.
    """
    dzdx, dzdy = _horn_gradients(dem, pixel_size_m)
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    # Downslope direction: the vector (-dzdx, -dzdy) in (east, north); azimuth from north.
    aspect = np.degrees(np.arctan2(-dzdx, -dzdy)) % 360.0
    flat = (dzdx == 0) & (dzdy == 0)
    aspect[flat] = np.nan
    aspect[aspect >= 360.0] = 0.0
    return slope.astype(np.float32), aspect.astype(np.float32)


def hillshade(
    dem: np.ndarray,
    pixel_size_m: float | tuple[float, float],
    azimuth_deg: float = 315.0,
    altitude_deg: float = 45.0,
    z_factor: float = 1.0,
    gradients: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Hillshade as uint8 1..255 (0 = nodata where the DEM is NaN), gdaldem's formula:
    1 + 254 * max(0, cos(angle between the surface normal and the sun)), rounded.

    Used as a feature (the stack stores it as 0..255, see scene.py), and to check against
    `gdaldem hillshade -compute_edges -az A -alt E`. `gradients` (from `horn_gradients`)
    skips recomputing them.
    """
    dzdx, dzdy = _horn_gradients(dem, pixel_size_m) if gradients is None else gradients
    if z_factor != 1.0:
        dzdx, dzdy = dzdx * z_factor, dzdy * z_factor
    az, alt = math.radians(azimuth_deg), math.radians(altitude_deg)
    # Unit vector toward the sun (east, north, up) dotted with the surface normal (-p, -q, 1).
    sun_e, sun_n, sun_u = math.sin(az) * math.cos(alt), math.cos(az) * math.cos(alt), math.sin(alt)
    cosang = (sun_u - dzdx * sun_e - dzdy * sun_n) / np.sqrt(1.0 + dzdx**2 + dzdy**2)
    val = 1.0 + 254.0 * np.clip(cosang, 0.0, None)
    out = np.zeros(val.shape, dtype=np.uint8)
    ok = ~np.isnan(val)
    out[ok] = np.clip(np.floor(val[ok] + 0.5), 1, 255).astype(np.uint8)
    return out


#: "No obstacle" elevation for NaN DEM cells in the cast-shadow march: a constant, so a
#: window of a DEM marches like the whole DEM does (a value from the array's own minimum
#: would differ between the two).
SHADOW_LOW = np.float32(-1e6)


@dataclass(frozen=True)
class ShadowStep:
    """Step k of the cast-shadow march: the terrain sample toward the sun at k steps is
    the float32 `zf[r + ra, c + ca] + frac * (zf[r + rb, c + cb] - zf[r + ra, c + ca])`
    (just `zf[r + ra, c + ca]` when frac == 0), minus `rise` = k * step * tan(elevation);
    the pixel (r, c) is shadowed when it exceeds zf[r, c]. One definition for the numpy
    (`cast_shadow`) and the torch (`terrain_torch.cast_shadow`) march."""

    k: int
    rise: np.float32
    shifts: tuple[tuple[int, int], tuple[int, int]]
    frac: np.float32

    def targets(self, h: int, w: int, r0: int, r1: int, c0: int, c1: int
                ) -> tuple[int, int, int, int] | None:
        """Target rows/cols (within rows r0:r1, cols c0:c1 of an h x w array) whose both
        samples fall inside the array; None when none does (the march ends there)."""
        rs = [s[0] for s in self.shifts]
        cs = [s[1] for s in self.shifts]
        t_r0, t_r1 = max(r0, -min(rs)), min(r1, h - max(rs))
        t_c0, t_c1 = max(c0, -min(cs)), min(c1, w - max(cs))
        if t_r0 >= t_r1 or t_c0 >= t_c1:
            return None
        return t_r0, t_r1, t_c0, t_c1


def shadow_steps(shape: tuple[int, int], pixel_size_m: float | tuple[float, float],
                 sun_azimuth_deg: float, sun_elevation_deg: float, relief_m: float,
                 max_distance_m: float | None = None) -> list[ShadowStep]:
    """The steps of the cast-shadow march over an array of `shape` with `relief_m` of
    relief (see `cast_shadow`): one pixel per step along the dominant axis of the
    direction toward the sun, linear interpolation across the other, until k * step *
    tan(elevation) exceeds the relief (or `max_distance_m`). Empty for a sun at or below
    the horizon or overhead, or a flat array."""
    if not (0.0 < sun_elevation_deg < 90.0) or not relief_m > 0:
        return []
    px, py = _pixel_xy(pixel_size_m)
    h, w = shape
    az = math.radians(sun_azimuth_deg)
    # Direction toward the sun in pixel units: columns grow east, rows grow south.
    de, dn = math.sin(az), math.cos(az)
    dcol, drow = de / px, -dn / py  # pixels per metre along the sun direction
    major = max(abs(dcol), abs(drow))
    dcol, drow = dcol / major, drow / major  # one pixel per step along the dominant axis
    step_m = 1.0 / major  # horizontal metres per step
    tan_e = math.tan(math.radians(sun_elevation_deg))
    reach = relief_m / tan_e
    if max_distance_m is not None:
        reach = min(reach, float(max_distance_m))
    along_rows = abs(drow) >= abs(dcol)
    n_steps = min(int(math.ceil(reach / step_m)), h if along_rows else w)
    out = []
    for k in range(1, n_steps + 1):
        rise = np.float32(k * step_m * tan_e)
        if along_rows:
            dr = int(round(k * drow))
            off = k * dcol
            c0 = math.floor(off)
            frac = np.float32(off - c0)
            shifts = ((dr, c0), (dr, c0 + 1))
        else:
            dc = int(round(k * dcol))
            off = k * drow
            r0 = math.floor(off)
            frac = np.float32(off - r0)
            shifts = ((r0, dc), (r0 + 1, dc))
        out.append(ShadowStep(k, rise, shifts, frac))
    return out


def cast_shadow(
    dem: np.ndarray,
    pixel_size_m: float | tuple[float, float],
    sun_azimuth_deg: float,
    sun_elevation_deg: float,
    max_distance_m: float | None = None,
    region: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Cast-shadow mask (bool, True = the sun is hidden by terrain toward it).

    `region` (row and column slices) computes only the pixels inside it (False elsewhere);
    the rest of the array still casts shadows onto them. A DEM padded by a terrain margin
    then costs the march over the pixels that are used, not over the margin.

    Marches from every pixel toward the sun, one pixel per step along the dominant axis
    (linear interpolation across the other axis), over the whole array at once: a pixel is
    in shadow when some terrain at horizontal distance d toward the sun rises more than
    d * tan(elevation) above it (i.e. the horizon angle in the sun's direction exceeds the
    sun's elevation). NaN DEM cells and terrain beyond the array edge are no obstacle; NaN
    pixels themselves are never shadowed. The march stops once d * tan(elevation) exceeds
    the DEM's relief (or `max_distance_m`). Sun at or below the horizon -> all valid
    pixels are shadowed. Self-shadowing (slopes facing away) is what hillshade encodes.
    """
    z = np.asarray(dem, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"dem must be 2-D, got shape {z.shape}")
    valid = np.isfinite(z)
    shadow = np.zeros(z.shape, dtype=bool)
    if not valid.any() or sun_elevation_deg >= 90.0:
        return shadow
    if sun_elevation_deg <= 0.0:
        return valid.copy()
    zmin, zmax = float(np.nanmin(z)), float(np.nanmax(z))
    steps = shadow_steps(z.shape, pixel_size_m, sun_azimuth_deg, sun_elevation_deg,
                         zmax - zmin, max_distance_m)
    if not steps:
        return shadow
    zf = np.where(valid, z, SHADOW_LOW).astype(np.float32)
    h, w = z.shape
    if region is None:
        region = (slice(0, h), slice(0, w))
    g_r0, g_r1, _ = region[0].indices(h)
    g_c0, g_c1, _ = region[1].indices(w)
    for st in steps:
        t = st.targets(h, w, g_r0, g_r1, g_c0, g_c1)
        if t is None:
            break
        t_r0, t_r1, t_c0, t_c1 = t
        (ra, ca), (rb, cb) = st.shifts
        sa = zf[t_r0 + ra : t_r1 + ra, t_c0 + ca : t_c1 + ca]
        sb = zf[t_r0 + rb : t_r1 + rb, t_c0 + cb : t_c1 + cb]
        if st.frac == 0:
            sample = sa - st.rise
        else:
            sample = sa + st.frac * (sb - sa)
            sample -= st.rise
        tgt = (slice(t_r0, t_r1), slice(t_c0, t_c1))
        shadow[tgt] |= sample > zf[tgt]
    shadow &= valid
    return shadow


def proximity(mask: np.ndarray, pixel_size_m: float | tuple[float, float]) -> np.ndarray:
    """Signed distance in metres to the edge of a (glacier) mask: positive inside, negative
    outside, float32.

    The edge lies between a mask pixel and a non-mask pixel, so the distance is the
    Euclidean distance between pixel centres (scipy's exact EDT) minus half a pixel: pixels
    touching the edge get +-0.5 px. The array border is not an edge; a mask that is all
    True (or all False) measures to the array border instead.
    """
    px, py = _pixel_xy(pixel_size_m)
    m = np.asarray(mask, dtype=bool)
    half = 0.5 * min(px, py)
    if m.all() or not m.any():
        padded = np.pad(m, 1, constant_values=not m.any())
        d = ndimage.distance_transform_edt(padded if m.all() else ~padded, sampling=(py, px))
        d = d[1:-1, 1:-1] - half
        return (d if m.all() else -d).astype(np.float32)
    inside = ndimage.distance_transform_edt(m, sampling=(py, px))
    outside = ndimage.distance_transform_edt(~m, sampling=(py, px))
    return np.where(m, inside - half, -(outside - half)).astype(np.float32)


def solar_position(
    when: _dt.datetime | np.ndarray,
    lat_deg: float | np.ndarray,
    lon_deg: float | np.ndarray,
    refraction: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Sun (azimuth, elevation) in degrees for a UTC time and a place (lon east-positive).

    The NOAA solar calculator's algorithm (Meeus, "Astronomical Algorithms", low-precision
    series, ~0.01 deg for 1800-2100), with NOAA's approximate atmospheric refraction when
    `refraction` is True (as in NOAA's published "apparent" elevation). Used when scene
    metadata lacks sun angles. A naive datetime is taken as UTC. Returns float64 arrays
    (0-d for scalar input).
    """
    jd = _julian_day(when)
    t = (jd - 2451545.0) / 36525.0  # Julian centuries since J2000.0
    l0 = (280.46646 + t * (36000.76983 + t * 0.0003032)) % 360.0
    m = 357.52911 + t * (35999.05029 - 0.0001537 * t)
    e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    mr = np.radians(m)
    c = (
        np.sin(mr) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + np.sin(2 * mr) * (0.019993 - 0.000101 * t)
        + np.sin(3 * mr) * 0.000289
    )
    true_long = l0 + c
    omega = 125.04 - 1934.136 * t
    app_long = true_long - 0.00569 - 0.00478 * np.sin(np.radians(omega))
    eps0 = 23.0 + (26.0 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60.0) / 60.0
    eps = eps0 + 0.00256 * np.cos(np.radians(omega))
    decl = np.arcsin(np.sin(np.radians(eps)) * np.sin(np.radians(app_long)))
    y = np.tan(np.radians(eps) / 2.0) ** 2
    l0r = np.radians(l0)
    eq_time = 4.0 * np.degrees(
        y * np.sin(2 * l0r)
        - 2 * e * np.sin(mr)
        + 4 * e * y * np.sin(mr) * np.cos(2 * l0r)
        - 0.5 * y * y * np.sin(4 * l0r)
        - 1.25 * e * e * np.sin(2 * mr)
    )  # minutes
    minutes_utc = ((jd + 0.5) % 1.0) * 1440.0
    true_solar_time = (minutes_utc + eq_time + 4.0 * np.asarray(lon_deg, dtype=float)) % 1440.0
    hour_angle = true_solar_time / 4.0 - 180.0
    lat = np.radians(np.asarray(lat_deg, dtype=float))
    ha = np.radians(hour_angle)
    cos_zen = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(ha)
    zen = np.arccos(np.clip(cos_zen, -1.0, 1.0))
    elev = 90.0 - np.degrees(zen)
    # Azimuth clockwise from north (atan2 form of NOAA's formula, no special cases).
    az = np.degrees(
        np.arctan2(
            np.sin(ha),
            np.cos(ha) * np.sin(lat) - np.tan(decl) * np.cos(lat),
        )
    )
    az = (az + 180.0) % 360.0
    if refraction:
        elev = elev + _noaa_refraction(elev)
    return np.asarray(az, dtype=float), np.asarray(elev, dtype=float)


def _noaa_refraction(elev_deg: np.ndarray) -> np.ndarray:
    """NOAA's approximate atmospheric refraction correction (degrees) for a true elevation."""
    el = np.asarray(elev_deg, dtype=float)
    te = np.tan(np.radians(np.clip(el, -89.0, 89.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        hi = 58.1 / te - 0.07 / te**3 + 0.000086 / te**5
        mid = 1735.0 + el * (-518.2 + el * (103.4 + el * (-12.79 + el * 0.711)))
        lo = -20.772 / te
    arcsec = np.where(el > 85.0, 0.0, np.where(el > 5.0, hi, np.where(el > -0.575, mid, lo)))
    return arcsec / 3600.0


def _julian_day(when: _dt.datetime | np.ndarray) -> np.ndarray:
    """Julian day (UT) of a datetime (naive = UTC) or an array of numpy datetime64."""
    if isinstance(when, _dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(_dt.UTC).replace(tzinfo=None)
        when = np.datetime64(when, "us")
    t = np.asarray(when, dtype="datetime64[us]")
    seconds = (t - np.datetime64("2000-01-01T12:00:00", "us")) / np.timedelta64(1, "s")
    return 2451545.0 + np.asarray(seconds, dtype=float) / 86400.0
