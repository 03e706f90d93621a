"""Glacier products maths, end-of-season selection and the regressions (synthetic, exact)."""

from __future__ import annotations

import numpy as np
import pytest

from glacierfacies.classes import NODATA_CLASS, class_index
from glacierfacies.products import massbalance as mb

ICE, SNOW, DEBRIS, FIRN = (class_index(n) for n in ("ice", "snow", "debris", "firn"))
SHADOW, REFROZEN, WATER, CLOUD = (class_index(n) for n in ("shadow", "refrozen-like", "water",
                                                            "cloud"))


def synthetic_glacier(snowline=3012.0, firnline=None, step=None, noise_frac=0.03, seed=0,
                      n=200):
    """A tilted glacier 2500..3500 m: snow above the snowline, exposed firn down to the firn
    line (default 80 m lower), ice/debris below, with a few percent of pixels flipped near
    the snowline (patchy snow) and elsewhere."""
    firnline = snowline - 80.0 if firnline is None else firnline
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    elev = 3500.0 - 1000.0 * yy / (n - 1) + 15 * np.sin(xx / 9.0) + rng.normal(0, 3, (n, n))
    if step:
        elev = np.round(elev / step) * step
    mask = (np.abs(xx - n / 2) < n * 0.35) & (yy > 3)
    snow = elev >= snowline
    firn = ~snow & (elev >= firnline)
    cmap = np.where(snow, SNOW, np.where(firn, FIRN, ICE)).astype(np.uint8)
    cmap[(~snow & ~firn) & (yy > n * 0.9)] = DEBRIS
    flip = rng.random((n, n)) < noise_frac * np.exp(-np.abs(elev - snowline) / 80.0)
    cmap[flip & snow] = FIRN
    cmap[flip & ~snow] = SNOW
    cmap[~mask] = NODATA_CLASS
    return cmap, mask, elev.astype(np.float32)


def test_snowline_and_firnline_synthetic_within_20m():
    cmap, mask, elev = synthetic_glacier(snowline=3012.0, firnline=2930.0)
    p = mb.glacier_products(cmap, mask, elev, 100.0)
    assert abs(p["snowline_m"] - 3012.0) < 20.0
    assert abs(p["firnline_m"] - 2930.0) < 20.0
    assert 0 < p["snowline_unc_m"] < 60.0 and 0 < p["firnline_unc_m"] < 60.0
    # true AARs from the known lines: snow only (default), and snow + firn
    truth = ((elev >= 3012.0) & mask).sum() / mask.sum()
    assert abs(p["aar"] - truth) < 0.02
    truth_sf = ((elev >= 2930.0) & mask).sum() / mask.sum()
    assert abs(p["aar_snow_firn"] - truth_sf) < 0.02
    assert p["accumulation"] == "snow" and p["shadow_method"] == "snowline"
    # the labelled fallback: the AAR change of the snowline moved by its cost-tolerance width
    assert p["uncertainty_method"] == "fallback:cost-tolerance"
    assert p["uncertainty_note"].startswith("fallback: neither probabilities nor confidence")
    z = elev[mask]
    sl, w = p["snowline_m"], p["snowline_unc_m"]
    expect = max(((z >= sl - w) & (z < sl)).sum(), ((z >= sl) & (z < sl + w)).sum()) / z.size
    assert p["aar_unc"] == pytest.approx(expect, rel=1e-12) and p["aar_unc"] > 0
    both = mb.glacier_products(cmap, mask, elev, 100.0,
                               config=mb.ProductConfig(accumulation="snow+firn"))
    assert both["aar"] == p["aar_snow_firn"] and both["accumulation"] == "snow+firn"
    assert both["snowline_m"] == p["snowline_m"]  # the lines do not depend on the definition
    # no firn exposed (a positive year): the firn line is the snowline
    c2 = np.where(cmap == FIRN, ICE, cmap).astype(np.uint8)
    p2 = mb.glacier_products(c2, mask, elev, 100.0)
    assert abs(p2["firnline_m"] - p2["snowline_m"]) < 5.0
    assert p2["aar"] == pytest.approx(p2["aar_snow_firn"], abs=0.01)


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
    # unsorted input and NaN elevations give the same line
    perm = np.random.default_rng(0).permutation(6)
    zn = np.concatenate([z[perm], [np.nan]])
    assert mb.snowline_altitude(zn, np.concatenate([acc[perm], [True]]), 0.0) == (35.0, 5.0)


