"""AAR and snowline uncertainties: honest on the sample when errors are spatially correlated.

A simulated classifier on the sample's true facies maps: per-class logits are the true class
plus a smooth Gaussian random field (errors correlated over ~200 m, as a patch-based CNN's
are), and its probabilities are the exact Bayes posterior (so they are calibrated). The
block-correlated draws of `products.uncertainty` must cover the true AAR and snowline about
as often as their nominal level says; intervals that treat pixels as independent must not.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import rasterize
from scipy import ndimage

from glacierfacies.classes import N_CLASSES, NODATA_CLASS, class_index
from glacierfacies.products import massbalance as mb
from glacierfacies.products import uncertainty as unc

SNOW, FIRN, ICE = (class_index(n) for n in ("snow", "firn", "ice"))


def _smooth_field(rng, shape, sigma):
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return f / f.std()


def simulated_classifier(true_map, glacier, rng, strength=2.0, noise=1.0, sigma=8.0):
    """(predicted class map, calibrated probabilities) with spatially correlated errors."""
    classes = np.unique(true_map[glacier])
    prior = np.array([(true_map[glacier] == k).mean() for k in classes])
    logits = np.stack([strength * (true_map == k) + noise * _smooth_field(rng, true_map.shape,
                                                                           sigma)
                       for k in classes])
    post = strength * logits / noise**2 + np.log(prior)[:, None, None]
    post = np.exp(post - post.max(axis=0))
    post /= post.sum(axis=0)
    probs = np.zeros((N_CLASSES, *true_map.shape), np.float32)
    probs[classes] = post
    pred = classes[np.argmax(post, axis=0)].astype(np.uint8)
    pred[~glacier] = NODATA_CLASS
    return pred, probs


def _independent_pixel_unc(pred, probs, glacier, codes):
    """What treating pixels as independent gives: sqrt(sum p (1 - p)) / n + the bias term."""
    p = probs[list(codes)].sum(axis=0)[glacier].astype(float)
    n = p.size
    sd = np.sqrt((p * (1 - p)).sum()) / n
    return float(np.hypot(sd, np.isin(pred[glacier], codes).mean() - p.mean()))


@pytest.fixture(scope="module")
def trials(sample_dir):
    """One simulated classification per glacier x scene x repetition, with both intervals."""
    with rasterio.open(sample_dir / "dem.tif") as ds:
        dem, transform = ds.read(1).astype(np.float64), ds.transform
    outlines = gpd.read_file(sample_dir / "outlines.gpkg")
    labels = rasterize(((g, i + 1) for i, g in enumerate(outlines.geometry)),
                       out_shape=dem.shape, transform=transform)
    config = mb.ProductConfig(shadow="exclude", uncertainty_draws=60)
    rng = np.random.default_rng(0)
    rows = []
    for path in sorted((sample_dir / "truth").glob("facies_*.tif")):
        with rasterio.open(path) as ds:
            true_map = ds.read(1)
        for rep in range(2):
            for gi in range(1, len(outlines) + 1):
                glacier = (labels == gi) & (true_map != NODATA_CLASS)
                pred, probs = simulated_classifier(true_map, glacier, rng)
                p = mb.glacier_products(pred, glacier, dem, 100.0, probabilities=probs,
                                        config=config)
                true = mb.glacier_products(true_map, glacier, dem, 100.0, config=config)
                rows.append({
                    "scene": path.stem, "rep": rep, "glacier": gi,
                    "aar_err": p["aar"] - true["aar"], "aar_unc": p["aar_unc"],
                    "aar_unc_indep": _independent_pixel_unc(pred, probs, glacier, (SNOW,)),
                    "sl_err": p["snowline_m"] - true["snowline_m"],
                    "sl_unc": p["snowline_unc_m"],
                    "method": p["uncertainty_method"],
                })
    return pd.DataFrame(rows)


def test_block_draws_cover_the_truth_and_independent_pixels_do_not(trials):
    t = trials
    assert len(t) == 6 * 2 * 8 and (t["method"] == "probabilities").all()
    within = (t["aar_err"].abs() <= 2 * t["aar_unc"]).mean()
    within_indep = (t["aar_err"].abs() <= 2 * t["aar_unc_indep"]).mean()
    print(f"AAR within 2 unc: block draws {within:.2f}, independent pixels {within_indep:.2f}")
    assert within >= 0.85  # nominal ~95%; somewhat conservative is fine
    assert within_indep < 0.6  # independent pixels: far too narrow
    # calibrated in size, not just wide: the typical error is about one uncertainty
    ratio = float(np.median(t["aar_err"].abs() / t["aar_unc"]))
    assert 0.3 < ratio < 1.2
    ok = t["sl_err"].notna() & t["sl_unc"].notna()
    sl_within = (t.loc[ok, "sl_err"].abs() <= 2 * t.loc[ok, "sl_unc"]).mean()
    print(f"snowline within 2 unc: {sl_within:.2f} of {int(ok.sum())}")
    assert ok.sum() > 80 and sl_within >= 0.85


def test_draws_are_reproducible_and_nested():
    rng = np.random.default_rng(4)
    yy = np.mgrid[0:60, 0:60][0]
    elev = 3000.0 - 5.0 * yy
    true_map = np.where(elev > 2900, SNOW, np.where(elev > 2850, FIRN, ICE)).astype(np.uint8)
    glacier = np.ones_like(true_map, bool)
    pred, probs = simulated_classifier(true_map, glacier, rng)
    cfg = mb.ProductConfig()
    a = mb.glacier_products(pred, glacier, elev, 100.0, probabilities=probs, config=cfg)
    b = mb.glacier_products(pred, glacier, elev, 100.0, probabilities=probs, config=cfg)
    assert pd.Series(a).equals(pd.Series(b))  # seeded draws (NaN == NaN here)
    other = mb.glacier_products(pred, glacier, elev, 100.0, probabilities=probs,
                                config=cfg.replace(uncertainty_seed=1))
    assert other["aar_unc"] != a["aar_unc"]
    p_snow, p_sf, method = unc.zone_probabilities(pred, glacier, cfg, probabilities=probs)
    assert method == "probabilities" and (p_snow <= p_sf + 1e-12).all()
    # a perfectly confident classifier has no uncertainty beyond the DEM step
    sure = np.zeros_like(probs)
    for k in (SNOW, FIRN, ICE):
        sure[k] = true_map == k
    s = mb.glacier_products(true_map, glacier, elev, 100.0, probabilities=sure, config=cfg)
    assert s["aar_unc"] < 1e-12 and s["snowline_unc_m"] <= 2.5
    assert abs(s["snowline_m"] - 2900) <= 5 and abs(s["firnline_m"] - 2850) <= 5
    # blocks: ids are constant within a block and differ between blocks
    ids = unc.block_ids((7, 5), 3)
    assert ids[0, 0] == ids[2, 2] and ids[0, 0] != ids[3, 0] and ids[0, 0] != ids[0, 3]
