"""Glacier products and mass-balance statistics: pure array maths, no file I/O.

Three jobs, kept free of rasters and tables so they run anywhere numpy/scipy/sklearn do:

* **Products** of one glacier in one facies map (`glacier_products`): area per class, the
  observed fraction, the accumulation-area ratio (AAR), the snowline altitude with an
  uncertainty, and the mean confidence.
* **End-of-season selection** (`end_of_season`): per glacier and hydrological year, the
  scene with the minimum AAR among sufficiently observed scenes, which is what AAR-based
  mass-balance methods expect (the snowline is highest at the end of the ablation season).
* **Regressions** of annual balance (m w.e.) on a product (AAR or snowline altitude): one
  global line scored by leave-one-glacier-out, and per-glacier lines scored by
  leave-one-year-out, with guards against the degenerate fits described in
  ``../shared/data/README.md`` (see `RegressionGuards`).

Conventions (also in ``docs/massbalance.md``):

* *observed* pixels are glacier pixels that are neither nodata (255) nor cloud. Shadow hides
  the surface; three ways to count it (`ProductConfig.shadow`):
  ``"snowline"`` (default): a shadowed glacier pixel takes the side of the snowline altitude
  (estimated from the sunlit pixels) it lies on, and counts as observed; needs a DEM, else
  it falls back to ``"exclude"``. On the built-in sample's true maps this recovers the true
  AAR within 0.03 where excluding shadow is off by up to 0.14 in late-season scenes.
  ``"exclude"``: shadow is unobserved (left out of the AAR and the observed fraction).
  ``"probabilities"``: with class probabilities a shadow pixel is counted as its most likely
  surface facies (ice, snow, debris, firn, refrozen-like) and is observed.
  Water on a glacier is a visible surface: observed, and on the ablation side.
* AAR = accumulation area / observed area, accumulation = snow + firn (+ refrozen-like when
  ``refrozen_is_accumulation``).
* The snowline altitude is the elevation z that minimises the misclassification
  #(accumulation pixels below z) + #(ablation pixels at or above z) over observed glacier
  pixels; its uncertainty is the largest distance from z to any threshold whose cost is within
  1% of the observed pixel count of the minimum. When a glacier has no accumulation or no
  ablation pixels there is no snowline on it and both are NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
from scipy import stats
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneGroupOut

from glacierfacies.classes import CLASS_NAMES, N_CLASSES, NODATA_CLASS, class_index

ICE, SNOW, DEBRIS, FIRN, SHADOW, REFROZEN, WATER, CLOUD = (
    class_index(n) for n in ("ice", "snow", "debris", "firn", "shadow", "refrozen-like",
                              "water", "cloud")
)


SURFACE_FACIES: tuple[int, ...] = (ICE, SNOW, DEBRIS, FIRN, REFROZEN)


PRODUCT_COLUMNS: tuple[str, ...] = (
    *(f"area_km2_{n}" for n in CLASS_NAMES),
    "glacier_area_km2",
    "observed_fraction",
    "aar",
    "snowline_m",
    "snowline_unc_m",
    "mean_confidence",
)


@dataclass(frozen=True)
class ProductConfig:
    """How class maps become glacier products (serialised next to every products table)."""

    refrozen_is_accumulation: bool = False
    shadow: Literal["snowline", "exclude", "probabilities"] = "snowline"
    snowline_tolerance: float = 0.01  # cost tolerance (fraction of observed pixels) for the unc.

    def __post_init__(self) -> None:
        if self.shadow not in ("exclude", "probabilities", "snowline"):
            raise ValueError("shadow must be 'exclude', 'probabilities' or 'snowline', "
                             f"got {self.shadow!r}")
        if not 0 <= self.snowline_tolerance < 1:
            raise ValueError("snowline_tolerance must be in [0, 1)")

    @property
    def accumulation_codes(self) -> tuple[int, ...]:
        return (SNOW, FIRN, REFROZEN) if self.refrozen_is_accumulation else (SNOW, FIRN)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_shadow(
    class_map: np.ndarray, probabilities: np.ndarray | None, config: ProductConfig
) -> np.ndarray:
    """Class map with shadow replaced by its most likely surface facies when so configured.

    `probabilities` is (8, H, W) in class order. Without probabilities the map is unchanged
    (shadow then stays unobserved, whatever the configuration).
    """
    if config.shadow != "probabilities" or probabilities is None:
        return class_map
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


def snowline_altitude(
    elevation_m: np.ndarray, accumulation: np.ndarray, tolerance: float = 0.01
) -> tuple[float, float]:
    """Elevation that best separates accumulation (above) from ablation (below), and its unc.

    Minimises cost(z) = #(accumulation, elev < z) + #(ablation, elev >= z) over thresholds
    half-way between consecutive distinct elevations; ties give the middle threshold. The
    uncertainty is the largest distance to a threshold whose cost is within
    ``tolerance * n`` of the minimum. Returns (nan, nan) without both kinds of pixels.
    """
    z = np.asarray(elevation_m, dtype=np.float64).ravel()
    acc = np.asarray(accumulation, dtype=bool).ravel()
    keep = np.isfinite(z)
    z, acc = z[keep], acc[keep]
    n = z.size
    if n == 0 or acc.all() or not acc.any():
        return float("nan"), float("nan")
    order = np.argsort(z, kind="stable")
    z, acc = z[order], acc[order]
    # cost of putting the threshold after position k (k pixels below): acc among first k
    # plus ablation among the rest; only boundaries between distinct elevations are allowed.
    acc_below = np.concatenate([[0], np.cumsum(acc)])
    abl_total = n - acc.sum()
    abl_below = np.arange(n + 1) - acc_below
    cost = acc_below + (abl_total - abl_below)
    k = np.nonzero(np.diff(z) > 0)[0] + 1  # valid interior boundaries
    if k.size == 0:
        return float("nan"), float("nan")
    thresholds = 0.5 * (z[k - 1] + z[k])
    c = cost[k]
    cmin = c.min()
    best = thresholds[c == cmin]
    z_best = float(best[(best.size - 1) // 2]) if best.size % 2 else float(
        0.5 * (best[best.size // 2 - 1] + best[best.size // 2])
    )
    near = thresholds[c <= cmin + tolerance * n]
    unc = float(max(z_best - near.min(), near.max() - z_best))
    # a step of the DEM resolution is the floor: report at least half the local gap
    i = int(np.searchsorted(z, z_best))
    gap = float(z[min(i, n - 1)] - z[max(i - 1, 0)])
    return z_best, max(unc, 0.5 * gap)


def glacier_products(
    class_map: np.ndarray,
    glacier_mask: np.ndarray,
    elevation_m: np.ndarray | None,
    pixel_area_m2: float,
    confidence: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    config: ProductConfig = ProductConfig(),
) -> dict[str, float]:
    """Products of one glacier in one map, keyed by the `PRODUCT_COLUMNS` names.

    `class_map` (H, W) uint8 codes, `glacier_mask` (H, W) bool, `elevation_m` (H, W) (NaN where
    unknown) or None, `confidence` (H, W) uint8 percent (255 = nodata) or float 0..1 (NaN =
    nodata) or None (``mean_confidence`` is in percent), `probabilities`
    (8, H, W) or None (only used to resolve shadow, see `ProductConfig`).
    """
    glacier_mask = np.asarray(glacier_mask, dtype=bool)
    if class_map.shape != glacier_mask.shape:
        raise ValueError(f"class map {class_map.shape} and mask {glacier_mask.shape} differ")
    cmap = resolve_shadow(class_map, probabilities, config)
    codes = cmap[glacier_mask]
    n_glacier = int(glacier_mask.sum())
    km2 = pixel_area_m2 / 1e6
    counts = np.bincount(codes[codes < N_CLASSES].astype(np.int64), minlength=N_CLASSES)
    out: dict[str, float] = {
        f"area_km2_{name}": float(counts[i] * km2) for i, name in enumerate(CLASS_NAMES)
    }
    out["glacier_area_km2"] = float(n_glacier * km2)
    obs = observed_mask(cmap) & glacier_mask
    n_obs = int(obs.sum())
    acc = np.isin(cmap, config.accumulation_codes)
    if elevation_m is not None and n_obs:
        sl, unc = snowline_altitude(elevation_m[obs], acc[obs], config.snowline_tolerance)
    else:
        sl, unc = float("nan"), float("nan")
    if config.shadow == "snowline" and elevation_m is not None and n_obs:
        # shadowed glacier pixels take the side of the snowline they lie on
        shade = glacier_mask & (cmap == SHADOW) & np.isfinite(elevation_m)
        if np.isfinite(sl):
            above = np.asarray(elevation_m) >= sl
        else:  # no snowline on the glacier: all accumulation or all ablation
            above = np.full(cmap.shape, bool(acc[obs].all()))
        acc = acc | (shade & above)
        obs = obs | shade
        n_obs = int(obs.sum())
    out["observed_fraction"] = n_obs / n_glacier if n_glacier else float("nan")
    out["aar"] = float((acc & obs).sum() / n_obs) if n_obs else float("nan")
    out["snowline_m"], out["snowline_unc_m"] = sl, unc
    if confidence is not None:
        raw = np.asarray(confidence)
        conf = raw[glacier_mask & (cmap != NODATA_CLASS)].astype(np.float64)
        if np.issubdtype(raw.dtype, np.integer):
            conf = conf[conf <= 100]  # uint8 percent, 255 = nodata
        else:
            conf = conf[np.isfinite(conf)] * 100.0  # float probability 0..1
        conf = conf[np.isfinite(conf)]
        out["mean_confidence"] = float(conf.mean()) if conf.size else float("nan")
    else:
        out["mean_confidence"] = float("nan")
    return out


# ------------------------------------------------------------------ end-of-season selection
def hydrological_year(dates: np.ndarray, start_month: int = 10) -> np.ndarray:
    """Hydrological (balance) year of each date: the calendar year in which it ends.

    With ``start_month=10`` (northern hemisphere) 2020-10-01 .. 2021-09-30 is year 2021;
    ``start_month=1`` gives calendar years; ``start_month=4`` suits the southern hemisphere.
    """
    if not 1 <= start_month <= 12:
        raise ValueError(f"start_month must be 1..12, got {start_month}")
    d = np.asarray(dates, dtype="datetime64[D]")
    year = d.astype("datetime64[Y]").astype(int) + 1970
    month = (d.astype("datetime64[M]").astype(int) % 12) + 1
    return year + ((month >= start_month) & (start_month != 1)).astype(int)


LATE_SEASON_MONTHS: tuple[int, ...] = (8, 9, 10)  # Aug-Oct: end of ablation season (NH)


def end_of_season(
    glacier: np.ndarray,
    dates: np.ndarray,
    aar: np.ndarray,
    observed_fraction: np.ndarray,
    min_observed: float = 0.8,
    start_month: int = 10,
    season_months: tuple[int, ...] | None = LATE_SEASON_MONTHS,
) -> np.ndarray:
    """Indices of the end-of-season scene per (glacier, hydrological year), sorted.

    The end of the ablation season is when the AAR is lowest; only scenes with
    ``observed_fraction >= min_observed``, a finite AAR and an acquisition month in
    `season_months` compete (ties: the latest date). The month window (default August to
    October, northern hemisphere; None = any month) keeps an early-summer scene from
    standing in for the end of the season when the late scenes are cloudy: its AAR is far
    above the end-of-season value, so such a glacier-year is better left out.
    """
    glacier = np.asarray(glacier)
    dates = np.asarray(dates, dtype="datetime64[D]")
    aar = np.asarray(aar, dtype=np.float64)
    obs = np.asarray(observed_fraction, dtype=np.float64)
    hy = hydrological_year(dates, start_month)
    in_season = np.ones(len(dates), bool) if season_months is None else np.isin(
        dates.astype("datetime64[M]").astype(np.int64) % 12 + 1, np.asarray(season_months))
    ok = np.nonzero(np.isfinite(aar) & (obs >= min_observed) & in_season)[0]
    best: dict[tuple, int] = {}
    for i in ok:
        key = (glacier[i], int(hy[i]))
        j = best.get(key)
        if j is None or aar[i] < aar[j] or (aar[i] == aar[j] and dates[i] > dates[j]):
            best[key] = int(i)
    return np.array(sorted(best.values()), dtype=np.int64)


# ------------------------------------------------------------------ regressions
@dataclass(frozen=True)
class RegressionGuards:
    """Guards for per-glacier fits (see the pitfalls in ../shared/data/README.md).

    A glacier with at least `min_years` years is fitted on its own unless it has fewer than
    `min_interior_years` years with 0 < AAR < 1, or its AAR standard deviation is below
    `min_spread`; then its predictions come from the global leave-one-glacier-out model
    (reported as guarded, with the reason). For a non-AAR product (snowline altitude) only
    the spread test applies, with `min_spread_m` in metres. On WGMS's own AAR (all glaciers)
    the defaults guard 7 of 168 glaciers and move the pooled per-glacier leave-one-year-out
    score from r 0.880 / RMSE 0.405 (`RegressionGuards.off()`) to r 0.877 / RMSE 0.408.
    """

    min_years: int = 8
    min_interior_years: int = 5
    min_spread: float = 0.05
    min_spread_m: float = 20.0

    @classmethod
    def off(cls, min_years: int = 8) -> RegressionGuards:
        """No guards except the minimum number of years (the published-style figures)."""
        return cls(min_years=min_years, min_interior_years=0, min_spread=0.0, min_spread_m=0.0)


@dataclass
class LinearFit:
    """A straight line y = intercept + slope x fitted on n points (scipy.stats.linregress)."""

    slope: float
    intercept: float
    r: float
    p_value: float
    n: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> LinearFit:
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.size < 2 or np.ptp(x) == 0:
            return cls(0.0, float(np.mean(y)) if y.size else float("nan"), float("nan"),
                       float("nan"), int(x.size))
        res = stats.linregress(x, y)
        return cls(float(res.slope), float(res.intercept), float(res.rvalue),
                   float(res.pvalue), int(x.size))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(x, float)


@dataclass
class Score:
    """Pooled agreement of predictions with observations (held-out unless said otherwise)."""

    r: float
    rmse_mwe: float
    n: int
    p_value: float

    @classmethod
    def of(cls, predicted: np.ndarray, observed: np.ndarray) -> Score:
        p, o = np.asarray(predicted, float), np.asarray(observed, float)
        n = int(p.size)
        rmse = float(np.sqrt(np.mean((p - o) ** 2))) if n else float("nan")
        if n < 3 or np.ptp(p) == 0 or np.ptp(o) == 0:
            return cls(float("nan"), rmse, n, float("nan"))
        res = stats.pearsonr(p, o)
        return cls(float(res.statistic), rmse, n, float(res.pvalue))


@dataclass
class GlacierFit:
    """One glacier's own line, its leave-one-year-out score, or why it was guarded/skipped."""

    glacier: str
    n_years: int
    status: Literal["fitted", "guarded", "skipped"]
    reason: str = ""
    fit: LinearFit | None = None  # in-sample line on all its years
    loyo: Score | None = None  # leave-one-year-out score of its own model (or of the fallback)