def test_line_hidden_in_a_shadowed_band_sits_at_the_observed_edge():
    """Cast shadow hides the tongue from 2600 to 3150 m; firn is seen from 3150 m up, ice
    only below 2600 m: the firn line is placed at the lower edge of the observed firn, with
    an uncertainty spanning the hidden band, not in the middle of the band."""
    z = np.arange(2500.0, 3400.0, 1.0)
    cmap = np.where(z >= 3300, SNOW, np.where(z >= 3150, FIRN, ICE)).astype(np.uint8)
    cmap[(z >= 2600) & (z < 3150)] = SHADOW
    cmap, mask, elev = cmap[None], np.ones((1, z.size), bool), z[None]
    p = mb.glacier_products(cmap, mask, elev, 100.0)
    assert p["firnline_m"] == 3150.0 and p["firnline_unc_m"] >= 549.0
    assert abs(p["snowline_m"] - 3299.5) <= 0.5 and p["snowline_unc_m"] <= 5.0
    # the shadowed band lies below the firn line: ablation area for both AARs
    assert p["aar_snow_firn"] == pytest.approx(250 / 900)
    wide = mb.glacier_products(cmap, mask, elev, 100.0, config=mb.ProductConfig(line_gap_m=1000))
    assert wide["firnline_m"] == pytest.approx(2875.0, abs=1.0)  # the old midpoint


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
    exclude = mb.ProductConfig(shadow="exclude")
    p = mb.glacier_products(cmap, mask, None, 100.0, config=exclude)  # 10 m pixels, no DEM
    assert p["glacier_area_km2"] == pytest.approx(80 * 1e-4)
    assert p["area_km2_snow"] == pytest.approx(16 * 1e-4)
    assert p["area_km2_cloud"] == pytest.approx(8 * 1e-4)
    observed = 16 + 8 + 8 + 24 + 4  # shadow, cloud and nodata are not observed
    assert p["observed_fraction"] == pytest.approx(observed / 80)
    assert p["aar"] == pytest.approx(16 / observed)  # snow only: exposed firn is ablation
    assert p["aar_snow_firn"] == pytest.approx(24 / observed)
    assert np.isnan(p["snowline_m"]) and np.isnan(p["mean_confidence"])
    assert p["shadow_method"] == "exclude"
    # no silent switches: the default shadow method needs a DEM, probabilities need them
    with pytest.raises(ValueError, match="needs elevations"):
        mb.glacier_products(cmap, mask, None, 100.0)
    with pytest.raises(ValueError, match="needs class probabilities"):
        mb.glacier_products(cmap, mask, None, 100.0,
                            config=mb.ProductConfig(shadow="probabilities"))
    p2 = mb.glacier_products(cmap, mask, None, 100.0,
                             config=exclude.replace(refrozen_is_accumulation=True))
    assert p2["aar"] == pytest.approx(24 / observed)
    assert p2["aar_snow_firn"] == pytest.approx(32 / observed)
    # with a DEM, shadow takes the side of the lines: elevation falls with the row; snow rows
    # 0-1 and the firn row 2 lie above the ice rows -> the shadow row 8 is below both lines
    elev = np.repeat(np.arange(3000.0, 2900.0, -10.0)[:, None], 10, 1)
    p6 = mb.glacier_products(cmap, mask, elev, 100.0)
    assert 2980 <= p6["snowline_m"] <= 2990  # between snow (2990) and firn (2980)
    assert 2970 <= p6["firnline_m"] <= 2980  # between firn (2980) and refrozen (2970)
    assert p6["observed_fraction"] == pytest.approx((observed + 8) / 80)
    assert p6["aar"] == pytest.approx(16 / (observed + 8))
    assert p6["aar_snow_firn"] == pytest.approx(24 / (observed + 8))
    elev_flip = elev.copy()
    elev_flip[8] = 3100.0  # the shadowed row high up -> snow
    p7 = mb.glacier_products(cmap, mask, elev_flip, 100.0)
    assert p7["aar"] == pytest.approx(24 / (observed + 8))
    assert p7["aar_snow_firn"] == pytest.approx(32 / (observed + 8))
    elev_mid = elev.copy()
    elev_mid[8] = 2984.0  # between the firn line and the snowline -> firn
    p8 = mb.glacier_products(cmap, mask, elev_mid, 100.0)
    assert p8["aar"] == pytest.approx(16 / (observed + 8))
    assert p8["aar_snow_firn"] == pytest.approx(32 / (observed + 8))
    # shadow resolved from probabilities: half the shadow row is snow-like, half ice-like
    prob = np.zeros((8, 10, 10), np.float32)
    prob[SHADOW] = 0.9
    prob[SNOW, 8, :4] = 0.5
    prob[ICE, 8, 4:] = 0.5
    p3 = mb.glacier_products(cmap, mask, None, 100.0, probabilities=prob,
                             config=mb.ProductConfig(shadow="probabilities"))
    assert p3["observed_fraction"] == pytest.approx((observed + 8) / 80)
    assert p3["aar"] == pytest.approx((16 + 4) / (observed + 8))
    assert p3["area_km2_shadow"] == 0.0
    assert p3["uncertainty_method"] == "probabilities"
    # confidence: uint8 percent with 255 nodata, or float probability
    conf = np.full((10, 10), 255, np.uint8)
    conf[:4] = 80
    conf[4:9] = 60
    p4 = mb.glacier_products(cmap, mask, None, 100.0, confidence=conf, config=exclude)
    assert p4["mean_confidence"] == pytest.approx((32 * 80 + 40 * 60) / 72)
    assert p4["uncertainty_method"] == "fallback:confidence-bound" and p4["aar_unc"] > 0
    p5 = mb.glacier_products(cmap, mask, None, 100.0, confidence=np.full((10, 10), 0.7),
                             config=exclude)
    assert p5["mean_confidence"] == pytest.approx(70.0)


