"""Glacier products and mass-balance statistics: pure array maths, no file I/O.

Three jobs, kept free of rasters and tables so they run anywhere numpy/scipy/sklearn do:

* **Products** of one glacier in one facies map (`glacier_products`): area per class, the
  observed fraction, the accumulation-area ratio (AAR) of snow and of snow + firn, the
  snowline and firn-line altitudes, their uncertainties, and the mean confidence.
* **End-of-season selection** (`end_of_season`, `balance_year`): per glacier and balance
  year, the scene that stands for the end of the ablation season, chosen among well-observed
  scenes of the season window by a rule that one noisy scene cannot fool.
* **Regressions** of annual balance (m w.e.) on a product (AAR or snowline altitude): one
  global line scored by leave-one-glacier-out, and per-glacier lines scored by
  leave-one-year-out, with guards against the degenerate fits described in
  ``../shared/data/README.md`` (see `RegressionGuards`), and bootstrap intervals.

Conventions (also in ``docs/massbalance.md``):

* *observed* pixels are glacier pixels that are neither nodata (255) nor cloud. Shadow hides
  the surface; three ways to count it (`ProductConfig.shadow`), none of them a silent
  fallback: ``"snowline"`` (default): a shadowed glacier pixel takes the side of the
  snowline / firn line (estimated from the sunlit pixels) it lies on, and counts as
  observed; needs a DEM (an error without one). ``"exclude"``: shadow is unobserved (left
  out of the AAR and the observed fraction). ``"probabilities"``: with class probabilities
  (an error without them) a shadow pixel counts as its most likely surface facies.
  Water on a glacier is a visible surface: observed, and on the ablation side.
* Accumulation (`ProductConfig.accumulation`): ``"snow"`` (default; end-of-season snow
  cover, what WGMS AAR and ELA refer to: firn exposed below the snowline at the end of a
  negative year is ablation area) or ``"snow+firn"``. ``aar`` follows the chosen definition;
  ``aar_snow_firn`` is always given. Refrozen-like counts as accumulation only with
  ``refrozen_is_accumulation``.
* ``snowline_m`` is the lower limit of snow, ``firnline_m`` the lower limit of snow + firn:
  each the elevation z that minimises #(pixels of the zone below z) + #(other pixels at or
  above z) over observed glacier pixels. With no firn exposed the two coincide. When a
  glacier has no pixel of the zone, or only such pixels, the line is NaN. A line that falls
  in a band with no observed pixel deeper than `ProductConfig.line_gap_m` (cast shadow over
  the tongue) is placed at the lower edge of the observed zone, its uncertainty spanning
  the band.
* Uncertainties (``*_unc``, one standard uncertainty) come from the calibrated class
  probabilities by correlated draws (`products.uncertainty`; for the lines combined in
  quadrature with the cost-tolerance width), else from the calibrated confidence
  (conservatively), else only the lines' cost-tolerance width is given; the column
  ``uncertainty_method`` says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from glacierfacies.classes import CLASS_NAMES, N_CLASSES, NODATA_CLASS, class_index
from glacierfacies.products import uncertainty
from glacierfacies.products.fitting import (  # noqa: F401  (re-exported: mb.regress, ...)
    GlacierFit,
    LinearFit,
    RegressionGuards,
    RegressionResult,
    Score,
    bootstrap_intervals,
    leave_one_glacier_out,
    leave_one_year_out,
    regress,
)

ICE, SNOW, DEBRIS, FIRN, SHADOW, REFROZEN, WATER, CLOUD = (
    class_index(n) for n in ("ice", "snow", "debris", "firn", "shadow", "refrozen-like",
                              "water", "cloud")
)


SURFACE_FACIES: tuple[int, ...] = (ICE, SNOW, DEBRIS, FIRN, REFROZEN)


ACCUMULATION_DEFINITIONS: tuple[str, ...] = ("snow", "snow+firn")


SHADOW_METHODS: tuple[str, ...] = ("snowline", "exclude", "probabilities")


PRODUCT_COLUMNS: tuple[str, ...] = (
    *(f"area_km2_{n}" for n in CLASS_NAMES),
    "glacier_area_km2",
    "observed_fraction",
    "aar",
    "aar_unc",
    "aar_snow_firn",
    "aar_snow_firn_unc",
    "snowline_m",
    "snowline_unc_m",
    "firnline_m",
    "firnline_unc_m",
    "mean_confidence",
    "aar_member_sd",
    "accumulation",
    "shadow_method",
    "uncertainty_method",
    "uncertainty_note",
    "firn_mapped",
)


#: `uncertainty_method` values: the definition, and the two labelled fallbacks
UNCERTAINTY_METHODS: dict[str, str] = {
    "probabilities+members": "",
    "probabilities": "no member classes in the probabilities raster (a single model, or a "
                     "map written before them): the ensemble members' spread is not in it",
    "fallback:confidence-bound": (
        "fallback: no class probabilities for this map; a bound from the calibrated "
        "confidence, which can differ from the probabilities' value either way"),
    "fallback:cost-tolerance": (
        "fallback: neither probabilities nor confidence; line widths from the "
        "misclassification cost, aar_unc the AAR change of a line moved by that width"),
}


@dataclass(frozen=True)
class ProductConfig:
    """How class maps become glacier products (serialised next to every products table).

    `uncertainty_block_m` is the side of the blocks within which classification errors are
    drawn together (default: the 330 m footprint of the model's 33 x 33 patches at 10 m,
    the scale over which neighbouring pixels share their input); `uncertainty_draws` draws
    with `uncertainty_seed` make the uncertainties reproducible.
    """

    accumulation: Literal["snow", "snow+firn"] = "snow"
    refrozen_is_accumulation: bool = False
    shadow: Literal["snowline", "exclude", "probabilities"] = "snowline"
    snowline_tolerance: float = 0.01  # cost tolerance (fraction of observed pixels) for the unc.
    line_gap_m: float = 50.0  # a line in an unobserved band deeper than this: see `line`
    uncertainty_block_m: float = 330.0
    uncertainty_draws: int = 200
    uncertainty_seed: int = 0
    #: below this fraction of the outline inside the scene's valid footprint: a warning and
    #: the flag ``outline_in_scene<...``; below `outline_withhold_below` the AAR, snowline and
    #: firn line are withheld (NaN, flag ``withheld``): they would be those of a clip
    outline_warn_below: float = 0.99
    outline_withhold_below: float = 0.9

    def __post_init__(self) -> None:
        if self.shadow not in SHADOW_METHODS:
            raise ValueError("shadow must be 'exclude', 'probabilities' or 'snowline', "
                             f"got {self.shadow!r}")
        if self.accumulation not in ACCUMULATION_DEFINITIONS:
            raise ValueError(f"accumulation must be 'snow' or 'snow+firn', got "
                             f"{self.accumulation!r}")
        if not 0 <= self.snowline_tolerance < 1:
            raise ValueError("snowline_tolerance must be in [0, 1)")
        if not self.line_gap_m > 0:
            raise ValueError("line_gap_m must be > 0")
        if not 0 <= self.outline_withhold_below <= self.outline_warn_below <= 1:
            raise ValueError("need 0 <= outline_withhold_below <= outline_warn_below <= 1")
        if not self.uncertainty_block_m > 0 or self.uncertainty_draws < 2:
            raise ValueError("uncertainty_block_m must be > 0 and uncertainty_draws >= 2")

    @property
    def snow_codes(self) -> tuple[int, ...]:
        """Classes of the snow zone (above the snowline)."""
        return (SNOW, REFROZEN) if self.refrozen_is_accumulation else (SNOW,)

    @property
    def snow_firn_codes(self) -> tuple[int, ...]:
        """Classes of the snow + firn zone (above the firn line)."""
        return (*self.snow_codes, FIRN)

    @property
    def accumulation_codes(self) -> tuple[int, ...]:
        """Classes counted in ``aar`` under the chosen definition."""
        return self.snow_codes if self.accumulation == "snow" else self.snow_firn_codes

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> ProductConfig:
        return replace(self, **changes)


def resolve_shadow(
    class_map: np.ndarray, probabilities: np.ndarray | None, config: ProductConfig
) -> np.ndarray:
    """Class map with shadow replaced by its most likely surface facies when so configured.

    `probabilities` is (8, H, W) in class order; ``shadow="probabilities"`` without them is
    an error (no silent switch to another method).
    """
    if config.shadow != "probabilities":
        return class_map
    if probabilities is None:
        raise ValueError("shadow='probabilities' needs class probabilities")
    if probabilities.shape != (N_CLASSES, *class_map.shape):
        raise ValueError(
            f"probabilities shape {probabilities.shape} != {(N_CLASSES, *class_map.shape)}"
        )
    shadow = class_map == SHADOW
    if not shadow.any():
        return class_map
    facies = np.asarray(SURFACE_FACIES)
    best = facies[np.argmax(probabilities[facies][:, shadow], axis=0)]
    out = class_map.copy()
    out[shadow] = best.astype(class_map.dtype)
    return out


def observed_mask(class_map: np.ndarray) -> np.ndarray:
    """Pixels whose surface is seen: not nodata, cloud or (not yet resolved) shadow."""
    return (class_map != NODATA_CLASS) & (class_map != CLOUD) & (class_map != SHADOW)


@dataclass(frozen=True)
class SortedElevations:
    """Observed pixels sorted by elevation once, so that many zone masks (draws) reuse it."""

    order: np.ndarray  # indices that sort the finite input elevations
    z: np.ndarray  # sorted elevations
    boundaries: np.ndarray  # k: a threshold between z[k-1] and z[k] (distinct elevations)
    thresholds: np.ndarray  # 0.5 * (z[k-1] + z[k])
    keep: np.ndarray  # bool mask of finite input elevations

    @classmethod
    def of(cls, elevation_m: np.ndarray) -> SortedElevations:
        z = np.asarray(elevation_m, dtype=np.float64).ravel()
        keep = np.isfinite(z)
        order = np.argsort(z[keep], kind="stable")
        zs = z[keep][order]
        k = np.nonzero(np.diff(zs) > 0)[0] + 1
        return cls(order, zs, k, 0.5 * (zs[k - 1] + zs[k]) if k.size else np.empty(0), keep)

    def sort(self, values: np.ndarray) -> np.ndarray:
        """A per-pixel array (same length as the elevations given) in elevation order."""
        return np.asarray(values).ravel()[self.keep][self.order]

    def line(self, zone_sorted: np.ndarray, tolerance: float = 0.01,
             max_gap_m: float = np.inf) -> tuple[float, float]:
        """(line, cost-tolerance uncertainty) for one zone mask already in elevation order.

        The line lies half-way between the observed elevations either side of the best
        threshold, unless they are more than `max_gap_m` apart (a band with no observed
        pixel, e.g. cast shadow over the tongue): then it is the lower edge of the observed
        zone, the lowest elevation at which the zone is seen (where an analyst would draw the
        visible line), and the uncertainty spans the whole unobserved band.
        """
        zone = np.asarray(zone_sorted, dtype=bool)
        n = self.z.size
        n_zone = int(zone.sum())
        if n == 0 or n_zone in (0, n) or self.boundaries.size == 0:
            return float("nan"), float("nan")
        # cost of a threshold after position k (k pixels below): zone pixels among the first k
        # plus other pixels among the rest
        zone_below = np.concatenate([[0], np.cumsum(zone)])
        c = 2 * zone_below[self.boundaries] - self.boundaries + (n - n_zone)
        cmin = c.min()
        best = self.thresholds[c == cmin]
        m = best.size
        z_best = float(best[(m - 1) // 2]) if m % 2 else float(
            0.5 * (best[m // 2 - 1] + best[m // 2]))
        i = int(np.searchsorted(self.z, z_best))
        if self.local_gap(z_best) > max_gap_m:
            z_best = float(self.z[min(i, n - 1)])  # lower edge of the observed zone
        near = self.thresholds[c <= cmin + tolerance * n]
        unc = float(max(z_best - near.min(), near.max() - z_best))
        # a step of the DEM resolution (or an unobserved band) is the floor
        return z_best, max(unc, self.step_floor(z_best, max_gap_m))

    def local_gap(self, z_line: float) -> float:
        """Elevation gap between the observed pixels either side of a line (DEM step)."""
        n = self.z.size
        i = int(np.searchsorted(self.z, z_line))
        return float(self.z[min(i, n - 1)] - self.z[max(i - 1, 0)]) if n else float("nan")

    def step_floor(self, z_line: float, max_gap_m: float = np.inf) -> float:
        """Least uncertainty of a line: half the local elevation gap, or all of it where the
        line sits at the edge of an unobserved band deeper than `max_gap_m`."""
        gap = self.local_gap(z_line)
        return gap if gap > max_gap_m else 0.5 * gap


def snowline_altitude(
    elevation_m: np.ndarray, accumulation: np.ndarray, tolerance: float = 0.01,
    max_gap_m: float = np.inf,
) -> tuple[float, float]:
    """Elevation that best separates a zone (above) from the rest (below), and its unc.

    Minimises cost(z) = #(zone, elev < z) + #(rest, elev >= z) over thresholds half-way
    between consecutive distinct elevations; ties give the middle threshold. The
    uncertainty is the largest distance to a threshold whose cost is within
    ``tolerance * n`` of the minimum (at least half the local elevation gap). Returns
    (nan, nan) without both kinds of pixels. The zone is snow for the snowline and
    snow + firn for the firn line. `max_gap_m`: see `SortedElevations.line`.
    """
    se = SortedElevations.of(elevation_m)
    return se.line(se.sort(np.asarray(accumulation, dtype=bool)), tolerance, max_gap_m)


def _zone_fraction(zone: np.ndarray, obs: np.ndarray) -> float:
    n = int(obs.sum())
    return float((zone & obs).sum() / n) if n else float("nan")


def glacier_products(
    class_map: np.ndarray,
    glacier_mask: np.ndarray,
    elevation_m: np.ndarray | None,
    pixel_area_m2: float,
    confidence: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    config: ProductConfig = ProductConfig(),
    firn_mapped: bool = True,
    member_maps: np.ndarray | None = None,
) -> dict[str, float | str]:
    """Products of one glacier in one map, keyed by the `PRODUCT_COLUMNS` names.

    `member_maps` (k, H, W) uint8: the ensemble members' own class maps (k >= 2); with
    probabilities, the spread of their products (standard deviation over the members) is
    added in quadrature to the draws' uncertainty (`uncertainty.member_spread`).

    `firn_mapped` False (the map's model was never trained on firn): the firn area, firn
    line and snow + firn AAR (and `aar` under ``accumulation="snow+firn"``) are NaN rather
    than a firn line equal to the snowline and a firn area of 0.

    `class_map` (H, W) uint8 codes, `glacier_mask` (H, W) bool, `elevation_m` (H, W) (NaN where
    unknown) or None, `confidence` (H, W) uint8 percent (255 = nodata) or float 0..1 (NaN =
    nodata) or None (``mean_confidence`` is in percent), `probabilities` (8, H, W) calibrated
    class probabilities or None (they resolve shadow when so configured, and give the
    uncertainties). ``shadow="snowline"`` without elevations is a ValueError.
    """
    glacier_mask = np.asarray(glacier_mask, dtype=bool)
    if class_map.shape != glacier_mask.shape:
        raise ValueError(f"class map {class_map.shape} and mask {glacier_mask.shape} differ")
    if config.shadow == "snowline" and elevation_m is None:
        raise ValueError("shadow='snowline' needs elevations (a DEM); use shadow='exclude'")
    cmap = resolve_shadow(class_map, probabilities, config)
    codes = cmap[glacier_mask]
    n_glacier = int(glacier_mask.sum())
    km2 = pixel_area_m2 / 1e6
    counts = np.bincount(codes[codes < N_CLASSES].astype(np.int64), minlength=N_CLASSES)
    out: dict[str, float | str] = {
        f"area_km2_{name}": float(counts[i] * km2) for i, name in enumerate(CLASS_NAMES)
    }
    out["glacier_area_km2"] = float(n_glacier * km2)
    sunlit = observed_mask(cmap) & glacier_mask
    n_sunlit = int(sunlit.sum())
    snow = np.isin(cmap, config.snow_codes)
    snow_firn = np.isin(cmap, config.snow_firn_codes)
    nan = float("nan")
    se = None
    sl = sl_unc = fl = fl_unc = nan
    if elevation_m is not None and n_sunlit:
        elevation_m = np.asarray(elevation_m, dtype=np.float64)
        se = SortedElevations.of(elevation_m[sunlit])
        sl, sl_unc = se.line(se.sort(snow[sunlit]), config.snowline_tolerance,
                             config.line_gap_m)
        fl, fl_unc = se.line(se.sort(snow_firn[sunlit]), config.snowline_tolerance,
                             config.line_gap_m)
    obs = sunlit
    shade = np.zeros_like(sunlit)
    if config.shadow == "snowline" and n_sunlit:
        # shadowed glacier pixels take the side of the snowline / firn line they lie on
        shade = glacier_mask & (cmap == SHADOW) & np.isfinite(elevation_m)
        snow = snow | (shade & _above(elevation_m, sl, snow[sunlit]))
        snow_firn = snow_firn | (shade & _above(elevation_m, fl, snow_firn[sunlit]))
        obs = sunlit | shade
    n_obs = int(obs.sum())
    out["observed_fraction"] = n_obs / n_glacier if n_glacier else nan
    aar_snow, aar_sf = _zone_fraction(snow, obs), _zone_fraction(snow_firn, obs)
    unc = uncertainty.ProductUncertainty.none()
    if n_sunlit and (probabilities is not None or confidence is not None):
        # one definition: the calibrated probabilities whenever they exist (a confidence
        # map given beside them changes nothing); the confidence bound only without them
        unc = uncertainty.product_uncertainty(
            cmap, sunlit, shade, elevation_m, se, config, probabilities,
            None if probabilities is not None else confidence,
            pixel_size_m=float(np.sqrt(pixel_area_m2)), lines=(sl, fl))
    spread = None
    if unc.method == "probabilities" and member_maps is not None and len(member_maps) > 1:
        member_cfg = config.replace(accumulation="snow")  # `aar` of a member: snow only
        if config.shadow == "probabilities":  # members have no probabilities of their own
            member_cfg = member_cfg.replace(
                shadow="snowline" if elevation_m is not None else "exclude")
        spread = uncertainty.member_spread(
            [glacier_products(m, glacier_mask, elevation_m, pixel_area_m2, config=member_cfg)
             for m in member_maps])
    snow_only = config.accumulation == "snow"
    note = ""
    if unc.method == "none":  # the labelled fallback: the AAR a line moved by its width gives
        aar_s_unc, note = _line_width_aar_unc(se, sl, sl_unc, n_sunlit)
        aar_f_unc, _ = _line_width_aar_unc(se, fl, fl_unc, n_sunlit)
        unc = uncertainty.ProductUncertainty(aar_s_unc, aar_f_unc, nan, nan, "none")
    out["aar"] = aar_snow if snow_only else aar_sf
    out["aar_unc"] = unc.aar_snow if snow_only else unc.aar_snow_firn
    out["aar_snow_firn"], out["aar_snow_firn_unc"] = aar_sf, unc.aar_snow_firn
    out["snowline_m"], out["firnline_m"] = sl, fl
    if unc.method == "none":
        out["snowline_unc_m"], out["firnline_unc_m"] = sl_unc, fl_unc
    else:  # draws and the cost-tolerance width together; the DEM step stays the floor
        gap = config.line_gap_m
        floor_s = se.step_floor(sl, gap) if se is not None and np.isfinite(sl) else nan
        floor_f = se.step_floor(fl, gap) if se is not None and np.isfinite(fl) else nan
        out["snowline_unc_m"] = _floor(float(np.hypot(unc.snowline_m, sl_unc)), floor_s, sl)
        out["firnline_unc_m"] = _floor(float(np.hypot(unc.firnline_m, fl_unc)), floor_f, fl)
    out["aar_member_sd"] = nan if spread is None else spread["aar_snow" if snow_only
                                                             else "aar_snow_firn"]
    if spread is not None:  # the model error between members, beside the pixels' own
        for key, sk in (("aar_unc", "aar_snow" if snow_only else "aar_snow_firn"),
                        ("aar_snow_firn_unc", "aar_snow_firn"),
                        ("snowline_unc_m", "snowline_m"), ("firnline_unc_m", "firnline_m")):
            if np.isfinite(out[key]) and np.isfinite(spread[sk]):
                out[key] = float(np.hypot(out[key], spread[sk]))
        unc = uncertainty.ProductUncertainty(unc.aar_snow, unc.aar_snow_firn, unc.snowline_m,
                                             unc.firnline_m, "probabilities+members")
    if confidence is None and probabilities is not None:  # the same number: confidence is
        # the calibrated probability of the model's class (the ensemble mean's maximum)
        pv = np.asarray(probabilities)[:, glacier_mask & (class_map != NODATA_CLASS)]
        pv = pv[:, np.isfinite(pv).all(axis=0)]
        out["mean_confidence"] = float(100.0 * pv.max(axis=0).mean()) if pv.size else nan
    elif confidence is not None:
        raw = np.asarray(confidence)
        conf = raw[glacier_mask & (cmap != NODATA_CLASS)].astype(np.float64)
        if np.issubdtype(raw.dtype, np.integer):
            conf = conf[conf <= 100]  # uint8 percent, 255 = nodata
        else:
            conf = conf[np.isfinite(conf)] * 100.0  # float probability 0..1
        conf = conf[np.isfinite(conf)]
        out["mean_confidence"] = float(conf.mean()) if conf.size else nan
    else:
        out["mean_confidence"] = nan
    out["accumulation"] = config.accumulation
    out["shadow_method"] = config.shadow
    method = {"none": "fallback:cost-tolerance", "confidence": "fallback:confidence-bound"
              }.get(unc.method, unc.method)
    out["uncertainty_method"] = method
    out["uncertainty_note"] = "; ".join(t for t in (UNCERTAINTY_METHODS[method], note) if t)
    out["firn_mapped"] = bool(firn_mapped)
    if not firn_mapped:  # the model cannot see firn: say so, do not report a firn line
        for key in ("area_km2_firn", "aar_snow_firn", "aar_snow_firn_unc", "firnline_m",
                    "firnline_unc_m", *(() if snow_only else ("aar", "aar_unc"))):
            out[key] = nan
    return out


def _line_width_aar_unc(se: SortedElevations | None, line: float, width: float,
                        n_sunlit: int) -> tuple[float, str]:
    """Fallback AAR uncertainty: the larger share of sunlit observed pixels between the line
    and the line moved by its cost-tolerance width (up or down); (NaN, reason) without one."""
    nan = float("nan")
    if se is None:
        return nan, "no DEM: no line, so no AAR uncertainty"
    if not np.isfinite(line) or not np.isfinite(width) or not n_sunlit:
        return nan, "no line on the glacier (all or none of it in the zone)"
    z = se.z
    below = int(np.searchsorted(z, line, "left") - np.searchsorted(z, line - width, "left"))
    above = int(np.searchsorted(z, line + width, "left") - np.searchsorted(z, line, "left"))
    return max(below, above) / n_sunlit, ""


def _above(elevation_m: np.ndarray, line: float, zone_sunlit: np.ndarray) -> np.ndarray:
    """Pixels above a line; without a line on the glacier, all or none (as the sunlit ones)."""
    if np.isfinite(line):
        return elevation_m >= line
    return np.full(elevation_m.shape, bool(zone_sunlit.size and zone_sunlit.all()))


def _floor(unc: float, floor: float, line: float) -> float:
    if not np.isfinite(line):
        return float("nan")
    return float(np.nanmax([unc, floor])) if np.isfinite(unc) or np.isfinite(floor) else unc


# ------------------------------------------------------------------ end-of-season selection
def hydrological_year(dates: np.ndarray, start_month: int = 10) -> np.ndarray:
    """Hydrological year of each date, named after the calendar year in which it ends.

    With ``start_month=10`` 2020-10-01 .. 2021-09-30 is year 2021; ``start_month=1`` gives
    calendar years; ``start_month=4`` suits the southern hemisphere. This is how balance
    records name their years; scenes are booked to balance years by `balance_year`.
    """
    if not 1 <= start_month <= 12:
        raise ValueError(f"start_month must be 1..12, got {start_month}")
    d = np.asarray(dates, dtype="datetime64[D]")
    year = d.astype("datetime64[Y]").astype(int) + 1970
    month = (d.astype("datetime64[M]").astype(int) % 12) + 1
    return year + ((month >= start_month) & (start_month != 1)).astype(int)


#: End of the ablation season: Aug-Oct in the northern, Feb-Apr in the southern hemisphere.
SEASON_MONTHS: dict[str, tuple[int, ...]] = {"north": (8, 9, 10), "south": (2, 3, 4)}


#: First month of the hydrological year of balance records, per hemisphere.
HYDRO_YEAR_START: dict[str, int] = {"north": 10, "south": 4}


LATE_SEASON_MONTHS: tuple[int, ...] = SEASON_MONTHS["north"]


END_OF_SEASON_RULES: tuple[str, ...] = ("robust", "minimum", "latest")


def _season_run(season_months: tuple[int, ...]) -> tuple[int, bool]:
    """(opening month, wraps past December) of a window of consecutive months."""
    months = sorted({int(m) for m in season_months})
    if not months or not all(1 <= m <= 12 for m in months):
        raise ValueError(f"season months must be 1..12, got {season_months}")
    if len(months) == 12:
        raise ValueError("a season window of all 12 months has no end")
    # the opening month is the one whose predecessor is not in the window
    opening = [m for m in months if (m - 2) % 12 + 1 not in months]
    if len(opening) != 1:
        raise ValueError(f"season months must be consecutive, got {season_months}")
    first = opening[0]
    return first, first + len(months) - 1 > 12


def balance_year(
    dates: np.ndarray,
    season_months: tuple[int, ...] = LATE_SEASON_MONTHS,
    start_month: int = 10,
) -> np.ndarray:
    """Balance year of each scene in the season window; -1 for scenes outside it.

    A scene in the window belongs to the balance year whose ablation season it closes: the
    hydrological year (`hydrological_year`, `start_month`) in which its window opens.
    Northern hemisphere, Aug-Oct: a 2021-10-03 scene closes the 2021 season (not 2022, which
    the October start of the hydrological year would give); southern, Feb-Apr with
    ``start_month=4``: a 2021-04-10 scene closes 2021. Windows may wrap past December
    (e.g. 11, 12, 1: January scenes belong to the window opened in the November before).
    """
    first, wraps = _season_run(season_months)
    d = np.asarray(dates, dtype="datetime64[D]")
    year = d.astype("datetime64[Y]").astype(np.int64) + 1970
    month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    inside = np.isin(month, np.asarray(sorted(set(season_months))))
    opening_year = year - (wraps & (month < first)).astype(np.int64)
    opening = np.array([f"{y:04d}-{first:02d}-01" for y in opening_year], dtype="datetime64[D]")
    out = hydrological_year(opening, start_month) if len(d) else np.empty(0, np.int64)
    return np.where(inside, out, -1).astype(np.int64)


def _robust_keep(days: np.ndarray, aar: np.ndarray, unc: np.ndarray, k: float) -> np.ndarray:
    """Which scenes of one glacier-year survive the spike test (see `end_of_season`)."""
    n = aar.size
    keep = np.ones(n, bool)
    while keep.sum() >= 3:
        idx = np.nonzero(keep)[0]
        t, a, u = days[idx], aar[idx], unc[idx]
        z = np.zeros(idx.size)
        for j in range(idx.size):
            if 0 < j < idx.size - 1:
                nb = (j - 1, j + 1)  # interpolate between the neighbours
            elif j == 0:
                nb = (1, 2)  # extrapolate from the next two
            else:
                nb = (j - 2, j - 1)  # extrapolate from the previous two
            (t0, a0, u0), (t1, a1, u1) = ((t[i], a[i], u[i]) for i in nb)
            w = 0.5 if t1 == t0 else (t[j] - t0) / (t1 - t0)
            ref = a0 + w * (a1 - a0)
            u_ref = np.hypot((1 - w) * u0, w * u1)
            z[j] = abs(a[j] - ref) / max(np.hypot(u[j], u_ref), 1e-12)
        worst = int(np.argmax(z))
        if z[worst] <= k:
            break
        keep[idx[worst]] = False
    return keep


def end_of_season(
    glacier: np.ndarray,
    dates: np.ndarray,
    aar: np.ndarray,
    observed_fraction: np.ndarray,
    min_observed: float = 0.8,
    start_month: int = 10,
    season_months: tuple[int, ...] | None = LATE_SEASON_MONTHS,
    rule: str = "robust",
    aar_unc: np.ndarray | None = None,
    min_unc: float = 0.02,
    k: float = 2.0,
) -> np.ndarray:
    """Indices of the end-of-season scene per (glacier, balance year), sorted.

    Candidates: scenes in the season window (`balance_year`; None = any month, booked to
    hydrological years) with ``observed_fraction >= min_observed`` and a finite AAR; scenes
    outside the window are never candidates. Rules:

    * ``"robust"`` (default): drop, one at a time and worst first, a scene whose AAR departs
      from what its neighbours in time give (interpolation between the previous and next
      candidate; extrapolation from the two nearest at either end) by more than `k` times the
      combined standard uncertainty (`aar_unc`, at least `min_unc`), while three or more
      candidates remain; then the minimum AAR among the rest. One noisy scene (a spike)
      cannot be picked; a steady decline to the end of the season is kept.
    * ``"minimum"``: the minimum AAR (biased low under noise and frequent revisits).
    * ``"latest"``: the latest candidate.

    Ties: the latest date.
    """
    if rule not in END_OF_SEASON_RULES:
        raise ValueError(f"rule must be one of {END_OF_SEASON_RULES}, got {rule!r}")
    glacier = np.asarray(glacier)
    dates = np.asarray(dates, dtype="datetime64[D]")
    aar = np.asarray(aar, dtype=np.float64)
    obs = np.asarray(observed_fraction, dtype=np.float64)
    unc = (np.full(aar.shape, np.nan) if aar_unc is None
           else np.asarray(aar_unc, dtype=np.float64))
    unc = np.where(np.isfinite(unc), np.maximum(unc, min_unc), min_unc)
    if season_months is None:
        year = hydrological_year(dates, start_month)
    else:
        year = balance_year(dates, tuple(season_months), start_month)
    ok = np.nonzero(np.isfinite(aar) & (obs >= min_observed) & (year >= 0))[0]
    groups: dict[tuple, list[int]] = {}
    for i in ok:
        groups.setdefault((glacier[i], int(year[i])), []).append(int(i))
    days = dates.astype(np.int64).astype(np.float64)
    chosen = []
    for members in groups.values():
        m = np.array(sorted(members, key=lambda i: (dates[i], i)))
        if rule == "latest":
            chosen.append(int(m[-1]))
            continue
        keep = (_robust_keep(days[m], aar[m], unc[m], k) if rule == "robust"
                else np.ones(m.size, bool))
        cand = m[keep]
        best = cand[aar[cand] == aar[cand].min()]
        chosen.append(int(best[-1]))  # ties: the latest
    return np.array(sorted(chosen), dtype=np.int64)
