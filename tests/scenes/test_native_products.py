"""Issue 23, item 7: the two real Level-2 products in ../shared/data/native/ read through the
normal reader (`scenes.reader.read_scene`), every number checked against the product's own
metadata, parsed here independently of the reader.

Sentinel-2 L2A (S2A, tile 29UNU, 2022-10-05, baseline 04.00): the product ships only its
60 m bands (no R10m/R20m reflectance), so it is read **at 60 m, on its own R60m grid** (a
window of it: exact DN, no resampling); its NIR is B8A, as R60m holds no B08. The SCL mask
is checked on the real 20 m SCL's grid. Landsat 8 C2 L2 (path 001 row 070, 2019-01-14):
read on the grid of its rasters (512 x 512, downsampled), not the MTL's full 7781 x 7651.
Skipped with the reason where ../shared is absent. docs/real-data.md lists the values.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

S2_NAME = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
L8_NAME = "LC08_L2SP_001070_20190114_20200830_02_T2"
S2_BANDS = ("B02", "B03", "B04", "B8A", "B11", "B12")  # blue, green, red, nir, swir1, swir2
L8_BANDS = (2, 3, 4, 5, 6, 7)


@pytest.fixture(scope="module")
def s2(shared_data) -> Path:
    p = shared_data / "native" / "sentinel2" / S2_NAME
    if not p.is_dir():
        pytest.skip(f"{p} is absent")
    return p


@pytest.fixture(scope="module")
def l8(shared_data) -> Path:
    p = shared_data / "native" / "landsat" / L8_NAME
    if not p.is_dir():
        pytest.skip(f"{p} is absent")
    return p


def _text(root: ET.Element, name: str) -> str:
    return next(el.text.strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == name)


def _s2_band(s2: Path, band: str, res: int = 60) -> Path:
    return next(s2.glob(f"GRANULE/*/IMG_DATA/R{res}m/*_{band}_{res}m.jp2"))


def _read(path: Path, window=None) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1, window=window)


def test_sentinel2_l2a_at_60m_matches_its_metadata(s2):
    from rasterio.windows import Window

    from glacierfacies.scenes.grid import Grid
    from glacierfacies.scenes.reader import read_scene

    mtd = ET.parse(s2 / "MTD_MSIL2A.xml").getroot()
    offsets = {int(el.get("band_id")): float(el.text) for el in mtd.iter()
               if el.tag.rsplit("}", 1)[-1] == "BOA_ADD_OFFSET"}
    quant = float(_text(mtd, "BOA_QUANTIFICATION_VALUE"))
    assert (quant, set(offsets.values()), _text(mtd, "PROCESSING_BASELINE")) == (
        10000.0, {-1000.0}, "04.00")
    tl = ET.parse(next(s2.glob("GRANULE/*/MTD_TL.xml"))).getroot()
    mean = next(el for el in tl.iter() if el.tag == "Mean_Sun_Angle")
    zenith, azimuth = float(_text(mean, "ZENITH_ANGLE")), float(_text(mean, "AZIMUTH_ANGLE"))

    r0, c0, n = 600, 600, 300
    grid = Grid.of(_s2_band(s2, "B02")).window(r0, c0, n, n)  # the real R60m grid
    scene = read_scene(s2, grid=grid)
    assert scene.sensor == "sentinel2" and scene.scene_id == S2_NAME[:-5]
    assert scene.grid.crs.to_epsg() == 32629 and abs(scene.grid.transform.a) == 60.0
    m = scene.metadata
    assert m["boa_offset_dn"] == -1000.0 and m["boa_offset_from"] == "MTD_MSIL2A.xml BOA_ADD_OFFSET"
    assert m["quantification"] == quant and m["processing_baseline"] == "04.00"
    assert m["nir_band"] == "B8A" and m["sun_angles"] == "MTD_TL.xml"
    assert scene.sun_azimuth_deg == pytest.approx(azimuth, abs=1e-9)
    assert scene.sun_elevation_deg == pytest.approx(90.0 - zenith, abs=1e-9)
    assert (azimuth, zenith) == pytest.approx((172.840206897213, 57.820574357679), abs=1e-9)
    assert scene.acquired.isoformat().startswith(_text(mtd, "PRODUCT_START_TIME")[:19])
    # reflectance = (DN + BOA_ADD_OFFSET) / QUANTIFICATION, exactly, on every valid pixel
    win = Window(c0, r0, n, n)
    dn = np.stack([_read(_s2_band(s2, b), win).astype(np.float64) for b in S2_BANDS])
    ids = [1, 2, 3, 8, 11, 12]  # band_id of B02, B03, B04, B8A, B11, B12 in the metadata
    expect = (dn + np.array([offsets[i] for i in ids])[:, None, None]) / quant
    v = scene.valid
    assert 0.05 < v.mean() < 0.95  # the product's mask removes part of this window
    np.testing.assert_allclose(scene.reflectance[:, v], expect[:, v], rtol=0, atol=1e-6)
    assert (dn[:, v] > 0).all()  # DN 0 is the product's nodata, never valid


def test_sentinel2_scl_mask_on_its_20m_grid(s2):
    from rasterio.windows import Window

    from glacierfacies.scenes.grid import Grid
    from glacierfacies.scenes.masks import QA_MASKED, QA_SATURATED
    from glacierfacies.scenes.reader import read_scene

    scl_path = _s2_band(s2, "SCL", 20)
    r0, c0, n = 1800, 1800, 900  # = the 60 m window above, on the 20 m SCL grid
    grid = Grid.of(scl_path).window(r0, c0, n, n)
    scene = read_scene(s2, grid=grid)
    assert scene.metadata["product_mask"] == "SCL 3,8,9,10"
    scl = _read(scl_path, Window(c0, r0, n, n))
    counts = dict(zip(*np.unique(scl, return_counts=True), strict=True))
    assert sum(counts.get(k, 0) for k in (3, 8, 9, 10)) > 1000  # real clouds and shadows here
    cloud = np.isin(scl, [3, 8, 9, 10])
    assert not scene.valid[cloud].any()  # every SCL cloud, shadow, cirrus pixel is masked
    assert ((scene.qa & QA_MASKED) != 0)[cloud].all()
    assert ((scene.qa & QA_MASKED) != 0).sum() == cloud.sum()
    assert (((scene.qa & QA_SATURATED) != 0) == (scl == 1)).all()
    # everything else is valid where the (resampled 60 m) bands have data
    other = ~cloud & (scl != 0)
    assert scene.valid[other].mean() > 0.99


def _mtl(path: Path) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(GROUP|END_GROUP|\w+)\s*=\s*\"?([^\"]*)\"?\s*$", line)
        if not m:
            continue
        if m.group(1) == "GROUP":
            current = groups.setdefault(m.group(2), {})
        elif current is not None and m.group(1) != "END_GROUP":
            current[m.group(1)] = m.group(2)
    return groups


def test_landsat8_c2_l2_matches_its_mtl(l8):
    from glacierfacies.scenes.grid import Grid
    from glacierfacies.scenes.masks import QA_MASKED, QA_SATURATED
    from glacierfacies.scenes.reader import read_scene

    mtl = _mtl(next(l8.glob("*_MTL.txt")))
    sr = mtl["LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"]
    mult = [float(sr[f"REFLECTANCE_MULT_BAND_{b}"]) for b in L8_BANDS]
    add = [float(sr[f"REFLECTANCE_ADD_BAND_{b}"]) for b in L8_BANDS]
    assert set(mult) == {2.75e-05} and set(add) == {-0.2}  # not Level 1's 2e-05 / -0.1
    toa = mtl["LEVEL1_RADIOMETRIC_RESCALING"]
    assert float(toa["REFLECTANCE_MULT_BAND_2"]) == 2.0e-05
    attrs = mtl["IMAGE_ATTRIBUTES"]
    proj = mtl["PROJECTION_ATTRIBUTES"]
    assert (int(proj["REFLECTIVE_LINES"]), int(proj["REFLECTIVE_SAMPLES"])) == (7781, 7651)

    band = lambda name: next(l8.glob(f"*_{name}.TIF"))  # noqa: E731
    grid = Grid.of(band("SR_B2"))  # the rasters' own grid (downsampled), not the MTL's
    scene = read_scene(l8, grid=grid)
    assert scene.grid.shape == (512, 512) and scene.sensor == "landsat8"
    assert scene.scene_id == L8_NAME and scene.metadata["sun_angles"] == "MTL"
    assert scene.sun_azimuth_deg == pytest.approx(float(attrs["SUN_AZIMUTH"]), abs=1e-9)
    assert scene.sun_elevation_deg == pytest.approx(float(attrs["SUN_ELEVATION"]), abs=1e-9)
    assert (scene.sun_azimuth_deg, scene.sun_elevation_deg) == pytest.approx(
        (107.50935585, 59.49769288), abs=1e-9)
    assert scene.acquired.date().isoformat() == mtl["IMAGE_ATTRIBUTES"]["DATE_ACQUIRED"]
    dn = np.stack([_read(band(f"SR_B{b}")).astype(np.float64) for b in L8_BANDS])
    expect = dn * np.array(mult)[:, None, None] + np.array(add)[:, None, None]
    v = scene.valid
    np.testing.assert_allclose(scene.reflectance[:, v], expect[:, v], rtol=0, atol=1e-6)
    # QA_PIXEL: bits 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow are masked
    qa_pixel = _read(band("QA_PIXEL")).astype(np.int64)
    cloud = (qa_pixel & 0b11110) != 0
    fill = (qa_pixel & 1) != 0
    assert cloud.mean() > 0.5  # a cloudy January scene
    assert scene.metadata["product_mask"] == "QA_PIXEL bits 1,2,3,4"
    has_data = (dn > 0).all(axis=0)
    assert not v[cloud].any()
    assert (((scene.qa & QA_MASKED) != 0) == (cloud & has_data)).all()  # else QA_NODATA
    np.testing.assert_array_equal(v, ~cloud & has_data)
    # fill (bit 0) is the bands' nodata (DN 0) and never valid, except on 512 pixels where
    # this downsampled copy has data under the fill flag (its resampling; not in full-size
    # products, where fill and DN 0 coincide): those are read as the data they hold
    assert not v[fill & (dn == 0).any(axis=0)].any()
    assert int((fill & v).sum()) == 512
    radsat = _read(band("QA_RADSAT")).astype(np.int64)
    saturated = (radsat & sum(1 << k for k in (1, 2, 3, 4, 5, 6))) != 0  # OLI bands 2-7
    assert (((scene.qa & QA_SATURATED) != 0) == saturated).all()