# ------------------------------------------------------------------ balance years (issue 14)
def test_october_and_april_scenes_land_in_their_balance_years():
    """A scene in the season window belongs to the balance year whose ablation season it
    closes; the October start of the hydrological year must not move it to the next year."""
    d = np.array(["2021-08-20", "2021-09-30", "2021-10-03", "2021-10-31", "2021-11-02",
                  "2021-04-10", "2022-02-15", "2022-04-28", "2022-05-01"], "datetime64[D]")
    north = mb.balance_year(d, mb.SEASON_MONTHS["north"], mb.HYDRO_YEAR_START["north"])
    assert north.tolist() == [2021, 2021, 2021, 2021, -1, -1, -1, -1, -1]
    south = mb.balance_year(d, mb.SEASON_MONTHS["south"], mb.HYDRO_YEAR_START["south"])
    assert south.tolist() == [-1, -1, -1, -1, -1, 2021, 2022, 2022, -1]
    # calendar-year records pair the same way; a window across New Year opens in November
    assert mb.balance_year(d[:4], (8, 9, 10), 1).tolist() == [2021] * 4
    wrap = np.array(["2021-11-15", "2021-12-31", "2022-01-10"], "datetime64[D]")
    assert mb.balance_year(wrap, (11, 12, 1), 1).tolist() == [2021, 2021, 2021]
    with pytest.raises(ValueError, match="consecutive"):
        mb.balance_year(d, (8, 10), 10)
    # hydrological years (the records' naming) keep their meaning
    h = np.array(["2020-09-30", "2020-10-01", "2021-01-15", "2021-12-31"], "datetime64[D]")
    assert mb.hydrological_year(h).tolist() == [2020, 2021, 2021, 2022]
    assert mb.hydrological_year(h, start_month=1).tolist() == [2020, 2020, 2021, 2021]
    assert mb.hydrological_year(h, start_month=4).tolist() == [2021, 2021, 2021, 2022]


def test_october_scene_does_not_beat_the_next_years_end_of_season():
    # 2021-10-03 closes the 2021 season; 2022-09-10 is 2022's own end of season
    glacier = np.array(["A", "A", "A"])
    dates = np.array(["2021-09-12", "2021-10-03", "2022-09-10"], "datetime64[D]")
    aar = np.array([0.40, 0.30, 0.35])
    idx = mb.end_of_season(glacier, dates, aar, np.ones(3), rule="minimum")
    assert idx.tolist() == [1, 2]  # one per balance year: 2021 -> Oct 3, 2022 -> Sep 10
    assert mb.balance_year(dates[idx]).tolist() == [2021, 2022]
    # southern hemisphere: an April scene closes that year's season
    sd = np.array(["2021-03-01", "2021-04-20", "2022-03-15"], "datetime64[D]")
    idx = mb.end_of_season(glacier, sd, aar, np.ones(3), start_month=4,
                           season_months=mb.SEASON_MONTHS["south"], rule="minimum")
    assert idx.tolist() == [1, 2]


