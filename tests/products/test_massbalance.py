"""Glacier products maths, end-of-season selection and the regressions (synthetic, exact)."""

from __future__ import annotations

import numpy as np
import pytest

from glacierfacies.classes import NODATA_CLASS, class_index
from glacierfacies.products import massbalance as mb

ICE, SNOW, DEBRIS, FIRN = (class_index(n) for n in ("ice", "snow", "debris", "firn"))
SHADOW, REFROZEN, WATER, CLOUD = (class_index(n) for n in ("shadow", "refrozen-like", "water",
                                                            "cloud"))


def synthetic_glacier(snowline=3012.0, step=None, noise_frac=0.03, seed=0, n=200):
    """A tilted glacier 2500..3500 m: snow/firn above the snowline, ice/debris below, with a
    few percent of pixels flipped near the line (patchy snow) and elsewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    elev = 3500.0 - 1000.0 * yy / (n - 1) + 15 * np.sin(xx / 9.0) + rng.normal(0, 3, (n, n))
    if step:
        elev = np.round(elev / step) * step
    mask = (np.abs(xx - n / 2) < n * 0.35) & (yy > 3)
    acc = elev >= snowline
    cmap = np.where(acc, np.where(rng.random((n, n)) < 0.4, FIRN, SNOW), ICE).astype(np.uint8)
    cmap[(~acc) & (yy > n * 0.9)] = DEBRIS
    flip = rng.random((n, n)) < noise_frac * np.exp(-np.abs(elev - snowline) / 80.0)
    cmap[flip & acc] = ICE
    cmap[flip & ~acc] = SNOW
    cmap[~mask] = NODATA_CLASS
    return cmap, mask, elev.astype(np.float32)


def test_snowline_synthetic_within_20m():
    cmap, mask, elev = synthetic_glacier(snowline=3012.0)
    p = mb.glacier_products(cmap, mask, elev, 100.0)
    assert abs(p["snowline_m"] - 3012.0) < 20.0
    assert 0 < p["snowline_unc_m"] < 60.0
    # true AAR from the known line
    truth = ((elev >= 3012.0) & mask).sum() / mask.sum()
    assert abs(p["aar"] - truth) < 0.02


def test_snowline_with_contour_steps_within_one_step():
    cmap, mask, elev = synthetic_glacier(snowline=2890.0, step=50.0, seed=3)
    p = mb.glacier_products(cmap, mask, elev, 100.0)
    assert abs(p["snowline_m"] - 2890.0) <= 50.0
    assert p["snowline_unc_m"] >= 25.0  # at least half a contour step


def test_snowline_exact_and_degenerate():
    z = np.array([10.0, 20, 30, 40, 50, 60])
    acc = np.array([0, 0, 0, 1, 1, 1], bool)
    sl, unc = mb.snowline_altitude(z, acc, tolerance=0.0)
    assert sl == 35.0 and unc == 5.0
    assert np.isnan(mb.snowline_altitude(z, np.ones(6, bool))[0])  # all accumulation
    assert np.isnan(mb.snowline_altitude(z, np.zeros(6, bool))[0])
    # one snow patch low down costs 1 and does not move the line; equal-cost ties -> middle
    z10 = np.arange(10.0, 101.0, 10.0)
    acc2 = z10 > 50
    acc2[1] = True
    assert mb.snowline_altitude(z10, acc2, tolerance=0.0) == (55.0, 5.0)
    acc3 = np.array([0, 1, 0, 1, 1, 1], bool)  # thresholds 15 and 35 both cost 1
    assert mb.snowline_altitude(z, acc3, tolerance=0.0)[0] == 25.0


def test_products_areas_observed_aar_and_shadow():
    cmap = np.full((10, 10), NODATA_CLASS, np.uint8)
    mask = np.zeros((10, 10), bool)
    mask[:, :8] = True  # 80 glacier pixels
    g = cmap[:, :8]
    g[0:2] = SNOW  # 16
    g[2:3] = FIRN  # 8
    g[3:4] = REFROZEN  # 8
    g[4:7] = ICE  # 24
    g[7:8] = CLOUD  # 8
    g[8:9] = SHADOW  # 8
    g[9:10, :4] = WATER  # 4; the last 4 stay nodata
    cmap[:, 8:] = SNOW  # off glacier, must not count
    p = mb.glacier_products(cmap, mask, None, 100.0)  # 10 m pixels, no DEM: shadow excluded
    assert p["glacier_area_km2"] == pytest.approx(80 * 1e-4)
    assert p["area_km2_snow"] == pytest.approx(16 * 1e-4)
    assert p["area_km2_cloud"] == pytest.approx(8 * 1e-4)
    observed = 16 + 8 + 8 + 24 + 4  # shadow, cloud and nodata are not observed
    assert p["observed_fraction"] == pytest.approx(observed / 80)
    assert p["aar"] == pytest.approx(24 / observed)
    assert np.isnan(p["snowline_m"]) and np.isnan(p["mean_confidence"])
    p2 = mb.glacier_products(cmap, mask, None, 100.0,
                             config=mb.ProductConfig(refrozen_is_accumulation=True))
    # with a DEM, shadow takes the side of the snowline: elevation falls with the row, the
    # accumulation rows 0-2 lie above ice rows 4-6 -> the shadow row 8 is below: ablation
    elev = np.repeat(np.arange(3000.0, 2900.0, -10.0)[:, None], 10, 1)
    p6 = mb.glacier_products(cmap, mask, elev, 100.0)
    assert 2960 <= p6["snowline_m"] <= 2980
    assert p6["observed_fraction"] == pytest.approx((observed + 8) / 80)
    assert p6["aar"] == pytest.approx(24 / (observed + 8))
    elev_flip = elev.copy()
    elev_flip[8] = 3100.0  # the shadowed row high up -> accumulation
    p7 = mb.glacier_products(cmap, mask, elev_flip, 100.0)
    assert p7["aar"] == pytest.approx(32 / (observed + 8))
    assert p2["aar"] == pytest.approx(32 / observed)
    # shadow resolved from probabilities: half the shadow row is snow-like, half ice-like
    prob = np.zeros((8, 10, 10), np.float32)
    prob[SHADOW] = 0.9
    prob[SNOW, 8, :4] = 0.5
    prob[ICE, 8, 4:] = 0.5
    p3 = mb.glacier_products(cmap, mask, None, 100.0, probabilities=prob,
                             config=mb.ProductConfig(shadow="probabilities"))
    assert p3["observed_fraction"] == pytest.approx((observed + 8) / 80)
    assert p3["aar"] == pytest.approx((24 + 4) / (observed + 8))
    assert p3["area_km2_shadow"] == 0.0
    # confidence: uint8 percent with 255 nodata, or float probability
    conf = np.full((10, 10), 255, np.uint8)
    conf[:4] = 80
    conf[4:9] = 60
    p4 = mb.glacier_products(cmap, mask, None, 100.0, confidence=conf)
    assert p4["mean_confidence"] == pytest.approx((32 * 80 + 40 * 60) / 72)
    p5 = mb.glacier_products(cmap, mask, None, 100.0, confidence=np.full((10, 10), 0.7))
    assert p5["mean_confidence"] == pytest.approx(70.0)


def test_hydrological_year_and_end_of_season():
    d = np.array(["2020-09-30", "2020-10-01", "2021-01-15", "2021-12-31"], "datetime64[D]")
    assert mb.hydrological_year(d).tolist() == [2020, 2021, 2021, 2022]
    assert mb.hydrological_year(d, start_month=1).tolist() == [2020, 2020, 2021, 2021]
    assert mb.hydrological_year(d, start_month=4).tolist() == [2021, 2021, 2021, 2022]
    glacier = np.array(["A", "A", "A", "A", "B", "B"])
    dates = np.array(["2021-07-01", "2021-08-20", "2021-09-10", "2021-10-05",
                      "2021-08-20", "2021-09-10"], "datetime64[D]")
    aar = np.array([0.7, 0.45, 0.30, 0.9, 0.5, np.nan])
    obs = np.array([1.0, 0.95, 0.6, 1.0, 0.9, 1.0])
    idx = mb.end_of_season(glacier, dates, aar, obs, min_observed=0.8)
    # A 2021: scene 2 has the lowest AAR but is 60% observed -> scene 1; A 2022: scene 3;
    # B 2021: scene 5 has no AAR -> scene 4
    assert idx.tolist() == [1, 3, 4]
    assert mb.end_of_season(glacier, dates, aar, obs, min_observed=0.5).tolist() == [2, 3, 4]


def _linear_world(seed=0, n_glaciers=12, n_years=15):
    rng = np.random.default_rng(seed)
    g, x, y = [], [], []
    for i in range(n_glaciers):
        a = rng.uniform(0.15, 0.8, n_years)
        slope, icpt = 2.5 + rng.normal(0, 0.3), -1.5 + rng.normal(0, 0.2)
        g += [f"G{i}"] * n_years
        x += a.tolist()
        y += (icpt + slope * a + rng.normal(0, 0.15, n_years)).tolist()
    return np.array(g), np.array(x), np.array(y)


def test_regress_scores_match_manual_cross_validation():
    g, x, y = _linear_world()
    res = mb.regress(x, y, g)
    # manual leave-one-glacier-out with scipy
    from scipy import stats

    pred = np.empty_like(y)
    for name in np.unique(g):
        m = g == name
        fit = stats.linregress(x[~m], y[~m])
        pred[m] = fit.intercept + fit.slope * x[m]
    assert np.allclose(res.global_predicted, pred)
    assert res.global_logo.r == pytest.approx(stats.pearsonr(pred, y)[0])
    assert res.global_logo.rmse_mwe == pytest.approx(np.sqrt(np.mean((pred - y) ** 2)))
    assert res.global_logo.n == y.size
    assert res.global_fit.slope == pytest.approx(2.5, abs=0.3)
    assert res.per_glacier_loyo.n == y.size
    assert res.per_glacier_loyo.rmse_mwe < 0.25 < res.global_logo.rmse_mwe
    assert res.per_glacier_in_sample.rmse_mwe < res.per_glacier_loyo.rmse_mwe
    assert all(gf.status == "fitted" for gf in res.glaciers)


def test_regress_skips_short_glaciers_and_guards_degenerate_ones():
    g, x, y = _linear_world()
    # a glacier with 5 years (skipped) and one whose AAR is 0 in 8 of 10 years (guarded)
    g = np.concatenate([g, ["SHORT"] * 5, ["FLAT"] * 10])
    x = np.concatenate([x, [0.3, 0.4, 0.5, 0.6, 0.5], [0.0] * 8 + [0.05, 0.1]])
    y = np.concatenate([y, [-0.8, -0.5, -0.3, 0.0, -0.2], [-2.0, -1.5, -2.5, -1.0, -3.0, -1.2,
                                                             -2.2, -1.8, -0.9, -0.6]])
    res = mb.regress(x, y, g)
    status = {gf.glacier: gf for gf in res.glaciers}
    assert status["SHORT"].status == "skipped" and "5 years < 8" in status["SHORT"].reason
    assert status["FLAT"].status == "guarded" and "0 < AAR < 1" in status["FLAT"].reason
    assert np.isnan(res.per_glacier_predicted[g == "SHORT"]).all()
    flat = g == "FLAT"
    assert np.allclose(res.per_glacier_predicted[flat], res.global_predicted[flat])
    assert res.per_glacier_loyo.n == y.size - 5
    d = res.to_dict()
    assert d["skipped"][0]["glacier"] == "SHORT" and d["guarded"][0]["glacier"] == "FLAT"
    off = mb.regress(x, y, g, guards=mb.RegressionGuards.off())
    assert {gf.glacier: gf.status for gf in off.glaciers}["FLAT"] == "fitted"


def test_regress_bad_input():
    with pytest.raises(ValueError, match="only 2 glacier-years"):
        mb.regress(np.array([0.1, 0.2, np.nan]), np.array([0.0, 1.0, 2.0]),
                   np.array(["a", "b", "c"]))
    # one glacier: no leave-one-glacier-out, but no crash
    res = mb.regress(np.linspace(0, 1, 10), np.linspace(-1, 1, 10), np.array(["a"] * 10))
    assert np.isnan(res.global_logo.r) and res.per_glacier_loyo.r == pytest.approx(1.0)
