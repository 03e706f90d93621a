"""Scene readers (Sentinel-2 .SAFE / band folders, Landsat C2 L2, GeoTIFF), the feature stack
and its writer, on small hand-made products laid out like the real ones, and on the sample."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import glacierfacies.scenes.grid as grid_mod
from glacierfacies import terrain
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES
from glacierfacies.scenes.grid import Grid, _read_band
from glacierfacies.scenes.landsat import landsat, landsat_mission
from glacierfacies.scenes.reader import find_scenes, read_scene, scene_grid, scene_ids
from glacierfacies.scenes.sentinel2 import sentinel2
from glacierfacies.stack import TERRAIN_MARGIN_M, build_feature_stack, write_feature_stack

CRS = "EPSG:32632"
X0, Y0 = 630000.0, 5166000.0
H10, W10 = 60, 90  # 600 m x 900 m


def _tif(path: Path, arr: np.ndarray, res: float, nodata=0, x0=X0, y0=Y0, crs=CRS, tags=None):
    arr = arr if arr.ndim == 3 else arr[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=crs,
        transform=from_origin(x0, y0, res, res),
        nodata=nodata,
    ) as dst:
        dst.write(arr)
        if tags:
            dst.update_tags(**tags)


def _dn_field(seed: int, shape, lo=2000, hi=9000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi, size=shape).astype(np.uint16)


S2_MTD = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info><Product_Info>
    <PRODUCT_START_TIME>2022-09-05T10:36:29.024Z</PRODUCT_START_TIME>
    <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
  </Product_Info>
  <Product_Image_Characteristics>
    <QUANTIFICATION_VALUES_LIST>
      <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>
    {offsets}
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""
S2_TL = """<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd">
  <n1:General_Info><SENSING_TIME>2022-09-05T10:36:29.024Z</SENSING_TIME></n1:General_Info>
  <n1:Geometric_Info><Tile_Angles>
    <Mean_Sun_Angle>
      <ZENITH_ANGLE unit="deg">48.5</ZENITH_ANGLE>
      <AZIMUTH_ANGLE unit="deg">160.25</AZIMUTH_ANGLE>
    </Mean_Sun_Angle>
    <Mean_Viewing_Incidence_Angle_List>
      <Mean_Viewing_Incidence_Angle bandId="0">
        <ZENITH_ANGLE unit="deg">4.1</ZENITH_ANGLE><AZIMUTH_ANGLE unit="deg">106.2</AZIMUTH_ANGLE>
      </Mean_Viewing_Incidence_Angle>
    </Mean_Viewing_Incidence_Angle_List>
  </Tile_Angles></n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""


