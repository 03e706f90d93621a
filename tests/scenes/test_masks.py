"""The products' own masks (issue 12): a table of decoded values, then each reader with a
constructed SCL / QA_PIXEL / QA_RADSAT / Fmask file, and the exact nodata and QA pixels."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from glacierfacies.errors import InputError
from glacierfacies.scenes.masks import (
    QA_MASKED,
    QA_NODATA,
    QA_SATURATED,
    apply_masks,
    fmask_flags,
    qa_band,
    qa_pixel_flags,
    qa_radsat_flags,
    scl_flags,
)
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.reader import read_scene
from tests.scenes.test_hls import make_hls
from tests.scenes.test_scenes import H10, W10, _tif, make_landsat, make_safe

# ------------------------------------------------------------------ the decoding table

#: (code, masked, saturated) for every SCL class
SCL_TABLE = [(0, False, False), (1, False, True), (2, False, False), (3, True, False),
             (4, False, False), (5, False, False), (6, False, False), (7, False, False),
             (8, True, False), (9, True, False), (10, True, False), (11, False, False)]

#: (QA_PIXEL word, masked): bit 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow,
#: 5 snow, 6 clear, 7 water, 8-15 confidences
QA_PIXEL_TABLE = [(0, False), (1, False), (1 << 1, True), (1 << 2, True), (1 << 3, True),
                  (1 << 4, True), (1 << 5, False), (1 << 6, False), (1 << 7, False),
                  (21824, False),  # clear land, low confidences (a real OLI value)
                  (21952, False),  # clear water
                  (30048, False),  # snow, high snow confidence
                  (22280, True),  # cloud, high confidence
                  (23888, True),  # cloud shadow
                  (54596, True),  # cirrus, high cirrus confidence
                  (0xFF00, False)]  # confidence bits alone mask nothing

#: (Fmask byte, masked): bit 0 cirrus (unused in v2.0), 1 cloud, 2 adjacent, 3 shadow,
#: 4 snow/ice, 5 water, 6-7 aerosol; 255 fill
FMASK_TABLE = [(0, False), (1, False), (2, True), (4, True), (8, True), (16, False),
               (32, False), (64, False), (128, False), (192, False), (16 | 64, False),
               (16 | 8, True), (32 | 4, True), (255, True)]


def test_scl_table():
    codes = np.array([c for c, _, _ in SCL_TABLE], np.uint8)
    masked, saturated = scl_flags(codes)
    assert masked.tolist() == [m for _, m, _ in SCL_TABLE]
    assert saturated.tolist() == [s for _, _, s in SCL_TABLE]


def test_qa_pixel_table():
    words = np.array([w for w, _ in QA_PIXEL_TABLE], np.uint16)
    assert qa_pixel_flags(words).tolist() == [m for _, m in QA_PIXEL_TABLE]


def test_fmask_table_keeps_snow():
    fm = np.array([f for f, _ in FMASK_TABLE], np.uint8)
    assert fmask_flags(fm).tolist() == [m for _, m in FMASK_TABLE]
    assert not fmask_flags(np.full((3, 3), 16, np.uint8)).any()  # snow/ice stays


def test_qa_radsat_bits_of_the_optical_bands():
    words = np.array([1 << b for b in range(12)], np.uint16)
    # OLI: bands 2-7 are bits 1-6; band 1 (coastal), 8 (pan), 9 (cirrus), 11 (occlusion) not
    assert np.flatnonzero(qa_radsat_flags(words, 9)).tolist() == [1, 2, 3, 4, 5, 6]
    assert np.flatnonzero(qa_radsat_flags(words, 8)).tolist() == [1, 2, 3, 4, 5, 6]
    # TM/ETM+: bands 1-5 and 7 (bit 5 is the thermal band 6)
    assert np.flatnonzero(qa_radsat_flags(words, 5)).tolist() == [0, 1, 2, 3, 4, 6]
    assert np.flatnonzero(qa_radsat_flags(words, 7)).tolist() == [0, 1, 2, 3, 4, 6]


def test_apply_masks_exact_pixels_and_qa_band():
    refl = np.full((6, 4, 5), 0.5, np.float32)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    refl[:, 0, 0] = np.nan
    masked = np.zeros((4, 5), bool)
    masked[1, 1:3] = True
    masked[0, 0] = True  # masked where already nodata: counts as nodata, not masked
    saturated = np.zeros((4, 5), bool)
    saturated[2, 2] = saturated[1, 2] = True
    r, v, qa = apply_masks(refl.copy(), valid, masked, saturated)
    want_valid = valid & ~masked
    np.testing.assert_array_equal(v, want_valid)
    assert np.isnan(r[:, ~want_valid]).all() and (r[:, want_valid] == 0.5).all()
    want_qa = np.zeros((4, 5), np.uint8)
    want_qa[0, 0] = QA_NODATA
    want_qa[1, 1] = QA_MASKED
    want_qa[1, 2] = QA_MASKED | QA_SATURATED
    want_qa[2, 2] = QA_SATURATED
    np.testing.assert_array_equal(qa, want_qa)
    # saturated pixels are kept by default and dropped on request
    assert v[2, 2]
    _, v2, qa2 = apply_masks(refl.copy(), valid, masked, saturated, mask_saturated=True)
    assert not v2[2, 2] and (v2 == (want_valid & ~saturated)).all()
    np.testing.assert_array_equal(qa2, want_qa)
    with pytest.raises(ValueError, match="shape"):
        apply_masks(refl.copy(), valid, masked[:3], saturated)
    with pytest.raises(ValueError, match="shapes differ"):
        qa_band(masked, saturated[:, :4], ~valid)


# ------------------------------------------------------------------ readers

def _scl(shape, seed=0):
    """SCL codes 0..11 spread over a 20 m grid, with a 3 (cloud shadow) block."""
    rng = np.random.default_rng(seed)
    scl = rng.integers(0, 12, size=shape).astype(np.uint8)
    scl[5:12, 8:20] = 3
    return scl


def test_s2_scl_masks_exact_pixels(tmp_path):
    safe, dns = make_safe(tmp_path)
    scl = _scl((H10 // 2, W10 // 2))
    img = next(safe.rglob("IMG_DATA"))
    _tif(img / "R20m" / "T32TPS_20220905T103629_SCL_20m.tif", scl, 20)
    base = read_scene(safe, options=ReadOptions(product_mask=False))
    assert base.qa is None and base.metadata["product_mask"].startswith("off")
    s = read_scene(safe)
    assert s.metadata["product_mask"] == "SCL 3,8,9,10"
    assert s.metadata["saturation"] == "SCL 1"
    up = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)  # the 10 m grid nests in the 20 m
    masked = np.isin(up, (3, 8, 9, 10))
    np.testing.assert_array_equal(s.valid, base.valid & ~masked)
    assert np.isnan(s.reflectance[:, masked]).all()
    ok = s.valid
    np.testing.assert_array_equal(s.reflectance[:, ok], base.reflectance[:, ok])
    want_qa = np.where(masked & base.valid, QA_MASKED, 0) | np.where(
        (up == 1) & base.valid, QA_SATURATED, 0) | np.where(~base.valid, QA_NODATA, 0)
    np.testing.assert_array_equal(s.qa, want_qa.astype(np.uint8))
    assert ((up == 1) & base.valid & s.valid).sum() > 100  # saturated kept
    s2 = read_scene(safe, options=ReadOptions(mask_saturated=True))
    np.testing.assert_array_equal(s2.valid, base.valid & ~masked & (up != 1))


def test_landsat_qa_pixel_and_radsat_exact_pixels(tmp_path):
    folder, _ = make_landsat(tmp_path, 9)
    pid = folder.name
    h30, w30 = H10 // 3, W10 // 3
    qa = np.full((h30, w30), 21824, np.uint16)
    qa[2:6, 3:9] = 23888  # cloud shadow
    qa[8, 8] = 1 << 1  # dilated cloud
    qa[9, 9] = 30048  # snow: kept
    radsat = np.zeros((h30, w30), np.uint16)
    radsat[10, 2:6] = 1 << 3  # band 4 (red) saturated
    radsat[11, 2:6] = 1 << 7  # band 8 (pan): not ours
    _tif(folder / f"{pid}_QA_PIXEL.TIF", qa, 30, nodata=1)
    _tif(folder / f"{pid}_QA_RADSAT.TIF", radsat, 30, nodata=None)
    base = read_scene(folder, options=ReadOptions(product_mask=False))
    s = read_scene(folder)
    assert s.metadata["product_mask"] == "QA_PIXEL bits 1,2,3,4"
    assert s.metadata["saturation"] == "QA_RADSAT"

    def up(a):
        return np.repeat(np.repeat(a, 3, axis=0), 3, axis=1)

    masked = up(qa_pixel_flags(qa))
    sat = up(qa_radsat_flags(radsat, 9))
    assert masked.sum() == 9 * (4 * 6 + 1) and sat.sum() == 9 * 4
    np.testing.assert_array_equal(s.valid, base.valid & ~masked)
    want = (np.where(masked & base.valid, QA_MASKED, 0) | np.where(sat & base.valid,
            QA_SATURATED, 0) | np.where(~base.valid, QA_NODATA, 0))
    np.testing.assert_array_equal(s.qa, want.astype(np.uint8))


def test_hls_fmask_exact_pixels_and_snow_stays(tmp_path):
    fm = np.zeros((20, 30), np.uint8)
    fm[2:5, 2:7] = 2  # cloud
    fm[6:8, 2:7] = 8  # cloud shadow
    fm[9, 2:7] = 4  # adjacent
    fm[12:16, 10:20] = 16  # snow/ice: stays
    fm[17, 0:4] = 16 | 64 | 128  # snow with high aerosol: stays
    fm[18, 0:4] = 255  # fill
    folder = make_hls(tmp_path, "L30", fmask=fm)
    base = read_scene(folder, options=ReadOptions(product_mask=False))
    s = read_scene(folder)
    assert s.metadata["product_mask"] == "Fmask bits 1,2,3 + fill 255"
    masked = np.repeat(np.repeat(fmask_flags(fm), 3, 0), 3, 1)
    snow = np.repeat(np.repeat(((fm & 16) > 0) & (fm != 255), 3, 0), 3, 1)
    np.testing.assert_array_equal(s.valid, base.valid & ~masked)
    assert s.valid[snow].all() and snow.sum() == 9 * (40 + 4)
    np.testing.assert_array_equal(s.qa == QA_MASKED, masked & base.valid)
    assert not (s.qa & QA_SATURATED).any()


def test_mask_of_another_shape_one_line_nothing_written(tmp_path, terrain_inputs):
    from glacierfacies.cli import cli

    dem, outl, _ = terrain_inputs
    safe, _ = make_safe(tmp_path / "p")
    img = next(safe.rglob("IMG_DATA"))
    bad = img / "R20m" / "T32TPS_20220905T103629_SCL_20m.tif"
    _tif(bad, np.zeros((10, 10), np.uint8), 20)  # 200 m x 200 m: not this tile's SCL
    with pytest.raises(InputError, match=r"SCL_20m.tif: mask of another shape: 10x10 px"):
        read_scene(safe)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    res = CliRunner().invoke(cli, ["features", str(safe), "--dem", str(dem), "--outlines",
                                   str(outl), "-o", str(out_dir / "stack.tif")])
    assert res.exit_code != 0
    msg = str(res.exception)
    assert "\n" not in msg and "SCL_20m.tif: mask of another shape" in msg
    assert list(out_dir.iterdir()) == []
    # the same product reads with the mask off
    assert read_scene(safe, options=ReadOptions(product_mask=False)).qa is None


@pytest.fixture()
def terrain_inputs(tmp_path):
    from tests.scenes.test_scenes import terrain_inputs as make

    return make.__wrapped__(tmp_path)


def test_qa_band_written_and_counted_in_products(tmp_path, sample_dir):
    """A cloud-shadowed part of a glacier (SCL 3) is nodata in the map, lowers
    observed_fraction by exactly its observed share, and shows in the products' QA columns."""
    import shutil

    import geopandas as gpd

    from glacierfacies.mapping.config import MapConfig
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.products.table import compute_products
    from glacierfacies.scenes.reader import find_scenes
    from tests.scenes.test_archives import spectral_model

    src = next(p for p in find_scenes(sample_dir / "scenes") if p.name.startswith("S2"))
    safe = tmp_path / src.name
    shutil.copytree(src, safe)
    b11 = next(safe.rglob("*_B11_20m.tif"))
    with rasterio.open(b11) as r:
        h20, w20, tr20, crs = r.height, r.width, r.transform, r.crs
    outl = gpd.read_file(sample_dir / "outlines.gpkg").to_crs(crs)
    g = outl.geometry.iloc[0]
    # SCL: clear (4) everywhere, cloud shadow (3) on the west half of glacier 1's box,
    # saturated (1) on a strip of its east half
    scl = np.full((h20, w20), 4, np.uint8)
    x0, y0, x1, y1 = g.bounds
    c0, r0 = ~tr20 * (x0, y1)
    c1, r1 = ~tr20 * (x1, y0)
    cm = int((c0 + c1) / 2)
    scl[int(r0):int(r1) + 1, int(c0):cm] = 3
    scl[int(r0):int(r1) + 1, cm:cm + 3] = 1
    with rasterio.open(b11) as r:
        prof = r.profile
    prof.update(dtype="uint8", nodata=0)
    with rasterio.open(b11.with_name(b11.name.replace("_B11_", "_SCL_")), "w", **prof) as dst:
        dst.write(scl, 1)
    model = spectral_model(tmp_path / "m" / "fold0.pt")
    kw = dict(dem=sample_dir / "dem.tif", outlines=sample_dir / "outlines.gpkg",
              models=[model], progress=False)
    off = MapConfig(smoothing=False, read=ReadOptions(product_mask=False))
    map_scene(safe, out=tmp_path / "off.tif", config=off, **kw)
    res = map_scene(safe, out=tmp_path / "on.tif", config=MapConfig(smoothing=False), **kw)
    assert str(tmp_path / "on_qa.tif") in res.outputs
    assert not (tmp_path / "off_qa.tif").exists()
    with rasterio.open(tmp_path / "on.tif") as a, rasterio.open(tmp_path / "off.tif") as b, \
            rasterio.open(tmp_path / "on_qa.tif") as q:
        on, off_map, qa = a.read(1), b.read(1), q.read(1)
        assert a.tags()["PRODUCT_MASK"] == "SCL 3,8,9,10" and a.tags()["QA"] == "on_qa.tif"
        assert b.tags()["PRODUCT_MASK"].startswith("off")
    masked = (qa & QA_MASKED) > 0
    assert masked.sum() > 1000
    assert (on[masked] == 255).all()
    np.testing.assert_array_equal(on[~masked], off_map[~masked])  # patch size 1: no context
    r_on, r_off = (compute_products([tmp_path / f"{k}.tif"], sample_dir / "outlines.gpkg",
                                    sample_dir / "dem.tif").iloc[0] for k in ("on", "off"))
    assert r_on["product_mask"] == "SCL 3,8,9,10" and r_off["product_mask"].startswith("off")
    assert np.isnan(r_off["masked_fraction"]) and np.isnan(r_off["saturated_fraction"])
    # exact: the glacier's pixels on the map grid
    from rasterio.features import geometry_mask

    with rasterio.open(tmp_path / "on.tif") as a:
        inside = geometry_mask([g], out_shape=on.shape, transform=a.transform, invert=True)
    observed = (off_map != 255) & (off_map != 7) & (off_map != 4)  # not nodata, cloud, shadow
    n = inside.sum()
    assert r_on["masked_fraction"] == pytest.approx((masked & inside).sum() / n)
    assert r_on["saturated_fraction"] == pytest.approx((((qa & QA_SATURATED) > 0) & inside).sum()
                                                       / n)
    assert r_on["masked_fraction"] > 0.2 and r_on["saturated_fraction"] > 0.01
    lost = (observed & masked & inside).sum() / n
    assert lost > 0.1
    assert r_on["observed_fraction"] < r_off["observed_fraction"]
    # a map copied without its QA band: a warning, NaN fractions, the rest unchanged
    (tmp_path / "alone").mkdir()
    shutil.copy(tmp_path / "on.tif", tmp_path / "alone" / "on.tif")
    with pytest.warns(UserWarning, match="on_qa.tif: QA band named by on.tif not found"):
        alone = compute_products([tmp_path / "alone" / "on.tif"], sample_dir / "outlines.gpkg",
                                 sample_dir / "dem.tif").iloc[0]
    assert np.isnan(alone["masked_fraction"]) and alone["aar"] == r_on["aar"]
    # cloud cannot be told from outside the scene without it: a lower bound, not withheld
    assert r_on["outline_in_scene"] == 1.0 and alone["outline_in_scene"] == pytest.approx(
        1 - (masked & inside & (on == 255)).sum() / n)
    assert "outline_in_scene_lower_bound" in alone["product_flags"]
    assert "withheld" not in alone["product_flags"]
    # shadow: "snowline" counts shadowed pixels as observed, so compare with what was lost
    assert r_off["observed_fraction"] - r_on["observed_fraction"] == pytest.approx(
        ((off_map != 255) & (off_map != 7) & masked & inside).sum() / n, abs=1e-9)