@dataclass
class RegressionResult:
    """Everything `regress` found; `to_dict` is what goes into stats.json."""

    product: str
    global_fit: LinearFit  # all glacier-years, in sample
    global_logo: Score  # leave-one-glacier-out, pooled over all held-out glacier-years
    global_predicted: np.ndarray  # held-out prediction per input row
    per_glacier_loyo: Score  # pooled over all held-out years of glaciers with >= min_years
    per_glacier_in_sample: Score
    per_glacier_predicted: np.ndarray  # held-out prediction per row (NaN for skipped glaciers)
    glaciers: list[GlacierFit] = field(default_factory=list)
    guards: RegressionGuards = field(default_factory=RegressionGuards)

    def to_dict(self) -> dict:
        return {
            "product": self.product,
            "global_fit_in_sample": asdict(self.global_fit),
            "global_leave_one_glacier_out": asdict(self.global_logo),
            "per_glacier_leave_one_year_out": asdict(self.per_glacier_loyo),
            "per_glacier_in_sample": asdict(self.per_glacier_in_sample),
            "guards": asdict(self.guards),
            "n_glaciers": len({g.glacier for g in self.glaciers}),
            "n_fitted": sum(g.status == "fitted" for g in self.glaciers),
            "guarded": [
                {"glacier": str(g.glacier), "n_years": g.n_years, "reason": g.reason}
                for g in self.glaciers if g.status == "guarded"
            ],
            "skipped": [
                {"glacier": str(g.glacier), "n_years": g.n_years, "reason": g.reason}
                for g in self.glaciers if g.status == "skipped"
            ],
        }


