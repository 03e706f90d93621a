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


def test_filled_pixels_are_mapped_flagged_and_counted_in_products(sample_dir, tmp_path):
    import rasterio

    from glacierfacies.mapping.config import MapConfig
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.outlines import rasterise_outlines, read_outlines
    from glacierfacies.products.table import compute_products
    from glacierfacies.scenes.options import ReadOptions
    from glacierfacies.scenes.reader import find_scenes, read_scene
    from tests.scenes.test_archives import spectral_model

    safe = [s for s in find_scenes(sample_dir / "scenes") if s.name.startswith("S2")][0]
    sc = read_scene(safe)
    refl = sc.reflectance.copy()
    refl[:, :, 200:202] = np.nan  # an SLC-off-like stripe across the glaciers
    stack = tmp_path / "stack_20220708T103629.tif"
    with rasterio.open(stack, "w", driver="GTiff", width=sc.grid.width, height=sc.grid.height,
                       count=6, dtype="float32", crs=sc.grid.crs, transform=sc.grid.transform,
                       nodata=np.nan) as dst:
        dst.update_tags(SUN_AZIMUTH=f"{sc.sun_azimuth_deg}", SUN_ELEVATION=f"{sc.sun_elevation_deg}")
        dst.write(refl)
    kw = dict(dem=sample_dir / "dem.tif", outlines=sample_dir / "outlines.gpkg",
              models=[spectral_model(tmp_path / "m" / "fold0.pt")], progress=False)
    plain = map_scene(stack, out=tmp_path / "plain.tif", config=MapConfig(smoothing=False), **kw)
    filled = map_scene(stack, out=tmp_path / "filled.tif", **kw, config=MapConfig(
        smoothing=False, read=ReadOptions(fill_gaps_px=2)))
    assert not (tmp_path / "plain_qa.tif").exists()
    with rasterio.open(tmp_path / "filled.tif") as a, rasterio.open(tmp_path / "plain.tif") as b, \
            rasterio.open(tmp_path / "filled_qa.tif") as q:
        m_filled, m_plain, qa = a.read(1), b.read(1), q.read(1)
    ice = rasterise_outlines(sc.grid, read_outlines(sample_dir / "outlines.gpkg", grid=sc.grid),
                             as_mask=True)
    stripe = np.zeros(ice.shape, bool)
    stripe[:, 200:202] = True
    assert (ice & stripe).sum() > 50
    assert (m_plain[ice & stripe] == 255).all() and (m_filled[ice & stripe] != 255).all()
    np.testing.assert_array_equal(m_filled[~stripe], m_plain[~stripe])
    np.testing.assert_array_equal((qa & QA_FILLED) > 0, stripe & sc.valid)
    assert filled.n_classified - plain.n_classified == int((ice & stripe & sc.valid).sum())
    rows = compute_products([tmp_path / "filled.tif"], sample_dir / "outlines.gpkg",
                            sample_dir / "dem.tif")
    assert rows["filled_px"].sum() == int((ice & stripe & sc.valid).sum())
    r_plain = compute_products([tmp_path / "plain.tif"], sample_dir / "outlines.gpkg",
                               sample_dir / "dem.tif")
    assert (rows["observed_fraction"].to_numpy() >= r_plain["observed_fraction"].to_numpy()).all()
