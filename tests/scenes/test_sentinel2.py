"""Sentinel-2 BOA offset (issue 12): from MTD_MSIL2A.xml, else the product name's _Nxxxx_,
else the acquisition date (with a warning); --s2-offset overrides them all."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.reader import read_scene
from glacierfacies.scenes.sentinel2 import sentinel2_offset
from tests.scenes.test_scenes import make_safe


def _band_folder(tmp_path, name: str, date: str = "20220905"):
    """A flat folder of the SAFE's band files renamed to `date`, named `name`."""
    safe, dns = make_safe(tmp_path / f"src_{name}")
    flat = tmp_path / name
    flat.mkdir()
    for f in safe.rglob("IMG_DATA/*/*.tif"):
        shutil.copy(f, flat / f.name.replace("20220905", date))
    return flat, dns


def _offset_of(scene, dns) -> float:
    """The offset (DN) that turns the B02 DN into the scene's blue reflectance."""
    ok = scene.valid
    return float(np.round(np.median(scene.reflectance[0][ok] * 1e4 - dns["B02"][ok])))


def test_offset_from_the_product_name_baseline(tmp_path):
    # ESA's reprocessed archive: a 2019 scene with baseline 05.00 has the -1000 offset
    flat, dns = _band_folder(tmp_path, "S2A_MSIL2A_20190815T103031_N0500_R108_T32TPS_2023",
                             "20190815")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing is assumed
        s = read_scene(flat)
    assert _offset_of(s, dns) == -1000 and s.metadata["boa_offset_from"] == (
        "baseline 05.00 (product name)")
    flat, dns = _band_folder(tmp_path, "S2A_MSIL2A_20190815T103031_N0213_R108_T32TPS_2019",
                             "20190815")
    s = read_scene(flat)
    assert _offset_of(s, dns) == 0 and s.metadata["processing_baseline"] == "02.13"


@pytest.mark.parametrize("date,want", [("20190815", 0), ("20220124", 0), ("20220125", -1000)])
def test_offset_from_the_date_warns(tmp_path, date, want):
    flat, dns = _band_folder(tmp_path, f"bands_{date}T103031", date)
    with pytest.warns(UserWarning, match="no MTD_MSIL2A.xml and no _Nxxxx_ baseline.*"
                                         "pass --s2-offset"):
        s = read_scene(flat)
    assert _offset_of(s, dns) == want
    assert s.metadata["boa_offset_from"] == "acquisition date (assumed)"


def test_metadata_first_and_s2_offset_overrides_all(tmp_path):
    old, dns = make_safe(tmp_path / "a", baseline="03.01", offsets=False)
    assert _offset_of(read_scene(old), dns) == 0  # MTD baseline 03.01
    new, dns = make_safe(tmp_path / "b", baseline="05.09", offsets=True)
    s = read_scene(new)
    assert _offset_of(s, dns) == -1000
    assert s.metadata["boa_offset_from"] == "MTD_MSIL2A.xml BOA_ADD_OFFSET"
    # MTD says 05.09 but the name says N0301: the MTD wins
    mixed, dns = make_safe(tmp_path / "c", baseline="05.09", offsets=False,
                           name="S2B_MSIL2A_20220905T103629_N0301_R108_T32TPS_20220905T135612")
    assert _offset_of(read_scene(mixed), dns) == -1000
    for path in (old, new, mixed):
        s = read_scene(path, options=ReadOptions(s2_offset_dn=-500))
        assert _offset_of(s, dns if path == mixed else _dns(path)) == -500
        assert s.metadata["boa_offset_from"] == "--s2-offset -500"
    flat, dns = _band_folder(tmp_path, "bands_20190815T103031", "20190815")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        s = read_scene(flat, options=ReadOptions(s2_offset_dn=-1000))
    assert _offset_of(s, dns) == -1000


def _dns(safe):
    import rasterio

    with rasterio.open(next(safe.rglob("*_B02_10m.tif"))) as r:
        return {"B02": r.read(1).astype(np.float64)}


def test_sentinel2_offset_of_baseline_strings():
    assert sentinel2_offset("04.00") == -1000 and sentinel2_offset("N0509") == -1000
    assert sentinel2_offset("03.01") == 0 and sentinel2_offset("N0213") == 0
    with pytest.raises(ValueError):
        sentinel2_offset(None)
