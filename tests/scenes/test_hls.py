"""HLS v2.0 granules (issue 12): NASA names and clip names, L30 and S30 band sets, the sun
from tags / angle layers / the name's time / an assumed time, the WKT CRS, bad band sets."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from glacierfacies import terrain
from glacierfacies.errors import InputError
from glacierfacies.scenes.base import assumed_overpass
from glacierfacies.scenes.hls import HLS_PRODUCTS
from glacierfacies.scenes.reader import find_scenes, read_scene, scene_grid, scene_ids

X0, Y0 = 477870.0, 5784480.0  # Athabasca, UTM 11 N
H30, W30 = 20, 30
#: the L30 clips' CRS: UTM 11 N on an unnamed datum, equal to EPSG:32611 without naming it
L30_WKT = (
    'PROJCS["UTM Zone 11, Northern Hemisphere",GEOGCS["Unknown datum based upon the WGS 84 '
    'ellipsoid",DATUM["Not specified (based on WGS 84 spheroid)",SPHEROID["WGS 84",6378137,'
    '298.257223563,AUTHORITY["EPSG","7030"]]],PRIMEM["Greenwich",0],UNIT["degree",'
    '0.0174532925199433,AUTHORITY["EPSG","9122"]]],PROJECTION["Transverse_Mercator"],'
    'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-117],'
    'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],'
    'PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')


def _write(path: Path, arr: np.ndarray, nodata, crs, tags=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0],
                       count=1, dtype=arr.dtype.name, crs=crs,
                       transform=from_origin(X0, Y0, 30, 30), nodata=nodata) as dst:
        dst.write(arr, 1)
        if tags:
            dst.update_tags(**tags)


def band_dn(product: str, band: str) -> np.ndarray:
    """Deterministic int16 DN of a band (band-specific), with a -9999 corner."""
    seed = sum(map(ord, product + band))
    dn = np.random.default_rng(seed).integers(-50, 9000, (H30, W30)).astype(np.int16)
    dn[:2, :2] = -9999
    return dn


def make_hls(root: Path, product: str = "L30", naming: str = "nasa", fmask=None,
             tags: dict | None = None, bands=None, date: str = "2020229",
             time: str = "184936", crs=None, extra: dict | None = None,
             version: str = "2.0") -> Path:
    """An HLS granule folder: the product's bands (or `bands`), Fmask and `extra` layers."""
    folder = root / (f"HLS.{product}.T11UNU.{date}T{time}.v{version}" if naming == "nasa"
                     else f"{product}_{date}")
    crs = crs or (L30_WKT if product == "L30" else "EPSG:32611")
    bands = bands or HLS_PRODUCTS.get(product, HLS_PRODUCTS["L30"]).all_bands

    def name(layer: str) -> str:
        if naming == "nasa":
            return f"HLS.{product}.T11UNU.{date}T{time}.v{version}.{layer}.tif"
        return f"athabasca_{date}_{layer}_{product}.tif"

    for b in bands:
        _write(folder / name(b), band_dn(product, b), -9999, crs, tags)
    if fmask is not None:
        _write(folder / name("Fmask"), np.asarray(fmask, np.uint8), 255, crs)
    for layer, arr in (extra or {}).items():
        _write(folder / name(layer), arr, None, crs)
    return folder


def test_l30_nasa_names_decode_values_time_and_crs(tmp_path):
    folder = make_hls(tmp_path, "L30")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a time in the name: nothing assumed
        s = read_scene(folder)
    assert s.sensor == "hls-l30" and s.scene_id == "HLS.L30.T11UNU.2020229T184936.v2.0"
    assert s.acquired == dt.datetime(2020, 8, 16, 18, 49, 36, tzinfo=dt.UTC)
    assert s.crs.to_epsg() == 32611  # the unnamed WKT is recognised as EPSG:32611
    assert s.transform == from_origin(X0, Y0, 10, 10) and s.shape == (3 * H30, 3 * W30)
    for i, band in enumerate(("B02", "B03", "B04", "B05", "B06", "B07")):
        dn = band_dn("L30", band)
        centres = s.reflectance[i, 1::3, 1::3]  # 10 m centres on 30 m centres
        ok = dn != -9999
        np.testing.assert_allclose(centres[ok], dn[ok] * 1e-4, atol=1e-6)
    assert not s.valid[:6, :6].any() and s.valid[9:, 9:].all()
    assert s.metadata["product_mask"] == "none (no Fmask file in the product)"
    az, el = terrain.solar_position(s.acquired, 52.135, -117.27)
    assert abs(s.sun_azimuth_deg - float(az)) < 0.5 and abs(s.sun_elevation_deg - float(el)) < 0.5
    assert scene_ids([folder]) == [s.scene_id]
    assert scene_grid(folder) == s.grid
    assert find_scenes(tmp_path) == [folder]


