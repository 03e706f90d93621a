"""The built-in sample: a small, realistic, fully known glacier world, made on the fly.

`write_sample(out_dir, seed)` writes a synthetic alpine massif (UTM 32N, 10 m DEM) with eight
valley glaciers (cirques, tongues, rock walls, two proglacial lakes), their outlines, six
scenes over two hydrological years (Sentinel-2 L2A-like and Landsat 8/9 Collection-2
Level-2-like, in the products' own file layouts and metadata), expert-like point labels of
the 8 classes with ~10% deliberately wrong ones, the generator's truth, and WGMS-like mass
balance tables whose AAR equals the scenes' true AAR. Everything is deterministic per seed
(byte-identical files) and takes a few seconds; demos and tests run on it.

Where the spectra come from (`SPECTRA`, surface reflectance in the 6 canonical bands
blue, green, red, NIR, SWIR1, SWIR2 ~ S2 B02 B03 B04 B08 B11 B12 / Landsat OLI B2..B7):

- fresh / seasonal snow: visible ~0.85-0.95, NIR ~0.7, SWIR1 <0.1 (ice absorption), after the
  snow albedo model of Wiscombe & Warren (1980, J. Atmos. Sci. 37) and Warren (1982, Rev.
  Geophys. 20), and measured snow spectra in the USGS Spectral Library v7 (Kokaly et al.
  2017, doi:10.3133/ds1035); Painter et al. (2009, Remote Sens. Environ. 113) for grain-size
  driven NIR/SWIR variation;
- firn and clean glacier ice: Hall & Martinec (1985, Remote Sensing of Ice and Snow), Hall et
  al. (1988, Remote Sens. Environ. 25), Paul et al. (2016, Remote Sens. Environ. 175, Landsat
  and Sentinel-2 glacier spectra): firn ~0.6 VIS / 0.45 NIR / 0.05 SWIR, bare ice ~0.4 VIS /
  0.2 NIR / 0.02-0.03 SWIR;
- debris (and the off-glacier rock, which is not a class): spectrally flat, dark, rising into
  the SWIR, ~0.1-0.25 (USGS v7 granite/gneiss talus; Paul et al. 2016 debris-covered ice);
- refrozen / slush-like surfaces: wet snow and superimposed ice with liquid water: bright in
  the visible, NIR and SWIR suppressed by water absorption (Hall & Martinec 1985; Painter et
  al. 2009);
- turbid proglacial water: 0.05-0.1 VIS with a green peak, ~0.01-0.03 NIR/SWIR (USGS v7
  water spectra; Paul et al. 2016);
- cloud: bright and flat, 0.6-0.8 VIS/NIR, and unlike snow bright in the SWIR (0.3-0.5);
- shadowed surfaces: no direct sun, only skylight and terrain-reflected light, which is
  bluer: the sunlit spectrum times `SHADOW_DIFFUSE_FRACTION` (0.22 blue .. 0.10 SWIR).

Each pixel's reflectance is its class mean times a smooth texture (+-10%), a mild topographic
illumination factor (0.8-1.2, L2A reflectance is not fully terrain-corrected), a per-scene
gain (+-2%), a per-sensor band factor (`SENSOR_BAND_FACTOR`), then mixed with cloud where a
semi-transparent cloud lies, averaged to the band's resolution and given sensor noise
(sigma 0.003 + 0.008 * reflectance). `reflectance_range(class)` gives the range this puts a
label's reflectance in (the tests check it).

Zonation: per glacier and date an end-of-season snowline S and firn line F (F < S): snow
above S, exposed firn between F and S, bare ice below F, refrozen-like patches near the
snowline; early in summer the snowline is 250-400 m lower with a slush (refrozen-like) band
just below it and no firn exposed. Debris covers tongues and lateral margins (and a medial
moraine) where no snow lies. Cast shadows come from `terrain.cast_shadow` with each scene's
sun position. AAR = (snow + firn) / glacier area (truth/aar_truth.csv).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from glacierfacies import terrain
from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS, class_index, colour_table
from glacierfacies.errors import InputError, atomic_output

__all__ = [
    "SPECTRA",
    "SHADOW_DIFFUSE_FRACTION",
    "SENSOR_BAND_FACTOR",
    "S2_BANDS",
    "LANDSAT_BANDS",
    "S2_SCALE",
    "S2_OFFSET",
    "LANDSAT_SCALE",
    "LANDSAT_OFFSET",
    "reflectance_range",
    "decode_s2",
    "decode_landsat",
    "write_sample",
]

# ------------------------------------------------------------------ constants

CRS_EPSG = 32632
PIXEL_M = 10.0
WIDTH, HEIGHT = 600, 480  # 6.0 km x 4.8 km; multiples of 60 m so 10/20/30 m grids nest
X0, Y0 = 630000.0, 5166000.0  # upper-left corner, multiples of 60 m
DEM_NODATA = -9999.0
LABEL_EDGE_PX = 20  # labels lie at least this many 10 m pixels from the scene edge

#: Class mean surface reflectance (blue, green, red, NIR, SWIR1, SWIR2); see module docstring.
#: "shadow" has no own spectrum: it is the underlying surface times SHADOW_DIFFUSE_FRACTION.
SPECTRA: dict[str, tuple[float, float, float, float, float, float]] = {
    "snow": (0.90, 0.88, 0.85, 0.72, 0.08, 0.06),
    "firn": (0.63, 0.61, 0.58, 0.47, 0.05, 0.04),
    "ice": (0.40, 0.38, 0.32, 0.19, 0.03, 0.025),
    "debris": (0.12, 0.14, 0.16, 0.20, 0.24, 0.20),
    "refrozen-like": (0.52, 0.50, 0.46, 0.23, 0.015, 0.012),
    "water": (0.07, 0.10, 0.07, 0.025, 0.012, 0.008),
    "cloud": (0.72, 0.71, 0.70, 0.67, 0.42, 0.30),
}
#: Surfaces that are not classes (off-glacier), used for realism only.
OTHER_SPECTRA: dict[str, tuple[float, ...]] = {
    "rock": (0.11, 0.13, 0.15, 0.21, 0.26, 0.22),
    "meadow": (0.04, 0.07, 0.05, 0.33, 0.19, 0.10),
}
SHADOW_DIFFUSE_FRACTION = (0.22, 0.18, 0.15, 0.12, 0.10, 0.10)
#: Small band-response differences between the sensors (OLI NIR is narrower, at 865 nm).
SENSOR_BAND_FACTOR = {
    "sentinel2": (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    "landsat": (1.0, 1.0, 1.0, 0.97, 1.02, 1.0),
}
#: Relative and absolute half-widths of the documented per-class reflectance range.
RANGE_REL, RANGE_ABS = 0.30, 0.02

S2_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
S2_BAND_RES = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B11": 20, "B12": 20}
S2_BAND_ID = {"B02": 1, "B03": 2, "B04": 3, "B08": 7, "B11": 11, "B12": 12}  # MTD band_id
S2_SCALE, S2_OFFSET = 1e-4, -0.1  # reflectance = (DN - 1000) / 10000
LANDSAT_BANDS = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
LANDSAT_SCALE, LANDSAT_OFFSET = 2.75e-5, -0.2  # reflectance = DN * 2.75e-5 - 0.2

_SURFACES = ("ice", "snow", "debris", "firn", "refrozen-like", "water", "rock", "meadow")
_SURF = {name: i for i, name in enumerate(_SURFACES)}
_FIXED_GPKG_DATE = "2024-01-01T00:00:00.000Z"


def reflectance_range(class_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) reflectance per canonical band that sunlit, cloud-free pixels of a class
    fall in (cloud: its opaque core), as documented in `SPECTRA`; shadow spans the shadowed
    versions of all ground classes."""
    name = CLASS_NAMES[class_index(class_name)]
    if name == "shadow":
        ground = np.array([SPECTRA[n] for n in SPECTRA if n != "cloud"])
        diffuse = np.array(SHADOW_DIFFUSE_FRACTION)
        lo, hi = ground.min(axis=0) * diffuse, ground.max(axis=0) * diffuse
    else:
        lo = hi = np.array(SPECTRA[name])
    return lo * (1 - RANGE_REL) - RANGE_ABS, hi * (1 + RANGE_REL) + RANGE_ABS