def test_block_wise_maps_and_stack_tags_carry_the_masks(tmp_path):
    """Block-wise mapping gives the whole-scene map and QA band; the stack's tags name the
    mask."""
    import geopandas as gpd
    from shapely.geometry import box

    from glacierfacies.mapping.config import MapConfig
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.stack import build_feature_stack, write_feature_stack
    from tests.scenes.test_archives import spectral_model
    from tests.scenes.test_scenes import CRS, X0, Y0

    safe, _ = make_safe(tmp_path / "p")
    img = next(safe.rglob("IMG_DATA"))
    _tif(img / "R20m" / "T32TPS_20220905T103629_SCL_20m.tif", _scl((H10 // 2, W10 // 2)), 20)
    dem = tmp_path / "dem.tif"
    yy, xx = np.mgrid[0:40, 0:50]
    _tif(dem, (2500 + 3 * xx + 2 * yy).astype(np.float32), 30, nodata=-9999, x0=X0 - 300,
         y0=Y0 + 300)
    outl = tmp_path / "o.gpkg"
    gpd.GeoDataFrame({"glacier": ["A"]}, geometry=[box(X0 + 50, Y0 - 550, X0 + 850, Y0 - 50)],
                     crs=CRS).to_file(outl)
    model = spectral_model(tmp_path / "m" / "fold0.pt")
    kw = dict(dem=dem, outlines=outl, models=[model], progress=False)
    map_scene(safe, out=tmp_path / "whole.tif", config=MapConfig(smoothing=False, block_size=0),
              **kw)
    map_scene(safe, out=tmp_path / "blocks.tif", config=MapConfig(smoothing=False,
                                                                  block_size=32), **kw)
    for suffix in (".tif", "_qa.tif"):
        with rasterio.open(tmp_path / f"whole{suffix}") as a, \
                rasterio.open(tmp_path / f"blocks{suffix}") as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))
    with rasterio.open(tmp_path / "whole_qa.tif") as q:
        assert q.tags()["QA_BITS"].startswith("1=masked")
        assert (q.read(1) & QA_MASKED).sum() > 100
    stack = build_feature_stack(read_scene(safe), dem, outl)
    write_feature_stack(stack, tmp_path / "stack.tif")
    with rasterio.open(tmp_path / "stack.tif") as r:
        assert r.tags()["product_mask"] == "SCL 3,8,9,10"
        assert r.tags()["saturation"] == "SCL 1"
        assert r.tags()["s2_offset_from"] == "MTD_MSIL2A.xml BOA_ADD_OFFSET"