def test_s30_takes_b8a_as_nir_and_sun_from_tags_or_angle_layers(tmp_path):
    tags = {"MEAN_SUN_AZIMUTH_ANGLE": "161.25", "MEAN_SUN_ZENITH_ANGLE": "47.5",
            "SENSING_TIME": "2020-09-09T19:03:12.345Z; 2020-09-09T19:03:15.000Z"}
    s = read_scene(make_hls(tmp_path / "a", "S30", date="2020253", time="190312", tags=tags))
    assert s.sensor == "hls-s30"
    nir = band_dn("S30", "B8A")
    assert not np.array_equal(nir, band_dn("S30", "B08"))
    np.testing.assert_allclose(s.reflectance[3, 1::3, 1::3][nir != -9999],
                               nir[nir != -9999] * 1e-4, atol=1e-6)
    assert (s.sun_azimuth_deg, s.sun_elevation_deg) == (161.25, 42.5)
    assert s.acquired == dt.datetime(2020, 9, 9, 19, 3, 12, 345000, tzinfo=dt.UTC)
    # SAA/SZA layers (degrees x 100) when the tags are absent
    saa = np.full((H30, W30), 16000, np.int16)
    sza = np.full((H30, W30), 4500, np.int16)
    s = read_scene(make_hls(tmp_path / "b", "S30", extra={"SAA": saa, "SZA": sza}))
    assert s.sun_azimuth_deg == pytest.approx(160.0) and s.sun_elevation_deg == pytest.approx(45)
    assert s.metadata["sun_angles"] == "SAA/SZA layers"


def test_clip_names_assume_the_time_with_a_warning_and_a_note(tmp_path):
    from glacierfacies.stack import scene_notes

    folder = make_hls(tmp_path, "L30", naming="clip")
    with pytest.warns(UserWarning, match="time of day assumed: 18:4[34] UTC"):
        s = read_scene(folder)
    assert s.scene_id == "athabasca_2020229_L30"
    lon, lat = -117.277, 52.135
    want = assumed_overpass(dt.date(2020, 8, 16), lat, lon, 10.2)
    assert abs((s.acquired - want).total_seconds()) < 60
    assert "time of day assumed" in s.metadata["time_note"]
    assert scene_notes(s)["time_note"] == s.metadata["time_note"]
    assert s.metadata["sun_angles"] == "computed from an assumed time"
    az, el = terrain.solar_position(s.acquired, lat, lon)
    assert abs(s.sun_azimuth_deg - float(az)) < 0.5 and abs(s.sun_elevation_deg - float(el)) < 0.5


def test_assumed_overpass_geometry():
    d = dt.date(2020, 8, 16)
    # on the equator the descending node itself: node time minus lon/15
    t0 = assumed_overpass(d, 0.0, 0.0, 10.5)
    assert (t0.hour, t0.minute) == (10, 30)
    t1 = assumed_overpass(d, 0.0, -117.0, 10.5)
    assert t1 - t0 == dt.timedelta(hours=117 / 15)
    # north of it the descending track is met earlier in UTC but later in local solar time:
    # +35 min at 46.6 N (Sentinel-2 over the Alps: ~10:20 UTC at 10.7 E), +42 min at 52 N
    alps = assumed_overpass(d, 46.6, 10.7, 10.5)
    assert abs((alps - dt.datetime(2020, 8, 16, 10, 22, tzinfo=dt.UTC)).total_seconds()) < 120
    local = lambda t, lon: (t.hour * 60 + t.minute + t.second / 60 + lon * 4) % 1440  # noqa: E731
    assert local(assumed_overpass(d, 52.0, -117.3, 10.5), -117.3) == pytest.approx(
        10.5 * 60 + 42, abs=1.5)


