"""The synthetic world of the built-in sample: glaciers, DEM, surfaces, clouds, rendering."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glacierfacies import terrain
from glacierfacies.classes import CLASS_NAMES, NODATA_CLASS, class_index

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


@dataclass
class _DateState:
    """What the surface looks like on one date (shared by same-day scenes of both sensors)."""

    facies: np.ndarray  # (H, W) uint8 class code on glacier/lake, NODATA_CLASS elsewhere
    surface: np.ndarray  # (H, W) uint8 index into _SURFACES for every pixel
    cloud_field: np.ndarray  # (H, W) float32, opacity = clip((field - thr) / width + .5, 0, 1)
    cloud_thr: float
    snowline: dict[int, float]  # glacier -> transient snowline: lower limit of snow (m)
    firnline: dict[int, float]  # glacier -> firn line: lower limit of snow + firn (m)


def _zonation(world: _World, season: str, firnline: dict[int, float], snowline: dict[int, float],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Facies class map (glacier + lake) and the surface type of every pixel on one date."""
    z_eff = world.dem + 20 * _noise(rng, 4)  # patchy lines around the generator's own
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
        # firn exposed between the firn line and the snowline; refrozen-like patches
        # (superimposed ice) in a band just below the firn line
        firn = on & ~snow & (z_eff > firn_z)
        facies[firn] = class_index("firn")
        refrozen = on & ~snow & ~firn & (z_eff > firn_z - 60) & (patch > 1.0)
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


#: End-of-season snow-only AAR range per scene year: both years are negative (AAR below
#: the balance model's AAR0 of about 0.55), so firn lies exposed below the snowline.
END_SNOW_AAR: dict[int, tuple[float, float]] = {2022: (0.10, 0.28), 2023: (0.18, 0.40)}


def _date_states(world: _World, rng: np.random.Generator) -> dict[str, _DateState]:
    """Snowline and firn line per glacier and date (the generator's own parameters, before
    any noise: what truth/aar_truth.csv records), facies, clouds.

    At the end of the (negative) ablation season the snowline sits at the end-of-season
    snow-only AAR and firn lies exposed 60-150 m below it; early in the summer fresh snow
    still covers the firn, so the firn line is the snowline.
    """
    states: dict[str, _DateState] = {}
    for year in sorted({s.year for s in _SCENES}):
        end_aar = END_SNOW_AAR.get(year, (0.15, 0.40))
        firn_end, snow_end = {}, {}
        for gi in range(1, len(world.specs) + 1):
            z = np.sort(world.dem[world.glacier == gi])
            target = rng.uniform(*end_aar)
            snow_end[gi] = float(np.quantile(z, 1 - target))
            firn_end[gi] = float(max(snow_end[gi] - rng.uniform(60, 150),
                                     np.quantile(z, 0.05)))
        for spec in sorted({s.date: s for s in _SCENES if s.year == year}.values(),
                           key=lambda s: s.time):
            if spec.season == "end":
                firn, snow = firn_end, snow_end
            else:
                snow = {}
                for gi in snow_end:
                    z_min = float(world.dem[world.glacier == gi].min())
                    snow[gi] = max(snow_end[gi] - rng.uniform(320, 520), z_min + 120)
                firn = dict(snow)
            facies, surface = _zonation(world, spec.season, firn, snow, rng)
            field, thr = _cloud_field(world, rng)
            states[spec.date] = _DateState(facies, surface, field, thr, snow, firn)
    return states


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

