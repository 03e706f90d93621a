"""`--fill-gaps N`: inpaint small optical gaps, never product-masked pixels (issue 15)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from glacierfacies.scenes.masks import QA_FILLED, QA_MASKED, QA_NODATA


def test_fill_gaps_stripes_not_masked_pixels(sample_dir):
    from glacierfacies.scenes.gaps import fill_gaps
    from glacierfacies.scenes.reader import find_scenes, read_scene

    safe = [s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("S2")][0]
    sc = read_scene(safe)
    # a cloud the product mask removed, across the stripe below
    masked = np.zeros(sc.valid.shape, bool)
    masked[50:80, 90:110] = True
    qa = np.where(sc.valid, 0, QA_NODATA).astype(np.uint8)
    qa[masked] = QA_MASKED
    refl, valid = sc.reflectance.copy(), sc.valid & ~masked
    refl[:, masked] = np.nan
    # an SLC-off-like stripe 3 px wide, and a 20 px wide gap (too wide for N = 3)
    stripe = np.zeros(valid.shape, bool)
    stripe[:, 100:103] = True
    wide = np.zeros(valid.shape, bool)
    wide[:, 300:320] = True
    for gap in (stripe, wide):
        refl[:, gap] = np.nan
        valid[gap] = False
        qa[gap & ~masked] |= QA_NODATA
    gappy = dataclasses.replace(sc, reflectance=refl, valid=valid, qa=qa)
    out = fill_gaps(gappy, 3)
    want = stripe & ~masked & sc.valid
    assert want.sum() > 1000
    assert out.valid[want].all() and ((out.qa[want] & QA_FILLED) > 0).all()
    assert ((out.qa[want] & QA_NODATA) == 0).all()
    # product-masked pixels are never filled; the 20 px gap is only filled at its edges
    assert not out.valid[masked].any() and (out.qa[masked] == QA_MASKED).all()
    assert not out.valid[:, 305:315].any()
    np.testing.assert_array_equal(out.valid[~stripe & ~wide], valid[~stripe & ~wide])
    np.testing.assert_array_equal(out.reflectance[:, valid], refl[:, valid])  # untouched
    # filled values are close to the stripe's neighbours (inverse-distance inpainting)
    rows = np.flatnonzero(want[:, 101] & valid[:, 99] & valid[:, 103])
    err = np.abs(out.reflectance[:, rows, 101] - (refl[:, rows, 99] + refl[:, rows, 103]) / 2)
    truth = np.abs(sc.reflectance[:, rows, 101] - (refl[:, rows, 99] + refl[:, rows, 103]) / 2)
    assert np.median(err) < 0.01 and np.median(err) <= 2 * np.median(truth) + 1e-3
    assert fill_gaps(gappy, 0) is gappy


def test_fill_gaps_option_through_the_reader(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from glacierfacies.errors import InputError
    from glacierfacies.scenes.options import ReadOptions
    from glacierfacies.scenes.reader import read_scene

    data = np.full((6, 60, 60), 0.2, np.float32)
    data[:, :, 30:32] = np.nan  # a 2 px stripe of sensor nodata
    p = tmp_path / "stack_20220708.tif"
    with rasterio.open(p, "w", driver="GTiff", width=60, height=60, count=6, dtype="float32",
                       crs="EPSG:32632", transform=from_origin(600_000, 5_100_000, 10, 10),
                       nodata=np.nan) as dst:
        dst.update_tags(SUN_AZIMUTH="150", SUN_ELEVATION="40")
        dst.write(data)
    plain = read_scene(p)
    assert not plain.valid[:, 30:32].any() and plain.qa is None
    filled = read_scene(p, options=ReadOptions(fill_gaps_px=2))
    assert filled.valid.all()
    np.testing.assert_allclose(filled.reflectance, 0.2, atol=1e-6)
    assert (filled.qa[:, 30:32] == QA_FILLED).all() and (filled.qa[:, :30] == 0).all()
    assert "60 x" not in filled.metadata["gaps_filled"]
    with pytest.raises(InputError, match="--fill-gaps must be 0..64"):
        ReadOptions(fill_gaps_px=100)