def decode_s2(dn: np.ndarray) -> np.ndarray:
    """Sentinel-2 L2A DN (baseline >= 04.00) -> surface reflectance; 0 (nodata) -> NaN."""
    out = dn.astype(np.float32) * S2_SCALE + S2_OFFSET
    return np.where(dn == 0, np.nan, out).astype(np.float32)


def decode_landsat(dn: np.ndarray) -> np.ndarray:
    """Landsat Collection-2 Level-2 SR DN -> surface reflectance; 0 (nodata) -> NaN."""
    out = dn.astype(np.float32) * LANDSAT_SCALE + LANDSAT_OFFSET
    return np.where(dn == 0, np.nan, out).astype(np.float32)


# ------------------------------------------------------------------ the world


@dataclass(frozen=True)
class _GlacierSpec:
    name: str
    region: str
    political_unit: str
    head: tuple[float, float]  # (x east, y south) metres from the upper-left corner
    toe: tuple[float, float]
    bend_m: float
    z_head: float
    z_toe: float
    half_width_m: float
    cirque_factor: float
    debris: float  # 0..1 how debris-covered the tongue is
    lake: bool


_GLACIERS: tuple[_GlacierSpec, ...] = (
    # north-facing, flowing to the north edge
    _GlacierSpec("Nordkarferner", "Alps-West", "CH", (800, 2050), (700, 850), 120, 3300, 2550,
                 190, 1.9, 0.5, False),
    _GlacierSpec("Glacier du Sablon", "Alps-West", "CH", (2150, 2080), (2050, 1200), -100, 3350,
                 2650, 180, 1.8, 0.3, True),
    _GlacierSpec("Grauwandferner", "Alps-East", "AT", (3600, 2050), (3750, 700), 150, 3420, 2480,
                 210, 1.8, 1.0, False),
    _GlacierSpec("Schattenkees", "Alps-East", "AT", (5050, 2080), (5150, 1150), -90, 3280, 2620,
                 180, 1.9, 0.4, False),
    # south-facing, flowing to the south edge
    _GlacierSpec("Glacier de la Combe", "Alps-West", "CH", (1450, 2760), (1300, 3900), 100, 3380,
                 2720, 180, 1.8, 0.4, False),
    _GlacierSpec("Vadret da la Sabbia", "Alps-West", "CH", (2900, 2760), (2950, 4000), -120,
                 3450, 2620, 200, 1.7, 0.6, True),
    _GlacierSpec("Sonnkarkees", "Alps-East", "AT", (4300, 2760), (4200, 3850), 90, 3400, 2760,
                 180, 1.8, 0.3, False),
    _GlacierSpec("Hochjochkees", "Alps-East", "AT", (5330, 2800), (5430, 3700), -60, 3350, 2800,
                 150, 1.8, 0.5, False),
)


@dataclass(frozen=True)
class _SceneSpec:
    sensor: str  # "sentinel2" | "landsat8" | "landsat9" (scene.py names)
    time: dt.datetime  # UTC acquisition
    season: str  # "early" | "end"

    @property
    def date(self) -> str:
        return self.time.date().isoformat()

    @property
    def year(self) -> int:
        return self.time.year

    @property
    def scene_id(self) -> str:
        d = self.time.strftime("%Y%m%d")
        if self.sensor == "sentinel2":
            gen = (self.time + dt.timedelta(hours=3, minutes=19, seconds=43)).strftime("%Y%m%dT%H%M%S")
            return f"S2B_MSIL2A_{self.time:%Y%m%dT%H%M%S}_N0509_R108_T32TPS_{gen}"
        proc = (self.time + dt.timedelta(days=2)).strftime("%Y%m%d")
        mission = "LC09" if self.sensor == "landsat9" else "LC08"
        return f"{mission}_L2SP_193027_{d}_{proc}_02_T1"


_SCENES: tuple[_SceneSpec, ...] = (
    _SceneSpec("sentinel2", dt.datetime(2022, 7, 8, 10, 36, 29), "early"),
    _SceneSpec("sentinel2", dt.datetime(2022, 9, 5, 10, 36, 29), "end"),
    _SceneSpec("landsat9", dt.datetime(2022, 9, 5, 10, 12, 41), "end"),
    _SceneSpec("sentinel2", dt.datetime(2023, 7, 3, 10, 36, 31), "early"),
    _SceneSpec("landsat8", dt.datetime(2023, 7, 3, 10, 12, 18), "early"),
    _SceneSpec("sentinel2", dt.datetime(2023, 9, 20, 10, 36, 29), "end"),
)
_WGMS_YEARS = tuple(range(2004, 2024))