def leave_one_glacier_out(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Held-out predictions of one global line, refitted without each glacier in turn."""
    x = np.asarray(x, float).reshape(-1, 1)
    y = np.asarray(y, float)
    pred = np.full(y.shape, np.nan)
    if np.unique(groups).size < 2:
        return pred
    for train, test in LeaveOneGroupOut().split(x, y, groups):
        pred[test] = LinearRegression().fit(x[train], y[train]).predict(x[test])
    return pred


def leave_one_year_out(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Held-out predictions of one glacier's line, refitted without each year in turn.

    A training set with constant x predicts its mean balance (what least squares gives).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = x.size
    pred = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        pred[i] = LinearFit.fit(x[keep], y[keep]).predict(x[i : i + 1])[0]
    return pred


def _guard_reason(x: np.ndarray, guards: RegressionGuards, aar_like: bool) -> str:
    if aar_like:
        interior = int(((x > 0) & (x < 1)).sum())
        if interior < guards.min_interior_years:
            return f"only {interior} years with 0 < AAR < 1 (< {guards.min_interior_years})"
        if float(np.std(x)) < guards.min_spread:
            return f"AAR spread {np.std(x):.3f} < {guards.min_spread}"
    elif float(np.std(x)) < guards.min_spread_m:
        return f"spread {np.std(x):.1f} m < {guards.min_spread_m} m"
    return ""


def regress(
    x: np.ndarray,
    balance_mwe: np.ndarray,
    glacier: np.ndarray,
    product: str = "aar",
    guards: RegressionGuards = RegressionGuards(),
) -> RegressionResult:
    """Balance ~ product: global leave-one-glacier-out and per-glacier leave-one-year-out.

    One row per glacier-year; rows with a non-finite x or balance are dropped first. Scores are
    pooled over all held-out predictions (r = Pearson r of held-out predictions vs observed
    balances, RMSE over the same). Glaciers with fewer than `guards.min_years` years are
    skipped in the per-glacier model (reported), never an error. AAR is a fraction (0..1).
    """
    x = np.asarray(x, float)
    y = np.asarray(balance_mwe, float)
    g = np.asarray(glacier).astype(str)
    if not (x.shape == y.shape == g.shape):
        raise ValueError("x, balance and glacier must have the same length")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} glacier-years with both {product} and balance")
    aar_like = product.lower().startswith("aar")
    global_pred = np.full(y.shape, np.nan)
    global_pred[ok] = leave_one_glacier_out(x[ok], y[ok], g[ok])
    gfit = LinearFit.fit(x[ok], y[ok])
    gl = np.isfinite(global_pred)
    global_score = Score.of(global_pred[gl], y[gl])
    per_pred = np.full(y.shape, np.nan)
    in_pred = np.full(y.shape, np.nan)
    glaciers: list[GlacierFit] = []
    for name in np.unique(g[ok]):
        idx = np.nonzero(ok & (g == name))[0]
        if idx.size < guards.min_years:
            glaciers.append(GlacierFit(str(name), int(idx.size), "skipped",
                                       f"{idx.size} years < {guards.min_years}"))
            continue
        reason = _guard_reason(x[idx], guards, aar_like)
        if reason:
            per_pred[idx] = global_pred[idx]
            in_pred[idx] = gfit.predict(x[idx])
            glaciers.append(GlacierFit(str(name), int(idx.size), "guarded", reason + "; used global",
                                       gfit, Score.of(per_pred[idx], y[idx])))
            continue
        per_pred[idx] = leave_one_year_out(x[idx], y[idx])
        fit = LinearFit.fit(x[idx], y[idx])
        in_pred[idx] = fit.predict(x[idx])
        glaciers.append(GlacierFit(str(name), int(idx.size), "fitted", "", fit,
                                   Score.of(per_pred[idx], y[idx])))
    pg = np.isfinite(per_pred)
    return RegressionResult(
        product=product,
        global_fit=gfit,
        global_logo=global_score,
        global_predicted=global_pred,
        per_glacier_loyo=Score.of(per_pred[pg], y[pg]),
        per_glacier_in_sample=Score.of(in_pred[pg], y[pg]),
        per_glacier_predicted=per_pred,
        glaciers=glaciers,
        guards=guards,
    )