@pytest.mark.parametrize("case,match", [
    ("missing", r"unknown HLS band set: L30 granule .* lacks B06, B07"),
    ("foreign", r"unknown HLS band set: L30 granule .* has B8A, not L30 band"),
    ("product", r"unknown HLS band set: product 'X30'"),
    ("version", r"HLS v1.4 granule .*only v2.0"),
    ("two", r"holds 2 HLS granules"),
])
def test_unknown_hls_band_sets_one_line(tmp_path, case, match):
    if case == "missing":
        folder = make_hls(tmp_path, "L30", bands=("B02", "B03", "B04", "B05"))
    elif case == "foreign":
        folder = make_hls(tmp_path, "L30", bands=HLS_PRODUCTS["L30"].all_bands + ("B8A",))
    elif case == "product":
        folder = make_hls(tmp_path, "X30", bands=("B02", "B03"))
    elif case == "version":
        folder = make_hls(tmp_path, "L30", version="1.4")
    else:
        folder = make_hls(tmp_path, "L30", naming="clip")
        make_hls(tmp_path, "L30", naming="clip", date="2020245")
        for f in (tmp_path / "L30_2020245").iterdir():
            f.rename(folder / f.name)
    with pytest.raises(InputError, match=match) as err:
        read_scene(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_a_folder_of_several_granules_gives_one_scene_per_granule(tmp_path):
    a = make_hls(tmp_path, "L30", time="184936")
    b = make_hls(tmp_path, "S30", date="2020253", time="190312")
    together = tmp_path / "all"
    together.mkdir()
    for f in list(a.iterdir()) + list(b.iterdir()):
        f.rename(together / f.name)
    found = find_scenes(together)
    assert [p.name for p in found] == ["HLS.L30.T11UNU.2020229T184936.v2.0.B01.tif",
                                       "HLS.S30.T11UNU.2020253T190312.v2.0.B01.tif"]
    scenes = [read_scene(p) for p in found]
    assert [s.sensor for s in scenes] == ["hls-l30", "hls-s30"]
    assert scene_ids(found) == [s.scene_id for s in scenes]
    from glacierfacies.mapping.scene_map import scene_stem

    assert scene_stem(found[0]) == "HLS.L30.T11UNU.2020229T184936.v2.0"


def test_shared_clips_read_as_hls(shared_data):
    for folder, sensor, nir in (("L30_20200816", "hls-l30", "B05"),
                                ("S30_20200909", "hls-s30", "B8A")):
        path = shared_data / "athabasca" / folder
        with pytest.warns(UserWarning, match="time of day assumed"):
            s = read_scene(path)
        assert s.sensor == sensor and s.crs.to_epsg() == 32611
        assert s.shape == (615, 645)
        raw = next(path.glob(f"*_{nir}_*.tif"))
        with rasterio.open(raw) as r:
            dn = r.read(1)
        ok = dn != -9999
        np.testing.assert_allclose(s.reflectance[3, 1::3, 1::3][ok], dn[ok] * 1e-4, atol=1e-6)
        assert s.valid[1::3, 1::3].sum() <= ok.sum()
        assert 0.97 < s.valid.mean() <= 1.0
    # the packaged copy is the same data
    from glacierfacies.examples import example_path

    ex = example_path("athabasca")
    for f in (shared_data / "athabasca").rglob("*"):
        if f.is_file() and f.name != "README.md":
            assert (ex / f.relative_to(shared_data / "athabasca")).read_bytes() == f.read_bytes()


def test_hls_bad_band_set_cli_writes_nothing(tmp_path):
    from glacierfacies.cli import cli
    from tests.scenes.test_archives import spectral_model

    folder = make_hls(tmp_path, "S30", bands=("B02", "B03", "B04", "B08", "B11", "B12"))
    model = spectral_model(tmp_path / "m" / "fold0.pt")
    out = tmp_path / "out"
    out.mkdir()
    from glacierfacies.examples import example_path

    ex = example_path("athabasca")
    res = CliRunner().invoke(cli, ["map", str(folder), "--dem", str(ex / "athabasca_dem.tif"),
                                   "--outlines", str(ex / "athabasca_outline.shp"), "--model",
                                   str(model), "-o", str(out / "m.tif")])
    assert res.exit_code != 0
    assert "\n" not in str(res.exception)
    assert "unknown HLS band set: S30 granule" in str(res.exception) and "lacks B8A" in str(
        res.exception)
    assert list(out.iterdir()) == []