def test_end_of_season_candidates():
    glacier = np.array(["A", "A", "A", "A", "B", "B"])
    dates = np.array(["2021-07-01", "2021-08-20", "2021-09-10", "2021-11-05",
                      "2021-08-20", "2021-09-10"], "datetime64[D]")
    aar = np.array([0.2, 0.45, 0.30, 0.1, 0.5, np.nan])
    obs = np.array([1.0, 0.95, 0.6, 1.0, 0.9, 1.0])
    for rule in mb.END_OF_SEASON_RULES:
        idx = mb.end_of_season(glacier, dates, aar, obs, min_observed=0.8, rule=rule)
        # A 2021: July and November lie outside the window, scene 2 is 60% observed ->
        # scene 1; B 2021: scene 5 has no AAR -> scene 4
        assert idx.tolist() == [1, 4]
    assert mb.end_of_season(glacier, dates, aar, obs, min_observed=0.5).tolist() == [2, 4]
    # any month (no window): hydrological years; November 2021 opens hydrological year 2022
    assert mb.end_of_season(glacier, dates, aar, obs, season_months=None).tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="rule"):
        mb.end_of_season(glacier, dates, aar, obs, rule="median")


@pytest.mark.parametrize("where", [2, 4, 0])
def test_robust_end_of_season_ignores_one_noisy_scene(where):
    """Five well-observed scenes, AAR falling to the end of the season; one is injected with
    a classification error (AAR 0.2 too low). `minimum` picks it; `robust` must not, and
    picks the true end-of-season scene."""
    dates = np.array(["2022-08-05", "2022-08-20", "2022-09-01", "2022-09-16", "2022-09-28"],
                     "datetime64[D]")
    clean = np.array([0.52, 0.46, 0.41, 0.37, 0.35])
    unc = np.full(5, 0.02)
    noisy = clean.copy()
    noisy[where] -= 0.20
    glacier = np.array(["A"] * 5)
    obs = np.ones(5)
    assert mb.end_of_season(glacier, dates, noisy, obs, rule="minimum").tolist() == [where]
    picked = mb.end_of_season(glacier, dates, noisy, obs, rule="robust", aar_unc=unc)
    assert picked.tolist() == ([4] if where != 4 else [3])
    # without noise the robust rule keeps a steady decline and picks the last, lowest scene
    assert mb.end_of_season(glacier, dates, clean, obs, aar_unc=unc).tolist() == [4]
    assert mb.end_of_season(glacier, dates, noisy, obs, rule="latest").tolist() == [4]


def test_bootstrap_intervals_are_seeded_and_bracket_the_score():
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 1, 300)
    pred = obs + rng.normal(0, 0.5, 300)
    s = mb.Score.of(pred, obs).with_bootstrap(pred, obs, n_boot=500, seed=3)
    again = mb.Score.of(pred, obs).with_bootstrap(pred, obs, n_boot=500, seed=3)
    assert s.r_ci95 == again.r_ci95 and s.rmse_mwe_ci95 == again.rmse_mwe_ci95
    assert s.r_ci95[0] < s.r < s.r_ci95[1]
    assert s.rmse_mwe_ci95[0] < s.rmse_mwe < s.rmse_mwe_ci95[1]
    # the width is what the sampling theory of r says (Fisher z: +-1.96 / sqrt(n - 3))
    z = np.arctanh(s.r)
    lo, hi = np.tanh(z - 1.96 / np.sqrt(297)), np.tanh(z + 1.96 / np.sqrt(297))
    assert s.r_ci95[0] == pytest.approx(lo, abs=0.02)
    assert s.r_ci95[1] == pytest.approx(hi, abs=0.02)
    # manual resamples give the same percentiles
    _, rmse_ci = mb.bootstrap_intervals(pred, obs, 200, seed=5)
    idx = np.random.default_rng(5).integers(0, 300, size=(200, 300))
    manual = [np.sqrt(np.mean((pred[i] - obs[i]) ** 2)) for i in idx]
    assert rmse_ci == pytest.approx(tuple(np.percentile(manual, [2.5, 97.5])))
    res = mb.regress(pred, obs, np.repeat(np.arange(30), 10).astype(str), n_boot=100)
    assert res.to_dict()["global_leave_one_glacier_out"]["n_bootstrap"] == 100


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
