"""Regressions of annual balance on a glacier product: one global line scored
leave-one-glacier-out, per-glacier lines scored leave-one-year-out, guards against
degenerate fits, bootstrap intervals (pure numpy/scipy/sklearn, no file I/O).

`products.massbalance` re-exports these names, so `mb.regress` keeps working.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import stats
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneGroupOut

__all__ = ["GlacierFit", "LinearFit", "RegressionGuards", "RegressionResult", "Score",
           "bootstrap_intervals", "leave_one_glacier_out", "leave_one_year_out", "regress"]


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
    """Pooled agreement of predictions with observations (held-out unless said otherwise).

    `r_ci95` / `rmse_mwe_ci95`: 2.5 and 97.5 percentiles over bootstrap resamples of the
    glacier-years (`with_bootstrap`); None until computed.
    """

    r: float
    rmse_mwe: float
    n: int
    p_value: float
    r_ci95: tuple[float, float] | None = None
    rmse_mwe_ci95: tuple[float, float] | None = None
    n_bootstrap: int = 0

    @classmethod
    def of(cls, predicted: np.ndarray, observed: np.ndarray) -> Score:
        p, o = np.asarray(predicted, float), np.asarray(observed, float)
        n = int(p.size)
        rmse = float(np.sqrt(np.mean((p - o) ** 2))) if n else float("nan")
        if n < 3 or np.ptp(p) == 0 or np.ptp(o) == 0:
            return cls(float("nan"), rmse, n, float("nan"))
        res = stats.pearsonr(p, o)
        return cls(float(res.statistic), rmse, n, float(res.pvalue))

    def with_bootstrap(self, predicted: np.ndarray, observed: np.ndarray, n_boot: int = 1000,
                       seed: int = 0) -> Score:
        """This score with bootstrap intervals over the same (predicted, observed) pairs."""
        if n_boot <= 0:
            return self
        r_ci, rmse_ci = bootstrap_intervals(predicted, observed, n_boot, seed)
        return replace(self, r_ci95=r_ci, rmse_mwe_ci95=rmse_ci, n_bootstrap=int(n_boot))


def bootstrap_intervals(
    predicted: np.ndarray, observed: np.ndarray, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of Pearson r and RMSE over resamples of the pairs (glacier-years).

    Seeded (`numpy.random.default_rng(seed)`), so the same inputs give the same intervals.
    A resample with constant predictions or observations has no r and is left out of r's
    interval.
    """
    p, o = np.asarray(predicted, float), np.asarray(observed, float)
    n = p.size
    nan2 = (float("nan"), float("nan"))
    if n < 3:
        return nan2, nan2
    rng = np.random.default_rng(seed)
    rs, rmses = [], []
    chunk = max(1, min(n_boot, 2_000_000 // n))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        pp, oo = p[idx], o[idx]
        rmses.append(np.sqrt(np.mean((pp - oo) ** 2, axis=1)))
        pc = pp - pp.mean(axis=1, keepdims=True)
        oc = oo - oo.mean(axis=1, keepdims=True)
        den = np.sqrt((pc**2).sum(axis=1) * (oc**2).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rs.append(np.where(den > 0, (pc * oc).sum(axis=1) / den, np.nan))
        done += b
    r_all, rmse_all = np.concatenate(rs), np.concatenate(rmses)
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    r_ok = r_all[np.isfinite(r_all)]
    r_ci = tuple(float(v) for v in np.percentile(r_ok, q)) if r_ok.size else nan2
    return r_ci, tuple(float(v) for v in np.percentile(rmse_all, q))


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
    n_boot: int = 0,
    seed: int = 0,
) -> RegressionResult:
    """Balance ~ product: global leave-one-glacier-out and per-glacier leave-one-year-out.

    One row per glacier-year; rows with a non-finite x or balance are dropped first. Scores are
    pooled over all held-out predictions (r = Pearson r of held-out predictions vs observed
    balances, RMSE over the same). Glaciers with fewer than `guards.min_years` years are
    skipped in the per-glacier model (reported), never an error. AAR is a fraction (0..1).
    With `n_boot` > 0 the held-out scores get bootstrap intervals over glacier-years
    (`bootstrap_intervals`, seeded by `seed`).
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
    global_score = global_score.with_bootstrap(global_pred[gl], y[gl], n_boot, seed)
    return RegressionResult(
        product=product,
        global_fit=gfit,
        global_logo=global_score,
        global_predicted=global_pred,
        per_glacier_loyo=Score.of(per_pred[pg], y[pg]).with_bootstrap(per_pred[pg], y[pg],
                                                                      n_boot, seed),
        per_glacier_in_sample=Score.of(in_pred[pg], y[pg]),
        per_glacier_predicted=per_pred,
        glaciers=glaciers,
        guards=guards,
    )