def make_safe(
    root: Path, baseline="05.09", ext=".tif", offsets=True, name=None
) -> tuple[Path, dict]:
    name = (
        name
        or f"S2B_MSIL2A_20220905T103629_N{baseline.replace('.', '')}_R108_T32TPS_20220905T135612"
    )
    safe = root / f"{name}.SAFE"
    granule = safe / "GRANULE" / "L2A_T32TPS_A028000_20220905T103629" / "IMG_DATA"
    dns = {}
    for i, band in enumerate(("B02", "B03", "B04", "B08", "B11", "B12")):
        res = 20 if band in ("B11", "B12") else 10
        dn = _dn_field(i, (H10 * 10 // res, W10 * 10 // res))
        if band == "B02":
            dn[:3, :3] = 0  # nodata corner
            dn[10, 10] = 65535  # saturated
        _tif(granule / f"R{res}m" / f"T32TPS_20220905T103629_{band}_{res}m{ext}", dn, res)
        dns[band] = dn
    # Real products also hold coarser copies of the 10 m bands and QI masks named by band.
    _tif(
        granule / "R20m" / "T32TPS_20220905T103629_B02_20m.tif",
        _dn_field(99, (H10 // 2, W10 // 2)),
        20,
    )
    _tif(granule.parent / "QI_DATA" / "MSK_QUALIT_B02.tif", np.ones((H10, W10), np.uint8), 10)
    off = ""
    if offsets:
        off = (
            "<BOA_ADD_OFFSET_VALUES_LIST>"
            + "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
            + "</BOA_ADD_OFFSET_VALUES_LIST>"
        )
    (safe / "MTD_MSIL2A.xml").write_text(S2_MTD.format(baseline=baseline, offsets=off))
    (granule.parent / "MTD_TL.xml").write_text(S2_TL)
    return safe, dns


LANDSAT_MTL = """GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    LANDSAT_PRODUCT_ID = "{pid}"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "{craft}"
{time}{sun}  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = LEVEL1_RADIOMETRIC_RESCALING
    REFLECTANCE_MULT_BAND_2 = 2.0000E-05
    REFLECTANCE_ADD_BAND_2 = -0.100000
  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
    REFLECTANCE_MULT_BAND_2 = 2.75e-05
    REFLECTANCE_ADD_BAND_2 = -0.200000
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""


def make_landsat(root: Path, mission=9, sun=True, time=True, missing=None) -> tuple[Path, dict]:
    prefix = {9: "LC09", 8: "LC08", 7: "LE07", 5: "LT05"}[mission]
    pid = f"{prefix}_L2SP_193027_20220905_20220907_02_T1"
    folder = root / pid
    bands = landsat(mission).bands
    dns = {}
    for i, name in enumerate(bands.values()):
        dn = _dn_field(10 + i, (H10 // 3, W10 // 3), 8000, 40000)
        dn[-2:, -2:] = 0
        if name != missing:
            _tif(folder / f"{pid}_{name}.TIF", dn, 30)
        dns[name] = dn
    t = (
        '    DATE_ACQUIRED = 2022-09-05\n    SCENE_CENTER_TIME = "10:12:41.1234560Z"\n'
        if time
        else ""
    )
    s = "    SUN_AZIMUTH = 158.50000000\n    SUN_ELEVATION = 40.25000000\n" if sun else ""
    (folder / f"{pid}_MTL.txt").write_text(
        LANDSAT_MTL.format(pid=pid, craft=f"LANDSAT_{mission}", time=t, sun=s)
    )
    return folder, dns


@pytest.fixture()
def terrain_inputs(tmp_path):
    """A DEM (30 m, larger than the scenes) with a ridge, and two glacier outlines."""
    import geopandas as gpd
    from shapely.geometry import box

    yy, xx = np.mgrid[0:60, 0:70]
    z = (2500 + 400 * np.exp(-((xx - 35) ** 2) / 60.0) + 2 * yy).astype(np.float32)
    dem = tmp_path / "dem.tif"
    _tif(dem, z, 30, nodata=-9999, x0=X0 - 300, y0=Y0 + 300)
    outl = tmp_path / "outlines.gpkg"
    gdf = gpd.GeoDataFrame(
        {"rgi_id": ["G1", "G2", "FAR"]},
        geometry=[
            box(X0 + 100, Y0 - 400, X0 + 300, Y0 - 100),
            box(X0 + 500, Y0 - 500, X0 + 800, Y0 - 200),
            box(X0 + 9000, Y0 - 9000, X0 + 9500, Y0 - 8500),
        ],
        crs=CRS,
    ).to_crs("EPSG:4326")  # another CRS: reprojected silently
    gdf.to_file(outl)
    return dem, outl, z


# ------------------------------------------------------------------ Sentinel-2


def test_read_safe_decodes_dn_and_metadata(tmp_path):
    safe, dns = make_safe(tmp_path)
    s = read_scene(safe)
    assert s.sensor == "sentinel2" and s.scene_id == safe.name[:-5]
    assert s.reflectance.shape == (6, H10, W10) and s.reflectance.dtype == np.float32
    assert s.transform == from_origin(X0, Y0, 10, 10) and s.crs.to_epsg() == 32632
    assert s.acquired == dt.datetime(2022, 9, 5, 10, 36, 29, 24000, tzinfo=dt.UTC)
    assert s.sun_azimuth_deg == pytest.approx(160.25) and s.sun_elevation_deg == pytest.approx(41.5)
    b02 = (dns["B02"].astype(np.float64) - 1000) / 10000
    assert np.nanmax(np.abs(s.reflectance[0] - b02)) < 1e-6  # R10m file, not R20m / QI_DATA
    expect = (dns["B04"].astype(np.float64) - 1000) / 10000
    assert np.nanmax(np.abs(s.reflectance[2] - expect)) < 1e-6
    assert not s.valid[:3, :3].any() and not s.valid[10, 10]
    assert np.isnan(s.reflectance[:, 10, 10]).all() and s.valid.sum() == H10 * W10 - 10
    # 20 m band: on its own 20 m grid it is exactly the decoded DN ...
    g20 = Grid(s.crs, from_origin(X0, Y0, 20, 20), H10 // 2, W10 // 2)
    s20 = read_scene(safe, grid=g20)
    assert np.nanmax(np.abs(s20.reflectance[4] - (dns["B11"] - 1000.0) / 1e4)) < 1e-6
    # ... and on the 10 m grid it is bilinear: interior 10 m pixels mix 20 m neighbours.
    d = (dns["B11"].astype(float) - 1000) / 1e4
    r, c = 7, 9  # 10 m pixel centre at 20 m coords (3.75, 4.75) -> 0.75/0.25 weights
    want = (
        0.75 * 0.75 * d[3, 4]
        + 0.75 * 0.25 * d[3, 5]
        + 0.25 * 0.75 * d[4, 4]
        + 0.25 * 0.25 * d[4, 5]
    )
    assert s.reflectance[4, r, c] == pytest.approx(want, abs=1e-5)


def test_s2_baseline_offset_and_band_folder(tmp_path):
    old, dns = make_safe(tmp_path / "a", baseline="03.01", offsets=False)
    s = read_scene(old)  # before 04.00: no offset
    assert np.nanmax(np.abs(s.reflectance[0] - dns["B02"] / 1e4)[s.valid]) < 1e-6
    # A flat folder of band files (.jp2 names with GeoTIFF content, no metadata).
    safe, dns = make_safe(tmp_path / "b", ext=".jp2")
    flat = tmp_path / "flat_T32TPS_20220905T103629"
    flat.mkdir()
    for f in safe.rglob("*.jp2"):
        (flat / f.name).write_bytes(f.read_bytes())
    s = read_scene(flat)
    assert s.acquired == dt.datetime(2022, 9, 5, 10, 36, 29, tzinfo=dt.UTC)
    az, el = terrain.solar_position(s.acquired, 46.6, 10.7)
    assert abs(s.sun_azimuth_deg - float(az)) < 2 and abs(s.sun_elevation_deg - float(el)) < 1
    assert np.nanmax(np.abs(s.reflectance[3] - (dns["B08"] - 1000.0) / 1e4)) < 1e-6
    assert sorted(find_scenes(tmp_path)) == sorted([old, safe, flat])


# ------------------------------------------------------------------ Landsat


@pytest.mark.parametrize("mission", [9, 5])
def test_read_landsat(tmp_path, mission):
    folder, dns = make_landsat(tmp_path, mission)
    s = read_scene(folder)
    assert s.sensor == f"landsat{mission}" and s.scene_id == folder.name
    assert s.reflectance.shape == (6, H10, W10)
    assert s.transform == from_origin(X0, Y0, 10, 10)  # same 10 m grid as the S2 scene
    assert s.acquired == dt.datetime(2022, 9, 5, 10, 12, 41, 123456, tzinfo=dt.UTC)
    assert (s.sun_azimuth_deg, s.sun_elevation_deg) == (158.5, 40.25)
    blue = "SR_B1" if mission == 5 else "SR_B2"
    want = dns[blue] * 2.75e-5 - 0.2
    centres = s.reflectance[0, 1::3, 1::3]  # 10 m centres that coincide with 30 m centres
    ok = np.isfinite(centres)
    assert np.abs(centres - want)[ok].max() < 1e-6
    assert not s.valid[-6:, -6:].any() and s.valid[:-9, :-9].all()
    # The MTL path itself works too.
    s2 = read_scene(next(folder.glob("*_MTL.txt")))
    assert np.array_equal(s2.valid, s.valid)


def test_landsat_sun_from_time_or_error(tmp_path):
    folder, _ = make_landsat(tmp_path / "a", sun=False)
    s = read_scene(folder)
    az, el = terrain.solar_position(dt.datetime(2022, 9, 5, 10, 12, 41), 46.6, 10.7)
    assert abs(s.sun_azimuth_deg - float(az)) < 2 and abs(s.sun_elevation_deg - float(el)) < 1
    folder, _ = make_landsat(tmp_path / "b", sun=False, time=False)
    with pytest.raises(InputError, match="_MTL.txt: no sun angles"):
        read_scene(folder)


# ------------------------------------------------------------------ GeoTIFF


def test_read_generic_geotiff(tmp_path):
    arr = np.stack([np.full((30, 40), 0.1 * (i + 1), np.float32) for i in range(7)])
    arr[:, 0, 0] = -1
    p = tmp_path / "stack_20220905.tif"
    _tif(p, arr, 10, nodata=-1)
    bm = {"blue": 7, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}
    s = read_scene(p, band_map=bm, scale=2.0, offset=-0.1)
    assert s.reflectance[0, 5, 5] == pytest.approx(0.7 * 2 - 0.1)
    assert s.reflectance[3, 5, 5] == pytest.approx(0.4 * 2 - 0.1)
    assert not s.valid[0, 0] and s.valid.sum() == 30 * 40 - 1
    assert s.acquired.date() == dt.date(2022, 9, 5)
    with pytest.raises(InputError, match="band map"):
        read_scene(p)  # 7 bands and no band map


# ------------------------------------------------------------------ feature stack


def test_feature_stack_values_and_write(tmp_path, terrain_inputs):
    dem, outl, z30 = terrain_inputs
    safe, _ = make_safe(tmp_path)
    s = read_scene(safe)
    st = build_feature_stack(s, dem, outl)
    assert st.features.shape == (11, H10, W10) and st.features.dtype == np.float32
    assert st.transform == s.transform and st.crs == s.crs
    f = dict(zip(FEATURE_NAMES, st.features, strict=True))
    # Elevation: the DEM bilinearly resampled; at a 10 m centre that coincides with a 30 m
    # centre it is the DEM value itself (DEM origin 300 m = 10 px of 30 m NW of the scene).
    assert f["elevation"][4, 4] == pytest.approx(z30[11, 11], abs=1e-3)
    # Slope of the 2 m per 30 m southward rise, plus the ridge's east-west slope.
    assert 0 < np.nanmin(f["slope"]) and np.nanmax(f["slope"]) < 60
    assert set(np.unique(f["shadow_mask"][st.valid])) <= {0.0, 1.0}
    hs = f["hillshade"][st.valid]
    assert hs.min() >= 1 and hs.max() <= 255
    # Glacier index and signed proximity: G1 = 1 covers x 100..300 m, y -100..-400 m.
    assert list(st.outlines["rgi_id"]) == ["G1", "G2"]
    assert st.glacier_index[20, 20] == 1 and st.glacier_index[30, 60] == 2
    assert st.glacier_index[55, 5] == 0
    assert f["proximity"][20, 20] == pytest.approx(95.0, abs=0.5)  # centre x 205 m, edge x 300 m
    assert f["proximity"][5, 5] < 0
    assert np.array_equal(np.isfinite(st.features).all(axis=0), st.valid)
    assert np.shares_memory(st.scene.reflectance, st.features)
    out = tmp_path / "stack.tif"
    write_feature_stack(st, out)
    with rasterio.open(out) as r:
        assert r.count == 11 and r.descriptions == FEATURE_NAMES
        assert r.tags()["scene_id"] == s.scene_id
        back = r.read()
    assert np.array_equal(np.isnan(back), np.isnan(st.features))
    assert np.nanmax(np.abs(back - st.features)) == 0
    with pytest.raises(InputError, match="exists"):
        write_feature_stack(st, out, overwrite=False)


def test_cast_shadow_in_stack_uses_scene_sun(tmp_path, terrain_inputs):
    dem, outl, _ = terrain_inputs
    safe, _ = make_safe(tmp_path)
    s = read_scene(safe)
    low = build_feature_stack(
        dataclasses.replace(s, sun_elevation_deg=10.0, sun_azimuth_deg=90.0), dem, outl
    )
    high = build_feature_stack(
        dataclasses.replace(s, sun_elevation_deg=60.0, sun_azimuth_deg=90.0), dem, outl
    )
    i = FEATURE_NAMES.index("shadow_mask")
    assert np.nanmean(low.features[i]) > np.nanmean(high.features[i])
    # The ridge (x = 35 x 30 m from the DEM origin = 750 m east of the scene) shades the
    # west side of the scene in a low eastern sun.
    assert np.nanmean(low.features[i][:, :40]) > 0.5


# ------------------------------------------------------------------ bad input


def test_bad_inputs_name_the_file(tmp_path, terrain_inputs):
    dem, outl, _ = terrain_inputs
    safe, _ = make_safe(tmp_path / "a")
    b12 = next(safe.rglob("*_B12_20m.tif"))
    b12.unlink()
    with pytest.raises(InputError, match="missing band file.*B12"):
        read_scene(safe)
    folder, _ = make_landsat(tmp_path / "b", missing="SR_B6")
    with pytest.raises(InputError, match="SR_B6.TIF: missing band file"):
        read_scene(folder)
    safe, _ = make_safe(tmp_path / "c")
    b03 = next(safe.rglob("*_B03_10m.tif"))
    b03.write_bytes(b03.read_bytes()[:600])  # truncated = corrupt
    with pytest.raises(InputError, match=str(b03.name)):
        read_scene(safe)
    safe, _ = make_safe(tmp_path / "d")
    for f in safe.rglob("*.tif"):
        with rasterio.open(f, "r+") as r:
            r.write(np.zeros((1, r.height, r.width), np.uint16))
    with pytest.raises(InputError, match="no valid pixel"):
        read_scene(safe)
    s = read_scene(make_safe(tmp_path / "e")[0])
    far = tmp_path / "far_dem.tif"
    _tif(far, np.ones((10, 10), np.float32), 30, nodata=-9999, x0=X0 + 50000)
    with pytest.raises(InputError, match="far_dem.tif: DEM does not overlap"):
        build_feature_stack(s, far, outl)
    import geopandas as gpd
    from shapely.geometry import box

    away = tmp_path / "away.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(away)
    with pytest.raises(InputError, match="away.gpkg: no outline intersects"):
        build_feature_stack(s, dem, away)
    out = tmp_path / "x.tif"
    assert not out.exists()


def test_sensor_tables():
    s2 = sentinel2("05.09")
    assert s2.offset == pytest.approx(-0.1) and s2.scale == pytest.approx(1e-4)
    assert sentinel2("02.14").offset == 0.0
    assert (
        landsat(7).bands["swir2"] == "SR_B7" and landsat(7).bands["nir"] == "SR_B4"
    )
    assert (
        landsat(8).bands["blue"] == "SR_B2" and landsat(9).bands["swir1"] == "SR_B6"
    )
    assert landsat_mission("LT05_L2SP_193027_19980811_20200908_02_T1") == 5
    assert landsat_mission("LANDSAT_8") == 8
    dn = np.array([0, 1000, 65535, 11000], np.uint16)
    r = s2.decode(dn)
    assert np.isnan(r[[0, 2]]).all() and abs(r[1]) < 1e-7 and r[3] == pytest.approx(1.0)
    assert math.isclose(landsat(9).decode(np.array([7273]))[0], 0.0000075, abs_tol=1e-6)


# ------------------------------------------------------------------ the built-in sample


def test_sample_scenes_read_back_to_generator_values(sample_dir):
    from glacierfacies import sample

    paths = find_scenes(sample_dir / "scenes")
    assert len(paths) >= 2 and find_scenes(sample_dir) == paths
    kinds = set()
    for p in paths:
        s = read_scene(p)
        kinds.add(s.sensor[:7])
        assert s.reflectance.shape[1:] == s.valid.shape and s.valid.mean() > 0.9
        assert s.transform.a == 10 and s.transform.e == -10
        if s.sensor == "sentinel2":
            files = [next(p.rglob(f"*_{b}_*m.tif")) for b in sample.S2_BANDS]
            decode = sample.decode_s2
        else:
            files = [next(p.glob(f"*_{b}.TIF")) for b in sample.LANDSAT_BANDS]
            decode = sample.decode_landsat
        native = {}
        for i, f in enumerate(files):
            with rasterio.open(f) as r:
                want = decode(r.read(1))
                res = r.res[0]
            if res not in native:  # read the whole scene onto this band's own grid
                native[res] = s if res == 10 else read_scene(p, grid=f)
            got = native[res].reflectance[i]
            ok = np.isfinite(want) & native[res].valid
            assert ok.mean() > 0.9
            assert np.abs(got - want)[ok].max() <= 1e-4, f.name
        assert s.scene_id in {x for x in scene_ids([p])}


def test_sample_sensors_share_the_10m_grid(sample_dir):
    paths = find_scenes(sample_dir / "scenes")
    by_date: dict = {}
    for p in paths:
        s = read_scene(p)
        by_date.setdefault(s.acquired.date(), []).append(s)
    pairs = [v for v in by_date.values() if len({s.sensor[:7] for s in v}) == 2]
    assert pairs, "the sample has an S2 and a Landsat scene of the same date"
    for group in pairs:
        grids = {(s.transform, s.shape, s.crs.to_epsg()) for s in group}
        assert len(grids) == 1
        stacks = [
            build_feature_stack(s, sample_dir / "dem.tif", sample_dir / "outlines.gpkg")
            for s in group
        ]
        assert stacks[0].transform == stacks[1].transform and stacks[0].shape == stacks[1].shape
        # Same DEM, same grid -> identical elevation/slope/proximity; same glaciers.
        for name in ("elevation", "slope", "proximity"):
            i = FEATURE_NAMES.index(name)
            both = stacks[0].valid & stacks[1].valid
            assert np.array_equal(stacks[0].features[i][both], stacks[1].features[i][both])
        assert np.array_equal(stacks[0].glacier_index, stacks[1].glacier_index)
        assert stacks[0].glacier_index.max() == len(stacks[0].outlines)


def test_features_cli(sample_dir, tmp_path):
    from click.testing import CliRunner

    from glacierfacies.cli import cli

    scene = find_scenes(sample_dir / "scenes")[0]
    out = tmp_path / "stack.tif"
    args = [
        "features",
        str(scene),
        "--dem",
        str(sample_dir / "dem.tif"),
        "--outlines",
        str(sample_dir / "outlines.gpkg"),
        "-o",
        str(out),
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as r:
        assert r.count == 11 and r.descriptions == FEATURE_NAMES and r.dtypes[0] == "float32"
        assert r.res == (10.0, 10.0)
    res = CliRunner().invoke(cli, args)  # exists, no --overwrite
    assert res.exit_code != 0 and "exists" in str(res.exception)
    bad = tmp_path / "bad.tif"
    far = tmp_path / "far_dem.tif"
    _tif(far, np.ones((10, 10), np.float32), 30, nodata=-9999, x0=X0 + 50000)
    args[args.index("--dem") + 1] = str(far)
    args[-1] = str(bad)
    res = CliRunner().invoke(cli, args)
    assert isinstance(res.exception, InputError) and "far_dem.tif" in str(res.exception)
    assert "\n" not in str(res.exception)
    assert not bad.exists() and not list(tmp_path.glob(".bad.tif*"))


# ------------------------------------------------------------------ windowed reads (block mode)


def _sub_grid(grid: Grid, r0: int, c0: int, h: int, w: int) -> Grid:
    from rasterio.transform import Affine

    return Grid(grid.crs, grid.transform @ Affine.translation(c0, r0), h, w)


def _crop(arr: np.ndarray, r0: int, c0: int, h: int, w: int, fill=np.nan) -> np.ndarray:
    """arr[..., r0:r0+h, c0:c0+w] padded with `fill` where the box leaves the array."""
    out = np.full(arr.shape[:-2] + (h, w), fill, dtype=arr.dtype)
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + h, arr.shape[-2]), min(c0 + w, arr.shape[-1])
    out[..., rs - r0 : re_ - r0, cs - c0 : ce - c0] = arr[..., rs:re_, cs:ce]
    return out


def _same(a: np.ndarray, b: np.ndarray, ulps: int = 0) -> bool:
    """Equal with NaN == NaN, or within `ulps` float32 units in the last place."""
    if ulps == 0:
        return np.array_equal(a, b, equal_nan=True)
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    tol = ulps * np.spacing(np.maximum(np.abs(a[~nan]), np.abs(b[~nan])))
    return bool((np.abs(a[~nan] - b[~nan]) <= tol).all())


# (r0, c0, h, w) on the 600 x 480 sample grid: inside, over the top edge, over the right corner
SUB_BOXES = [(100, 150, 250, 300), (-30, 300, 200, 250), (380, 520, 150, 140)]


def test_windowed_read_equals_whole_file_read(sample_dir, monkeypatch):
    """read_scene(grid=block) reads only the window under the block (+ margin), and gives
    the bands and mask of reading the whole files onto the same grid: bit-identical for S2
    (10 m slices, 20 m -> 10 m bilinear); Landsat 30 m -> 10 m within 1 float32 ulp (GDAL
    computes the 1/3-pixel bilinear weights relative to the source array origin)."""
    paths = find_scenes(sample_dir / "scenes")
    picks = [next(p for p in paths if p.name.startswith(k)) for k in ("S2", "LC09")]
    real_read = _read_band
    windows: list = []

    def spy(src, index, path, window=None, out_shape=None):
        windows.append((src.width, src.height, window))
        return real_read(src, index, path, window=window, out_shape=out_shape)

    for p, ulps in zip(picks, (0, 1), strict=True):
        full_grid = scene_grid(p)
        for box in SUB_BOXES:
            grid = _sub_grid(full_grid, *box)
            monkeypatch.setattr(grid_mod, "_read_band", spy)
            windows.clear()
            win = read_scene(p, grid=grid)
            for width, height, w in windows:  # a window of about the block, not the file
                ratio = width / full_grid.width  # 1 (10 m), 1/2 (20 m), 1/3 (30 m)
                assert w is not None and w.width <= box[3] * ratio + 2 * 3 + 2
                assert w.height <= box[2] * ratio + 2 * 3 + 2
                assert w.width < width or w.height < height
            # the whole-file path: every band read in full and resampled from its own grid
            monkeypatch.setattr(grid_mod, "_read_band", real_read)
            monkeypatch.setattr(
                grid_mod, "_source_window", lambda src, g: Window(0, 0, src.width, src.height)
            )
            whole = read_scene(p, grid=grid)
            monkeypatch.undo()
            assert win.grid == grid == whole.grid
            assert np.array_equal(win.valid, whole.valid)
            assert _same(win.reflectance, whole.reflectance, ulps), (p.name, box)
            changed = ~((win.reflectance == whole.reflectance) | ~win.valid)
            assert changed.mean() < 1e-3  # the rare rounding case, not a shifted kernel


def test_windowed_read_and_stack_equal_the_cropped_full_scene(sample_dir):
    """A block read + feature stack equals the crop of the full-scene read + stack: all 6
    bands and the mask (S2 bit-exact; Landsat 30 m -> 10 m within 1 float32 ulp, GDAL's
    bilinear weights depend on the output grid origin: the whole-file read onto the block
    grid shows the same ulps), and the 11 features (terrain ones where the terrain margin
    holds what matters: proximity where the nearest outline edge is < TERRAIN_MARGIN_M)."""
    dem, outl = sample_dir / "dem.tif", sample_dir / "outlines.gpkg"
    paths = find_scenes(sample_dir / "scenes")
    for p, ulps in [(next(q for q in paths if q.name.startswith(k)), u) for k, u in
                    (("S2", 0), ("LC09", 1))]:
        full = read_scene(p)
        assert scene_grid(p) == full.grid
        fstack = build_feature_stack(full, dem, outl)
        for box in SUB_BOXES:
            s = read_scene(p, grid=_sub_grid(full.grid, *box))
            assert np.array_equal(s.valid, _crop(full.valid, *box, fill=False))
            assert _same(s.reflectance, _crop(full.reflectance, *box), ulps), (p.name, box)
            if ulps == 0:  # 10 m bands are slices: exact whatever the sensor
                assert _same(s.reflectance[:4], _crop(full.reflectance[:4], *box))
            # with the whole scene's terrain context (margins, sun turned by the grid
            # convergence at the scene centre), as block-wise mapping builds blocks
            st = build_feature_stack(s, dem, outl, context=fstack.terrain)
            ref = _crop(fstack.features, *box)
            assert np.array_equal(st.valid, _crop(fstack.valid, *box, fill=False))
            assert _same(st.features[:6], ref[:6], ulps)
            for name in ("elevation", "slope", "shadow_mask", "hillshade"):
                i = FEATURE_NAMES.index(name)
                assert _same(st.features[i], ref[i]), name
            i = FEATURE_NAMES.index("proximity")
            near = np.abs(np.nan_to_num(ref[i], nan=np.inf)) < TERRAIN_MARGIN_M - 10
            assert near.mean() > 0.3 and _same(st.features[i][near], ref[i][near])
            # glacier index: same glaciers (by id) at every pixel; outlines only those touching
            ids = np.array([""] + list(st.outlines.rgi_id))[st.glacier_index]
            fids = np.array([""] + list(fstack.outlines.rgi_id))[_crop(fstack.glacier_index, *box,
                                                                       fill=0)]
            inside = _crop(np.ones(full.shape, bool), *box, fill=False)
            assert np.array_equal(ids[inside], fids[inside])
            assert set(st.outlines.rgi_id) <= set(fstack.outlines.rgi_id)
            assert list(st.outlines.rgi_id) == [r for r in fstack.outlines.rgi_id
                                                if r in set(st.outlines.rgi_id)]


def test_scene_grid_reads_no_pixels(tmp_path, monkeypatch):
    safe, _ = make_safe(tmp_path)
    folder, _ = make_landsat(tmp_path)
    stack = tmp_path / "stack_20220905.tif"
    _tif(stack, np.ones((6, 20, 30), np.float32), 20, nodata=None, x0=X0 + 5)
    monkeypatch.setattr(grid_mod, "_read_band", lambda *a, **k: pytest.fail("pixels read"))
    g = scene_grid(safe)
    assert (g.height, g.width, g.transform.a, g.transform.c) == (H10, W10, 10, X0)
    g = scene_grid(folder)  # 30 m bands -> the 10 m grid on the same extent
    assert (g.height, g.width, g.transform.a, g.transform.f) == (H10, W10 // 3 * 3, 10, Y0)
    g = scene_grid(stack)  # 20 m at x0 + 5 -> 10 m snapped to multiples of 10 m
    assert (g.transform.a, g.transform.c, g.width, g.height) == (10, X0, 61, 40)
    monkeypatch.undo()
    for p in (safe, folder, stack):
        assert scene_grid(p) == read_scene(p).grid
    with pytest.raises(InputError, match="not a recognised scene"):
        scene_grid(safe / "MTD_MSIL2A.xml")


def test_expand_scenes_paths_and_globs(tmp_path):
    """One contract for map-many and the run configuration: globs sorted, plain paths must
    exist, order of the patterns kept, duplicates dropped, one-line errors naming the pattern."""
    from glacierfacies.scenes.reader import expand_scenes

    for name in ("b.SAFE", "a.SAFE", "c.tif"):
        (tmp_path / name).mkdir() if name.endswith(".SAFE") else (tmp_path / name).touch()
    safe = [tmp_path / "a.SAFE", tmp_path / "b.SAFE"]
    assert expand_scenes(str(tmp_path / "*.SAFE")) == safe
    assert expand_scenes([str(tmp_path / "c.tif"), str(tmp_path / "*.SAFE"),
                          str(tmp_path / "a.SAFE")]) == [tmp_path / "c.tif", *safe]
    with pytest.raises(InputError, match=r"\*\.zip: no scene matches this pattern"):
        expand_scenes(str(tmp_path / "*.zip"))
    with pytest.raises(InputError, match="d.tif: scene not found"):
        expand_scenes([str(tmp_path / "c.tif"), str(tmp_path / "d.tif")])


def test_decimated_reads_for_previews(sample_dir, monkeypatch):
    """Under `decimated_reads()` a scene read onto a 4x coarser grid is read by strips of
    rows and subsampled (GDAL's decimated read where the file has overviews), never a whole
    band at full resolution; the preview differs little from the full-resolution read.
    Outside it, nothing changes."""
    from glacierfacies.scenes.grid import decimated_reads

    p = next(q for q in find_scenes(sample_dir / "scenes") if q.name.startswith("S2"))
    full = scene_grid(p)
    from rasterio.transform import Affine

    coarse = Grid(full.crs, full.transform @ Affine.scale(4, 4), full.height // 4,
                  full.width // 4)
    real_read = _read_band
    shapes: list = []

    def spy(src, index, path, window=None, out_shape=None):
        arr = real_read(src, index, path, window=window, out_shape=out_shape)
        shapes.append(arr.shape[-2:])  # rows, columns per band of one read
        return arr

    monkeypatch.setattr(grid_mod, "_read_band", spy)
    plain = read_scene(p, grid=coarse)
    assert max(h for h, w in shapes) == full.height  # the 10 m bands in full
    shapes.clear()
    with decimated_reads():
        preview = read_scene(p, grid=coarse)
    assert max(h for h, w in shapes) <= 260 < full.height  # strips of rows, subsampled
    assert preview.grid == coarse and preview.reflectance.shape == plain.reflectance.shape
    both = plain.valid & preview.valid
    assert both.mean() > 0.9
    diff = np.abs(preview.reflectance[:, both] - plain.reflectance[:, both])
    assert np.median(diff) < 0.02
    shapes.clear()
    again = read_scene(p, grid=coarse)  # the switch does not outlive the block
    assert np.array_equal(again.reflectance, plain.reflectance, equal_nan=True)


def test_decimated_reads_use_overviews(sample_dir, tmp_path):
    """A scene whose band files carry overviews is previewed through GDAL's decimated read
    (the overview level), close to the full-resolution read."""
    import shutil

    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    from glacierfacies.scenes.grid import decimated_reads

    src = next(q for q in find_scenes(sample_dir / "scenes") if q.name.startswith("S2"))
    p = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, p)
    tifs = [f for f in ([p] if p.is_file() else p.rglob("*")) if f.suffix.lower() in
            (".tif", ".jp2")]
    for f in tifs:
        with rasterio.open(f, "r+") as ds:
            ds.build_overviews([2, 4], Resampling.nearest)
    full = scene_grid(p)
    coarse = Grid(full.crs, full.transform @ Affine.scale(4, 4), full.height // 4,
                  full.width // 4)
    plain = read_scene(p, grid=coarse)
    with decimated_reads():
        preview = read_scene(p, grid=coarse)
    both = plain.valid & preview.valid
    assert both.mean() > 0.9
    assert np.median(np.abs(preview.reflectance[:, both] - plain.reflectance[:, both])) < 0.02