def _noise(rng: np.random.Generator, sigma: float, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    """Smooth Gaussian random field with unit standard deviation (spatial texture)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma,
                                    mode="reflect")
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _centreline(head, toe, bend, t):
    """Points (x, y) along a gently bent centreline at parameters t (0 = head, 1 = toe)."""
    head, toe = np.asarray(head, float), np.asarray(toe, float)
    d = toe - head
    perp = np.array([-d[1], d[0]]) / np.hypot(*d)
    return head[None] + t[:, None] * d[None] + (bend * np.sin(np.pi * np.clip(t, 0, 1)))[:, None] * perp


def _nearest_param(spec: _GlacierSpec, t: np.ndarray, xx: np.ndarray, yy: np.ndarray):
    """Distance (m) of every pixel centre to the centreline sampled at `t`, and the line
    parameter of the nearest point: nearest sample by scipy's Euclidean distance transform,
    refined by projection onto the local tangent so that both vary smoothly."""
    points = _centreline(spec.head, spec.toe, spec.bend_m, t)
    cols = np.floor(points[:, 0] / PIXEL_M).astype(int)
    rows = np.floor(points[:, 1] / PIXEL_M).astype(int)
    inside = (rows >= 0) & (rows < HEIGHT) & (cols >= 0) & (cols < WIDTH)
    seed = np.ones((HEIGHT, WIDTH), bool)
    tmap = np.zeros((HEIGHT, WIDTH), np.float32)
    seed[rows[inside], cols[inside]] = False
    tmap[rows[inside], cols[inside]] = t[inside]
    ir, ic = ndimage.distance_transform_edt(seed, return_distances=False, return_indices=True)
    tn = tmap[ir, ic].ravel().astype(np.float64)
    eps = 1e-3
    p0 = _centreline(spec.head, spec.toe, spec.bend_m, tn)
    tangent = (_centreline(spec.head, spec.toe, spec.bend_m, tn + eps) - p0) / eps
    rel = np.stack([xx.ravel(), yy.ravel()], 1) - p0
    tr = tn + (rel * tangent).sum(1) / (tangent**2).sum(1)
    tr = np.clip(tr, t[0], t[-1])
    dist = np.hypot(*(np.stack([xx.ravel(), yy.ravel()], 1)
                      - _centreline(spec.head, spec.toe, spec.bend_m, tr)).T)
    return dist.reshape(HEIGHT, WIDTH).astype(np.float32), tr.reshape(HEIGHT, WIDTH).astype(np.float32)


def _width(spec: _GlacierSpec, t: np.ndarray) -> np.ndarray:
    """Half-width (m): wide cirque near the head, tapering tongue."""
    bulge = 1 + (spec.cirque_factor - 1) * np.exp(-(((t - 0.13) / 0.14) ** 2))
    taper = 1 - 0.4 * np.clip(t, 0, 1) ** 3
    return (spec.half_width_m * bulge * taper).astype(np.float32)


def _z_centre(spec: _GlacierSpec, t: np.ndarray, length_m: float) -> np.ndarray:
    """Centreline surface elevation: steeper cirque, gentle mid glacier, valley below the toe."""
    tt = np.clip(t, 0, 1)
    g = 1 - tt + 0.06 * np.sin(2 * np.pi * tt)
    z = spec.z_toe + (spec.z_head - spec.z_toe) * g
    below = np.clip(t - 1, 0, None) * length_m * 0.2
    return (z - below).astype(np.float32)


@dataclass
class _World:
    dem: np.ndarray  # (H, W) float32
    glacier: np.ndarray  # (H, W) int32, 0 off glacier, i = i-th glacier (1-based)
    lake: np.ndarray  # (H, W) bool
    along: np.ndarray  # (H, W) float32 centreline parameter of the nearest glacier (0 head..1 toe)
    across: np.ndarray  # (H, W) float32 |distance to centreline| / half width
    specs: tuple[_GlacierSpec, ...]
    slope: np.ndarray
    aspect: np.ndarray


def _make_world(rng: np.random.Generator) -> _World:
    """DEM, glacier mask and lakes of the synthetic massif (jittered per seed)."""
    ys = (np.arange(HEIGHT, dtype=np.float32) + 0.5) * PIXEL_M
    xs = (np.arange(WIDTH, dtype=np.float32) + 0.5) * PIXEL_M
    xx, yy = np.meshgrid(xs, ys)
    phase = rng.uniform(0, 2 * np.pi, 2)
    ridge_y = 2400 + 60 * np.sin(2 * np.pi * xx / 3100 + phase[0])
    crest = 3480 + 110 * np.sin(2 * np.pi * xx / 2300 + phase[1]) + 55 * np.sin(2 * np.pi * xx / 900)
    base = crest - 0.42 * np.abs(yy - ridge_y) + 60 * _noise(rng, 40)
    specs = []
    for s in _GLACIERS:
        j = rng.normal(0, 1, 6)
        specs.append(
            _GlacierSpec(
                s.name, s.region, s.political_unit,
                (s.head[0] + 30 * j[0], s.head[1] + 20 * j[1]),
                (s.toe[0] + 40 * j[2], s.toe[1] + 40 * j[3]),
                s.bend_m, s.z_head + 30 * j[4], s.z_toe + 30 * j[5], s.half_width_m,
                s.cirque_factor, s.debris, s.lake,
            )
        )
    z_valley = np.full((HEIGHT, WIDTH), np.inf, np.float32)
    glacier = np.zeros((HEIGHT, WIDTH), np.int32)
    surface = np.zeros((HEIGHT, WIDTH), np.float32)
    along = np.zeros((HEIGHT, WIDTH), np.float32)
    across = np.zeros((HEIGHT, WIDTH), np.float32)
    lake = np.zeros((HEIGHT, WIDTH), bool)
    lake_level = np.zeros((HEIGHT, WIDTH), np.float32)
    for gi, spec in enumerate(specs, start=1):
        length = float(np.hypot(spec.toe[0] - spec.head[0], spec.toe[1] - spec.head[1]))
        t_full = np.linspace(0, 1.9, 1400)
        d_v, t_v = _nearest_param(spec, t_full, xx, yy)
        w_v = np.where(t_v <= 1, _width(spec, t_v), _width(spec, np.ones(1))[0] * 1.15)
        cross = 15 * (0.5 - np.clip(t_v, 0, 1)) * 2  # concave up high, convex tongue
        excess = np.clip(d_v - w_v, 0, None)
        zv = _z_centre(spec, t_v, length) + cross * np.clip(d_v / w_v, 0, 1) ** 2
        zv = zv + 560 * (1 - np.exp(-excess / 430)) + 0.25 * excess
        if spec.lake:  # flat lake behind a small moraine dam below the toe
            tc, half = 1.16, 0.10
            rel = np.clip(1 - ((t_v - tc) / half) ** 2, 0, None)
            in_lake = (d_v < 0.8 * w_v * np.sqrt(rel)) & (rel > 0)
            level = float(_z_centre(spec, np.array([1.0]), length)[0]) - 12
            dam = (t_v > tc + half) & (t_v < tc + half + 0.08) & (d_v < 1.3 * w_v)
            zv = np.where(dam, np.maximum(zv, level + 15), zv)
            lake |= in_lake
            lake_level = np.where(in_lake, level, lake_level)
        z_valley = np.minimum(z_valley, zv)
        # the glacier itself: distance to the head..toe part only, so both ends are rounded
        t_g = np.linspace(0, 1, 800)
        d_g, tg = _nearest_param(spec, t_g, xx, yy)
        w_g = _width(spec, tg)
        mask = (d_g <= w_g) & (glacier == 0)
        glacier[mask] = gi
        ratio = np.clip(d_g / w_g, 0, 1)
        cross_g = 15 * (0.5 - tg) * 2
        surface[mask] = (_z_centre(spec, tg, length) + cross_g * ratio**2)[mask]
        along[mask] = tg[mask]
        across[mask] = ratio[mask]
    rough = 40 * _noise(rng, 12) + 10 * _noise(rng, 4) + 3 * _noise(rng, 1.5)
    dem = np.minimum(base, z_valley) + rough
    ice_tex = 2.0 * _noise(rng, 4)
    dem = np.where(glacier > 0, surface + ice_tex, dem)
    dem = np.where(lake, lake_level, dem).astype(np.float32)
    lake &= glacier == 0
    slope, aspect = terrain.slope_aspect_horn(dem, PIXEL_M)
    return _World(dem, glacier, lake, along, across, tuple(specs), slope, aspect)


# ------------------------------------------------------------------ zonation, cloud, truth


@dataclass
class _DateState:
    """What the surface looks like on one date (shared by same-day scenes of both sensors)."""

    facies: np.ndarray  # (H, W) uint8 class code on glacier/lake, NODATA_CLASS elsewhere
    surface: np.ndarray  # (H, W) uint8 index into _SURFACES for every pixel
    cloud_field: np.ndarray  # (H, W) float32, opacity = clip((field - thr) / width + .5, 0, 1)
    cloud_thr: float
    snowline: dict[int, float]  # glacier -> transient snowline (m)
    firnline: dict[int, float]  # glacier -> lower limit of snow + firn (m)


def _zonation(world: _World, season: str, firnline: dict[int, float], snowline: dict[int, float],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Facies class map (glacier + lake) and the surface type of every pixel on one date."""
    z_eff = world.dem + 30 * _noise(rng, 6)
    patch = _noise(rng, 3)
    g = world.glacier
    on = g > 0
    snow_z = np.zeros_like(world.dem)
    firn_z = np.zeros_like(world.dem)
    for gi in range(1, len(world.specs) + 1):
        snow_z[g == gi] = snowline[gi]
        firn_z[g == gi] = firnline[gi]
    snow = on & (z_eff > snow_z)
    facies = np.full(g.shape, NODATA_CLASS, np.uint8)
    facies[on] = class_index("ice")
    if season == "end":
        firn = on & ~snow & (z_eff > firn_z)
        facies[firn] = class_index("firn")
        refrozen = on & (z_eff > firn_z - 60) & (z_eff <= snow_z + 20) & (patch > 1.0)
    else:
        refrozen = on & ~snow & (z_eff > snow_z - 50) & (patch > -0.4)
    facies[snow] = class_index("snow")
    facies[refrozen] = class_index("refrozen-like")
    # debris: tongue and lateral margins, medial moraine on the debris-rich glaciers
    debris_level = np.zeros_like(world.dem)
    for gi, spec in enumerate(world.specs, start=1):
        debris_level[g == gi] = spec.debris
    tongue = np.clip((world.along - 0.55) / 0.45, 0, 1)
    score = tongue * (0.5 + 0.8 * world.across**2) * (0.4 + debris_level) + 0.15 * _noise(rng, 2)
    score += np.where(world.across > 0.85, 0.35 * np.clip((world.along - 0.3) / 0.3, 0, 1), 0)
    medial = (np.abs(world.across - 0.15) < 0.07) & (world.along > 0.4) & (debris_level > 0.55)
    debris = on & ((score > 0.62) | medial) & ~snow & (facies != class_index("firn"))
    facies[debris] = class_index("debris")
    facies[world.lake] = class_index("water")
    # every pixel's surface type (off-glacier: rock, meadow low down, snow above the snowline)
    surface = np.full(g.shape, _SURF["rock"], np.uint8)
    mean_snow = float(np.mean(list(snowline.values())))
    off_snow = ~on & (z_eff > mean_snow + (60 if season == "early" else 150)) & (world.slope < 42)
    surface[off_snow] = _SURF["snow"]
    meadow = ~on & (world.dem < 2450 + 40 * patch) & (world.slope < 35)
    surface[meadow] = _SURF["meadow"]
    known = facies != NODATA_CLASS
    lut = np.array([_SURF.get(name, 0) for name in CLASS_NAMES], np.uint8)
    surface[known] = lut[facies[known]]
    return facies, surface


def _cloud_field(world: _World, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A few cumulus blobs with ragged edges; 3-7% of the scene opaque, two blobs over ice."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    field = np.zeros((HEIGHT, WIDTH), np.float32)
    n = int(rng.integers(4, 8))
    ice_r, ice_c = np.nonzero(world.glacier > 0)
    for k in range(n):
        if k < 2:
            i = int(rng.integers(len(ice_r)))
            r, c = ice_r[i], ice_c[i]
        else:
            r, c = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
        a, b = rng.uniform(15, 40, 2)
        field += np.exp(-(((yy - r) / a) ** 2 + ((xx - c) / b) ** 2))
    field *= 1 + 0.35 * _noise(rng, 4)  # ragged edges, texture inside
    frac = rng.uniform(0.03, 0.07)
    thr = max(float(np.quantile(field, 1 - frac)), 0.3)  # never a scene-wide haze
    return field, thr


def _opacity(field: np.ndarray, thr: float, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Cloud opacity 0..1 (class cloud where >= 0.5); `shift` advects it between overpasses."""
    f = np.roll(field, shift, axis=(0, 1)) if shift != (0, 0) else field
    return np.clip((f - thr) / (0.4 * thr) + 0.5, 0, 1).astype(np.float32)


def _date_states(world: _World, rng: np.random.Generator) -> dict[str, _DateState]:
    """Snow/firn lines per glacier and date (rising through summer), facies, clouds."""
    states: dict[str, _DateState] = {}
    for year in sorted({s.year for s in _SCENES}):
        end_aar = {2022: (0.12, 0.32), 2023: (0.22, 0.45)}.get(year, (0.2, 0.45))
        firn_end, snow_end = {}, {}
        for gi in range(1, len(world.specs) + 1):
            z = np.sort(world.dem[world.glacier == gi])
            target = rng.uniform(*end_aar)
            firn_end[gi] = float(np.quantile(z, 1 - target))
            snow_end[gi] = float(min(firn_end[gi] + rng.uniform(60, 150), np.quantile(z, 0.93)))
        for spec in sorted({s.date: s for s in _SCENES if s.year == year}.values(),
                           key=lambda s: s.time):
            if spec.season == "end":
                firn, snow = firn_end, snow_end
            else:
                snow = {}
                for gi in firn_end:
                    z_min = float(world.dem[world.glacier == gi].min())
                    snow[gi] = max(firn_end[gi] - rng.uniform(250, 400), z_min + 120)
                firn = dict(snow)
            facies, surface = _zonation(world, spec.season, firn, snow, rng)
            field, thr = _cloud_field(world, rng)
            states[spec.date] = _DateState(facies, surface, field, thr, snow, firn)
    return states


# ------------------------------------------------------------------ rendering


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks of the last two axes (the 10 m grid nests in 20/30 m grids)."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // k, k, w // k, k).mean(axis=(-3, -1))


def _render(world: _World, state: _DateState, spec: _SceneSpec, sun_az: float, sun_el: float,
            shadow: np.ndarray, opacity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Surface reflectance (6, H, W) at 10 m before resampling and sensor noise."""
    table = np.array([SPECTRA.get(n) or OTHER_SPECTRA[n] for n in _SURFACES], np.float32)
    refl = np.moveaxis(table[state.surface], -1, 0)  # (6, H, W)
    bright = 1 + 0.05 * np.clip(_noise(rng, 2), -2, 2)
    band_tex = 1 + 0.02 * np.clip(np.stack([_noise(rng, 3) for _ in range(6)]), -2, 2)
    grain = 1 + 0.08 * np.clip(_noise(rng, 5), -2, 2)  # snow grain size acts on NIR/SWIR
    refl = refl * bright * band_tex
    refl[3:] *= grain
    cos_i = (terrain.hillshade(world.dem, PIXEL_M, sun_az, sun_el).astype(np.float32) - 1) / 254
    illum = np.clip(1 + 0.25 * (cos_i / np.sin(np.radians(sun_el)) - 1), 0.8, 1.2)
    diffuse = np.array(SHADOW_DIFFUSE_FRACTION, np.float32)[:, None, None]
    refl = np.where(shadow[None], refl * diffuse, refl * illum)
    cloud = np.array(SPECTRA["cloud"], np.float32)[:, None, None] * (1 + 0.04 * _noise(rng, 3))
    refl = (1 - opacity) * refl + opacity * cloud
    family = "sentinel2" if spec.sensor == "sentinel2" else "landsat"
    factor = np.array(SENSOR_BAND_FACTOR[family], np.float32)[:, None, None]
    gain = 1 + rng.uniform(-0.02, 0.02)
    return (refl * factor * gain).astype(np.float32)


def _sensor_noise(refl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add signal-dependent sensor noise (sigma = 0.003 + 0.008 * reflectance)."""
    sigma = 0.003 + 0.008 * np.clip(refl, 0, None)
    return (refl + sigma * rng.standard_normal(refl.shape).astype(np.float32)).astype(np.float32)


# ------------------------------------------------------------------ writers


def _transform(res: float):
    from affine import Affine

    return Affine(res, 0.0, X0, 0.0, -res, Y0)


def _write_tif(path: Path, data: np.ndarray, res: float, nodata, colormap=None,
               descriptions: tuple[str, ...] | None = None) -> None:
    """Deterministic compressed GeoTIFF (no timestamps) on the sample grid at `res` metres."""
    import rasterio

    arr = data if data.ndim == 3 else data[None]
    predictor = 3 if arr.dtype.kind == "f" else 2
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype.name, crs=f"EPSG:{CRS_EPSG}", transform=_transform(res),
                   nodata=nodata, compress="deflate", predictor=predictor, tiled=True,
                   blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
            if colormap is not None:
                dst.write_colormap(1, colormap)
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)


def _scene_centre_lonlat() -> tuple[float, float]:
    from rasterio.warp import transform

    lon, lat = transform(f"EPSG:{CRS_EPSG}", "EPSG:4326", [X0 + WIDTH * PIXEL_M / 2],
                         [Y0 - HEIGHT * PIXEL_M / 2])
    return float(lon[0]), float(lat[0])


def _s2_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((refl - S2_OFFSET) / S2_SCALE), 1, 65534).astype(np.uint16)


def _landsat_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((refl - LANDSAT_OFFSET) / LANDSAT_SCALE), 1, 65535).astype(np.uint16)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _write_s2(folder: Path, spec: _SceneSpec, refl: np.ndarray, sun_az: float, sun_el: float,
              rng: np.random.Generator) -> Path:
    """A Sentinel-2 L2A-like .SAFE folder: band GeoTIFFs (.tif, not .jp2), MTD_MSIL2A.xml,
    GRANULE/<granule>/MTD_TL.xml, laid out and named as in an ESA product."""
    safe = folder / f"{spec.scene_id}.SAFE"
    abs_orbit = 28000 + (spec.time - dt.datetime(2022, 7, 1)).days * 14 // 10
    granule = f"L2A_T32TPS_A{abs_orbit:06d}_{spec.time:%Y%m%dT%H%M%S}"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    stem = f"T32TPS_{spec.time:%Y%m%dT%H%M%S}"
    files = []
    for b, band in enumerate(S2_BANDS):
        res = S2_BAND_RES[band]
        data = _block_mean(refl[b], res // 10) if res > 10 else refl[b]
        dn = _s2_dn(_sensor_noise(data, rng))
        rel = f"GRANULE/{granule}/IMG_DATA/R{res}m/{stem}_{band}_{res}m"
        _write_tif(img / f"R{res}m" / f"{stem}_{band}_{res}m.tif", dn, res, 0)
        files.append(rel)
    start = spec.time
    stop = start + dt.timedelta(seconds=1, milliseconds=24)
    gen = dt.datetime.strptime(spec.scene_id.rsplit("_", 1)[1], "%Y%m%dT%H%M%S")
    image_files = "\n".join(f"            <IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offsets = "\n".join(
        f'        <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13)
    )
    mtd = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{_iso(start)}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{_iso(stop)}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{spec.scene_id}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>
      <PRODUCT_DOI>https://doi.org/10.5270/S2_-znk9xsj</PRODUCT_DOI>
      <GENERATION_TIME>{_iso(gen)}</GENERATION_TIME>
      <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
      <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
      <Datatake datatakeIdentifier="GS2B_{start:%Y%m%dT%H%M%S}_{abs_orbit:06d}_N05.09">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{_iso(start)}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>108</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="S2B_OPER_MSI_L2A_DS_2BPS_{gen:%Y%m%dT%H%M%S}_S{start:%Y%m%dT%H%M%S}_N05.09" granuleIdentifier="S2B_OPER_MSI_L2A_TL_2BPS_{gen:%Y%m%dT%H%M%S}_A{abs_orbit:06d}_T32TPS_N05.09" imageFormat="GeoTIFF">
{image_files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
      </BOA_ADD_OFFSET_VALUES_LIST>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""
    (safe / "MTD_MSIL2A.xml").write_text(mtd, encoding="utf-8")
    tl = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">S2B_OPER_MSI_L2A_TL_2BPS_{gen:%Y%m%dT%H%M%S}_A{abs_orbit:06d}_T32TPS_N05.09</TILE_ID>
    <DATASTRIP_ID metadataLevel="Standard">S2B_OPER_MSI_L2A_DS_2BPS_{gen:%Y%m%dT%H%M%S}_S{start:%Y%m%dT%H%M%S}_N05.09</DATASTRIP_ID>
    <DOWNLINK_PRIORITY metadataLevel="Standard">NOMINAL</DOWNLINK_PRIORITY>
    <SENSING_TIME metadataLevel="Standard">{_iso(start + dt.timedelta(seconds=6, milliseconds=412))}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone 32N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{CRS_EPSG}</HORIZONTAL_CS_CODE>
      <Size resolution="10">
        <NROWS>{HEIGHT}</NROWS>
        <NCOLS>{WIDTH}</NCOLS>
      </Size>
      <Size resolution="20">
        <NROWS>{HEIGHT // 2}</NROWS>
        <NCOLS>{WIDTH // 2}</NCOLS>
      </Size>
      <Geoposition resolution="10">
        <ULX>{X0:.0f}</ULX>
        <ULY>{Y0:.0f}</ULY>
        <XDIM>10</XDIM>
        <YDIM>-10</YDIM>
      </Geoposition>
      <Geoposition resolution="20">
        <ULX>{X0:.0f}</ULX>
        <ULY>{Y0:.0f}</ULY>
        <XDIM>20</XDIM>
        <YDIM>-20</YDIM>
      </Geoposition>
    </Tile_Geocoding>
    <Tile_Angles metadataLevel="Standard">
      <Mean_Sun_Angle>
        <ZENITH_ANGLE unit="deg">{90 - sun_el:.6f}</ZENITH_ANGLE>
        <AZIMUTH_ANGLE unit="deg">{sun_az:.6f}</AZIMUTH_ANGLE>
      </Mean_Sun_Angle>
      <Mean_Viewing_Incidence_Angle_List>
        <Mean_Viewing_Incidence_Angle bandId="1">
          <ZENITH_ANGLE unit="deg">4.1</ZENITH_ANGLE>
          <AZIMUTH_ANGLE unit="deg">106.2</AZIMUTH_ANGLE>
        </Mean_Viewing_Incidence_Angle>
      </Mean_Viewing_Incidence_Angle_List>
    </Tile_Angles>
  </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(tl, encoding="utf-8")
    return safe


def _landsat_nodata(spec: _SceneSpec, world: _World) -> np.ndarray:
    """(H/3, W/3) bool: a swath-edge corner without data, kept clear of glaciers and lakes."""
    rows, cols = np.mgrid[0 : HEIGHT // 3, 0 : WIDTH // 3]
    keep = ndimage.binary_dilation((world.glacier > 0) | world.lake, iterations=25)
    keep30 = _block_mean(keep.astype(np.float32), 3) > 0
    size = 45
    while size > 0:
        corner = (cols + rows < size) if spec.sensor == "landsat9" else (
            (WIDTH // 3 - 1 - cols) + (HEIGHT // 3 - 1 - rows) < size)
        if not (corner & keep30).any():
            return corner
        size -= 5
    return np.zeros_like(keep30)


def _write_landsat(folder: Path, spec: _SceneSpec, refl: np.ndarray, nodata30: np.ndarray,
                   sun_az: float, sun_el: float, rng: np.random.Generator) -> Path:
    """A Landsat Collection-2 Level-2-like folder: <id>_SR_B2..B7.TIF (30 m) and <id>_MTL.txt."""
    pid = spec.scene_id
    out = folder / pid
    data = _sensor_noise(_block_mean(refl, 3), rng)
    dn = _landsat_dn(data)
    dn[:, nodata30] = 0
    for b, band in enumerate(LANDSAT_BANDS):
        _write_tif(out / f"{pid}_{band}.TIF", dn[b], 30, 0)
    sid = "LANDSAT_9" if spec.sensor == "landsat9" else "LANDSAT_8"
    proc = dt.datetime.strptime(pid.split("_")[4], "%Y%m%d") + dt.timedelta(hours=3, minutes=7)
    cloud_pct = float(rng.uniform(3, 9))
    x1, y1 = X0 + WIDTH * PIXEL_M, Y0 - HEIGHT * PIXEL_M
    files = "\n".join(f'    FILE_NAME_BAND_{b[-1]} = "{pid}_{b}.TIF"' for b in LANDSAT_BANDS)
    params = "\n".join(
        f"    REFLECTANCE_MAXIMUM_BAND_{b[-1]} = 1.602213\n"
        f"    REFLECTANCE_MINIMUM_BAND_{b[-1]} = -0.199972" for b in LANDSAT_BANDS
    )
    quant = "\n".join(
        f"    QUANTIZE_CAL_MAX_BAND_{b[-1]} = 65535\n    QUANTIZE_CAL_MIN_BAND_{b[-1]} = 1"
        for b in LANDSAT_BANDS
    )
    mult = "\n".join(f"    REFLECTANCE_MULT_BAND_{b[-1]} = 2.75e-05" for b in LANDSAT_BANDS)
    add = "\n".join(f"    REFLECTANCE_ADD_BAND_{b[-1]} = -0.200000" for b in LANDSAT_BANDS)
    secs = spec.time.second + spec.time.microsecond / 1e6
    mtl = f"""GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    DIGITAL_OBJECT_IDENTIFIER = "https://doi.org/10.5066/P9OGBGM6"
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
    COLLECTION_CATEGORY = "T1"
    OUTPUT_FORMAT = "GEOTIFF"
{files}
    FILE_NAME_METADATA_ODL = "{pid}_MTL.txt"
    DATA_TYPE_BAND_2 = "UINT16"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "{sid}"
    SENSOR_ID = "OLI_TIRS"
    WRS_TYPE = 2
    WRS_PATH = 193
    WRS_ROW = 27
    NADIR_OFFNADIR = "NADIR"
    TARGET_WRS_PATH = 193
    TARGET_WRS_ROW = 27
    DATE_ACQUIRED = {spec.date}
    SCENE_CENTER_TIME = "{spec.time:%H:%M}:{secs:010.7f}Z"
    STATION_ID = "LGN"
    CLOUD_COVER = {cloud_pct:.2f}
    CLOUD_COVER_LAND = {cloud_pct:.2f}
    IMAGE_QUALITY_OLI = 9
    IMAGE_QUALITY_TIRS = 9
    SUN_AZIMUTH = {sun_az:.8f}
    SUN_ELEVATION = {sun_el:.8f}
    EARTH_SUN_DISTANCE = 1.0086000
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = PROJECTION_ATTRIBUTES
    MAP_PROJECTION = "UTM"
    DATUM = "WGS84"
    ELLIPSOID = "WGS84"
    UTM_ZONE = 32
    GRID_CELL_SIZE_REFLECTIVE = 30.00
    REFLECTIVE_LINES = {HEIGHT // 3}
    REFLECTIVE_SAMPLES = {WIDTH // 3}
    ORIENTATION = "NORTH_UP"
    CORNER_UL_PROJECTION_X_PRODUCT = {X0:.3f}
    CORNER_UL_PROJECTION_Y_PRODUCT = {Y0:.3f}
    CORNER_UR_PROJECTION_X_PRODUCT = {x1:.3f}
    CORNER_UR_PROJECTION_Y_PRODUCT = {Y0:.3f}
    CORNER_LL_PROJECTION_X_PRODUCT = {X0:.3f}
    CORNER_LL_PROJECTION_Y_PRODUCT = {y1:.3f}
    CORNER_LR_PROJECTION_X_PRODUCT = {x1:.3f}
    CORNER_LR_PROJECTION_Y_PRODUCT = {y1:.3f}
  END_GROUP = PROJECTION_ATTRIBUTES
  GROUP = LEVEL2_PROCESSING_RECORD
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    PROCESSING_SOFTWARE_VERSION = "LPGS_16.1.0"
    ALGORITHM_SOURCE_SURFACE_REFLECTANCE = "LaSRC_1.5.0"
    DATE_PRODUCT_GENERATED = {proc:%Y-%m-%dT%H:%M:%SZ}
  END_GROUP = LEVEL2_PROCESSING_RECORD
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
{quant}
{mult}
{add}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""
    (out / f"{pid}_MTL.txt").write_text(mtl, encoding="ascii")
    return out


# ------------------------------------------------------------------ outlines, labels, WGMS

#: How a deliberately wrong label is drawn from the true class (mostly among facies).
_FLIPS: dict[str, dict[str, float]] = {
    "ice": {"firn": 0.4, "refrozen-like": 0.3, "debris": 0.3},
    "snow": {"firn": 0.8, "ice": 0.1, "cloud": 0.1},
    "firn": {"ice": 0.5, "snow": 0.5},
    "debris": {"ice": 0.8, "shadow": 0.2},
    "refrozen-like": {"ice": 0.6, "firn": 0.2, "snow": 0.2},
    "shadow": {"ice": 0.5, "debris": 0.5},
    "water": {"shadow": 0.5, "ice": 0.5},
    "cloud": {"snow": 1.0},
}
FLIP_FRACTION = 0.10
LABELS_PER_CLASS = {"sentinel2": 110, "landsat": 55}  # per scene, fewer where a class is rare


def _glacier_ids(i: int) -> tuple[str, int]:
    """(RGI-like id, WGMS-like id) of the i-th glacier (1-based)."""
    return f"RGI60-11.9{i:04d}", 90000 + i


def _outlines(world: _World):
    """One polygon per glacier from the glacier mask (pixel-exact, so rasterising the outline
    gives the mask back); drops stray pixels that are not part of the main polygon."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    rows = []
    for gi, spec in enumerate(world.specs, start=1):
        mask = world.glacier == gi
        polys = [shape(geom) for geom, _ in shapes(mask.astype(np.uint8), mask=mask,
                                                    transform=_transform(PIXEL_M))]
        geom = unary_union(polys)
        if geom.geom_type == "MultiPolygon":
            geom = max(geom.geoms, key=lambda p: p.area)
        rgi_id, wgms_id = _glacier_ids(gi)
        rows.append({"rgi_id": rgi_id, "name": spec.name, "region": spec.region,
                     "wgms_id": wgms_id, "area_km2": round(geom.area / 1e6, 6), "geometry": geom})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{CRS_EPSG}")
    # keep the raster mask identical to the outlines
    from rasterio.features import rasterize

    world.glacier[:] = rasterize(((g, i) for i, g in enumerate(gdf.geometry, start=1)),
                                 out_shape=(HEIGHT, WIDTH), transform=_transform(PIXEL_M),
                                 dtype="int32")
    world.lake &= world.glacier == 0
    return gdf


def _write_gpkg(gdf, path: Path, layer: str) -> None:
    """GeoPackage with a fixed last_change date, so the file is byte-identical per seed."""
    import pyogrio

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_GPKG_DATE})
    try:
        pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def _sample_labels(spec: _SceneSpec, classes: np.ndarray, opacity: np.ndarray,
                   nearest: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Expert-like points on clear examples: the class fills the 5 x 5 neighbourhood (so also
    the point's 20 m and 30 m pixels), thin cloud is avoided, >= 20 px from the scene edge."""
    family = "sentinel2" if spec.sensor == "sentinel2" else "landsat"
    quota = LABELS_PER_CLASS[family]
    inner = np.zeros(classes.shape, bool)
    inner[LABEL_EDGE_PX:-LABEL_EDGE_PX, LABEL_EDGE_PX:-LABEL_EDGE_PX] = True
    clear = ndimage.maximum_filter(opacity, 5) < 0.1
    opaque = ndimage.minimum_filter(opacity, 5) >= 0.85
    box = np.ones((5, 5), bool)
    out = []
    for code, name in enumerate(CLASS_NAMES):
        ok = ndimage.binary_erosion(classes == code, box) & inner
        ok &= opaque if name == "cloud" else clear
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        pick = np.sort(rng.choice(idx, size=min(quota, idx.size), replace=False))
        r, c = np.divmod(pick, WIDTH)
        for rr, cc in zip(r, c, strict=True):
            out.append({"true_class": name, "row": int(rr), "col": int(cc),
                        "glacier_i": int(nearest[rr, cc])})
    return out


def _fmt_csv_row(values) -> str:
    """One line in the FoG CSV style: text quoted, numbers bare, missing values empty."""
    parts = []
    for v in values:
        if v is None:
            parts.append("")
        elif isinstance(v, str):
            parts.append('"' + v.replace('"', '""') + '"')
        else:
            parts.append(str(v))
    return ",".join(parts)


_OVERVIEW_COLUMNS = (
    "POLITICAL_UNIT", "NAME", "WGMS_ID", "Year", "TIME_SYSTEM", "BEGIN_PERIOD", "END_WINTER",
    "END_PERIOD", "ELA_PREFIX", "ELA", "ELA_UNC", "MIN_SITES_ACC", "MAX_SITES_ACC",
    "MIN_SITES_ABL", "MAX_SITES_ABL", "ACC_AREA", "ACC_AREA_UNC", "ABL_AREA", "ABL_AREA_UNC",
    "AAR", "PUB_IN_MBB", "PUB_IN_FOG", "INVESTIGATOR", "SPONS_AGENCY", "REFERENCE", "REMARKS",
)
_MB_COLUMNS = ("YEAR", "WGMS_ID", "POLITICAL_UNIT", "NAME", "AREA", "WINTER_BALANCE",
               "SUMMER_BALANCE", "ANNUAL_BALANCE", "REMARKS", "RGI_ID")
#: Mass balance = slope * (AAR - AAR0) + noise, per glacier (m w.e.): see `_write_wgms`.
MB_SLOPE_MWE, MB_AAR0, MB_NOISE_MWE = 3.0, 0.55, 0.2


def _write_wgms(folder: Path, world: _World, end_truth: dict[tuple[int, int], tuple[float, float, str]],
                rng: np.random.Generator) -> list[dict]:
    """FoG-layout overview and mbdata tables, 2004-2023; scene years carry the scenes' AAR."""
    (folder / "mbdata").mkdir(parents=True)
    overview = [_fmt_csv_row(_OVERVIEW_COLUMNS)]
    params = []
    for gi, spec in enumerate(world.specs, start=1):
        rgi_id, wgms_id = _glacier_ids(gi)
        z = world.dem[world.glacier == gi]
        area = float((world.glacier == gi).sum()) * PIXEL_M**2 / 1e6
        slope = MB_SLOPE_MWE * (1 + rng.uniform(-0.1, 0.1))
        aar0 = MB_AAR0 + rng.uniform(-0.05, 0.05)
        params.append({"rgi_id": rgi_id, "slope_mwe": slope, "aar0": aar0})
        mb_lines = [",".join(_MB_COLUMNS)]
        prev_end = f"{_WGMS_YEARS[0] - 1}0925"
        for year in _WGMS_YEARS:
            area_y = round(area * (1 + 0.004 * (_WGMS_YEARS[-1] - year)), 5)
            if (gi, year) in end_truth:
                aar, ela, end_date = end_truth[(gi, year)]
                end_period = end_date.replace("-", "")
            else:
                aar = float(np.clip(rng.normal(0.45, 0.15), 0.03, 0.9))
                ela = float(np.quantile(z, 1 - aar))
                end_period = f"{year}09{int(rng.integers(15, 30)):02d}"
            annual = round(1000 * (slope * (aar - aar0) + rng.normal(0, MB_NOISE_MWE)))
            winter = round(float(rng.normal(1300, 200)))
            overview.append(_fmt_csv_row((
                spec.political_unit, spec.name.upper(), wgms_id, year, "FLO", int(prev_end),
                int(f"{year}0430"), int(end_period), None, round(ela), None, None, None, None,
                None, round(aar * area_y, 6), None, round((1 - aar) * area_y, 6), None,
                round(100 * aar, 6), None, None, "glacierfacies sample generator", None, None,
                "Synthetic glacier of the glacierfacies built-in sample.",
            )))
            mb_lines.append(_fmt_csv_row((
                year, wgms_id, spec.political_unit, spec.name.upper(), area_y, float(winter),
                float(annual - winter), float(annual), None, rgi_id)).replace('"', ""))
            prev_end = end_period
        (folder / "mbdata" / f"mbdata_WGMS-{wgms_id:05d}.csv").write_text(
            "\n".join(mb_lines) + "\n", encoding="latin-1")
    (folder / "WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv").write_text(
        "\n".join(overview) + "\n", encoding="latin-1")
    return params


# ------------------------------------------------------------------ the whole sample

_README = """\
glacierfacies built-in sample (seed {seed}) -- a synthetic but realistic glacier world.
Everything here is made up by glacierfacies.sample (glaciers, names and ids are fictitious);
rasters are on one UTM 32N (EPSG:32632) grid, upper-left corner ({x0:.0f}, {y0:.0f}),
{w} x {h} pixels of 10 m; the 20 m and 30 m grids nest in it.

dem.tif            elevation, float32 metres, nodata -9999
outlines.gpkg      one polygon per glacier: rgi_id, name, region, wgms_id, area_km2
scenes/            one folder per scene, laid out as the real products:
  S2B_MSIL2A_*.SAFE/  Sentinel-2 L2A-like: GRANULE/*/IMG_DATA/R10m/*_B02_10m.tif (B02 B03
                      B04 B08), R20m/*_B11_20m.tif (B11 B12); GeoTIFF (.tif) instead of JPEG2000.
                      uint16, reflectance = (DN - 1000) / 10000 (BOA_ADD_OFFSET -1000,
                      QUANTIFICATION 10000, baseline 05.09), 0 = nodata. MTD_MSIL2A.xml
                      (PRODUCT_START_TIME, ...) and GRANULE/*/MTD_TL.xml (Mean_Sun_Angle).
  LC0[89]_L2SP_*/     Landsat 8/9 Collection-2 Level-2-like: *_SR_B2..B7.TIF (30 m, uint16,
                      reflectance = DN * 2.75e-5 - 0.2, 0 = nodata) and *_MTL.txt.
labels.gpkg        labelled points: point_id, class, glacier (rgi_id), scene_id, date, sensor,
                   region; ~10% of the classes are deliberately wrong
flipped_labels.csv point_id, true_class, given_class of the wrong labels
truth/             class_<scene_id>.tif: true class map (uint8 codes in classes.py order,
                   255 = not a labelled surface), facies_<scene_id>.tif: the surface under
                   cloud and shadow, aar_truth.csv: per glacier and scene the true AAR
                   ((snow + firn) / glacier area seen through clouds; aar_full ignores cloud),
                   aar_with_refrozen, observed_fraction, snowline_m, firnline_m;
                   mass_balance_model.csv: the per-glacier relation used for wgms/
wgms/              WGMS FoG-layout tables, 2004-2023: WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv
                   (ELA, AAR in percent) and mbdata/mbdata_WGMS-NNNNN.csv (balances in mm w.e.);
                   annual balance = slope * (AAR - AAR0) + noise; in 2022 and 2023 AAR equals
                   aar_full of the end-of-season scene
"""


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    parent = out_dir.parent
    if not parent.is_dir():
        raise InputError(parent, "output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(parent, "output folder is not writable")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "output exists; pass --overwrite to replace it")


def write_sample(out_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> str:
    """Write the built-in sample to `out_dir` (atomically) and return a short summary.

    Deterministic: the same seed gives byte-identical files; another seed another world.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(out_dir, f"seed must be an integer >= 0, got {seed!r}")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite)
    try:
        return _generate(out_dir, seed, overwrite)
    except OSError as exc:  # unwritable, read-only or full file system: one line, no traceback
        raise InputError(out_dir, f"cannot write the sample: {exc.strerror or exc}") from exc


def _generate(out_dir: Path, seed: int, overwrite: bool) -> str:
    import geopandas as gpd
    import pandas as pd
    from tqdm import tqdm

    streams = np.random.SeedSequence(int(seed)).spawn(5)
    rng_world, rng_state, rng_label, rng_wgms = (np.random.default_rng(s) for s in streams[:4])
    scene_rngs = [np.random.default_rng(s) for s in streams[4].spawn(len(_SCENES))]

    world = _make_world(rng_world)
    outlines = _outlines(world)
    states = _date_states(world, rng_state)
    lon, lat = _scene_centre_lonlat()
    glacier_mask = world.glacier > 0
    _, (ir, ic) = ndimage.distance_transform_edt(~glacier_mask, return_indices=True)
    nearest = world.glacier[ir, ic]
    facies_codes = {class_index(n) for n in ("snow", "firn")}
    refrozen = class_index("refrozen-like")
    cloud_code, shadow_code = class_index("cloud"), class_index("shadow")

    with atomic_output(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir()
        _write_tif(tmp / "dem.tif", world.dem, PIXEL_M, DEM_NODATA, descriptions=("elevation_m",))
        _write_gpkg(outlines, tmp / "outlines.gpkg", "outlines")
        labels, aar_rows, end_truth = [], [], {}
        for spec, rng in tqdm(list(zip(_SCENES, scene_rngs, strict=True)), desc="sample scenes",
                              unit="scene", disable=None):
            state = states[spec.date]
            az, el = (float(v) for v in terrain.solar_position(spec.time, lat, lon))
            az, el = round(az, 6), round(el, 6)  # as written to the metadata
            shadow = terrain.cast_shadow(world.dem, PIXEL_M, az, el)
            is_landsat = spec.sensor != "sentinel2"
            opacity = _opacity(state.cloud_field, state.cloud_thr, (5, -8) if is_landsat else (0, 0))
            valid = np.ones((HEIGHT, WIDTH), bool)
            nodata30 = None
            if is_landsat:
                nodata30 = _landsat_nodata(spec, world)
                valid = ~np.repeat(np.repeat(nodata30, 3, 0), 3, 1)
            facies = state.facies.copy()
            classes = facies.copy()
            classes[(facies != NODATA_CLASS) & shadow] = shadow_code
            classes[opacity >= 0.5] = cloud_code
            facies[~valid] = NODATA_CLASS
            classes[~valid] = NODATA_CLASS
            refl = _render(world, state, spec, az, el, shadow, opacity, rng)
            if is_landsat:
                _write_landsat(tmp / "scenes", spec, refl, nodata30, az, el, rng)
            else:
                _write_s2(tmp / "scenes", spec, refl, az, el, rng)
            cmap = colour_table()
            _write_tif(tmp / "truth" / f"class_{spec.scene_id}.tif", classes, PIXEL_M,
                       NODATA_CLASS, colormap=cmap)
            _write_tif(tmp / "truth" / f"facies_{spec.scene_id}.tif", facies, PIXEL_M,
                       NODATA_CLASS, colormap=cmap)
            for lab in _sample_labels(spec, classes, opacity, nearest, rng_label):
                labels.append({**lab, "spec": spec})
            for gi in range(1, len(world.specs) + 1):
                gl = world.glacier == gi
                seen = gl & valid & (classes != cloud_code)
                acc = np.isin(facies, list(facies_codes))
                n_gl, n_seen = int(gl.sum()), int(seen.sum())
                aar_full = float((gl & acc).sum() / n_gl)
                aar_rows.append({
                    "glacier": _glacier_ids(gi)[0], "name": world.specs[gi - 1].name,
                    "scene_id": spec.scene_id, "date": spec.date, "sensor": spec.sensor,
                    "end_of_season": spec.season == "end",
                    "aar": round(float((seen & acc).sum() / max(n_seen, 1)), 8),
                    "aar_with_refrozen": round(float((seen & (acc | (facies == refrozen))).sum()
                                                     / max(n_seen, 1)), 8),
                    "aar_full": round(aar_full, 8),
                    "observed_fraction": round(n_seen / n_gl, 8),
                    "snowline_m": round(state.snowline[gi], 2),
                    "firnline_m": round(state.firnline[gi], 2),
                    "glacier_area_km2": n_gl * PIXEL_M**2 / 1e6,
                })
                if spec.season == "end":
                    end_truth[(gi, spec.year)] = (round(aar_full, 8), state.firnline[gi], spec.date)

        # labels: ids, ~10% flips, GeoPackage + record
        n = len(labels)
        weight = np.array([1.0 if c.is_facies else 0.25
                           for c in (CLASSES[class_index(lab["true_class"])] for lab in labels)])
        flip_idx = set(rng_label.choice(n, size=round(FLIP_FRACTION * n), replace=False,
                                        p=weight / weight.sum()).tolist())
        records, flipped = [], []
        for pid, lab in enumerate(labels):
            spec, gi = lab["spec"], lab["glacier_i"]
            given = lab["true_class"]
            if pid in flip_idx:
                options = _FLIPS[given]
                given = str(rng_label.choice(list(options), p=list(options.values())))
                flipped.append({"point_id": pid, "true_class": lab["true_class"],
                                "given_class": given, "scene_id": spec.scene_id})
            records.append({
                "point_id": pid, "class": given, "glacier": _glacier_ids(gi)[0],
                "scene_id": spec.scene_id, "date": spec.date, "sensor": spec.sensor,
                "region": world.specs[gi - 1].region,
                "x": X0 + (lab["col"] + 0.5) * PIXEL_M, "y": Y0 - (lab["row"] + 0.5) * PIXEL_M,
            })
        table = pd.DataFrame(records)
        points = gpd.GeoDataFrame(table.drop(columns=["x", "y"]),
                                  geometry=gpd.points_from_xy(table.x, table.y),
                                  crs=f"EPSG:{CRS_EPSG}")
        _write_gpkg(points, tmp / "labels.gpkg", "labels")
        pd.DataFrame(flipped, columns=["point_id", "true_class", "given_class", "scene_id"]).to_csv(
            tmp / "flipped_labels.csv", index=False, lineterminator="\n")
        pd.DataFrame(aar_rows).to_csv(tmp / "truth" / "aar_truth.csv", index=False,
                                      lineterminator="\n")
        params = _write_wgms(tmp / "wgms", world, end_truth, rng_wgms)
        pd.DataFrame(params).round(6).to_csv(tmp / "truth" / "mass_balance_model.csv",
                                             index=False, lineterminator="\n")
        (tmp / "README.txt").write_text(
            _README.format(seed=seed, x0=X0, y0=Y0, w=WIDTH, h=HEIGHT), encoding="utf-8")
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                digest.update(p.relative_to(tmp).as_posix().encode())
                digest.update(p.read_bytes())

    counts = pd.Series([r["class"] for r in records]).value_counts()
    per_class = ", ".join(f"{c} {int(counts.get(c, 0))}" for c in CLASS_NAMES)
    lines = [
        f"wrote the built-in sample (seed {seed}) to {out_dir} ({size / 1e6:.1f} MB, "
        f"sha256 {digest.hexdigest()[:12]})",
        f"  {len(world.specs)} glaciers in 2 regions, DEM {WIDTH}x{HEIGHT} px of 10 m "
        f"(EPSG:{CRS_EPSG})",
        f"  {len(_SCENES)} scenes: "
        + ", ".join(f"{s.sensor} {s.date}" for s in _SCENES),
        f"  {len(records)} labels ({len(flipped)} deliberately wrong): {per_class}",
        f"  truth in {out_dir / 'truth'}, WGMS-like tables in {out_dir / 'wgms'}",
    ]
    return "\n".join(lines)
