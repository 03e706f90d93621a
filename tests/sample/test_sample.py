"""The built-in sample: deterministic, well-formed, and physically sensible where it matters."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio

from glacierfacies import sample, terrain
from glacierfacies.classes import CLASS_NAMES, class_index
from glacierfacies.errors import InputError

CRS = "EPSG:32632"


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _scenes(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "scenes").iterdir() if p.is_dir())


def _scene_id(p: Path) -> str:
    return p.name.removesuffix(".SAFE")


def _s2_band(safe: Path, band: str) -> Path:
    return next(safe.glob(f"GRANULE/*/IMG_DATA/R*m/*_{band}_*m.tif"))


def _sun(scene: Path) -> tuple[float, float]:
    """(azimuth, elevation) read from the product metadata, as a product reader would."""
    if scene.suffix == ".SAFE":
        root = ET.parse(next(scene.glob("GRANULE/*/MTD_TL.xml"))).getroot()
        angle = root.find(".//Mean_Sun_Angle")
        return float(angle.find("AZIMUTH_ANGLE").text), 90 - float(angle.find("ZENITH_ANGLE").text)
    mtl = next(scene.glob("*_MTL.txt")).read_text()
    az = float(re.search(r"SUN_AZIMUTH = ([-\d.]+)", mtl).group(1))
    el = float(re.search(r"SUN_ELEVATION = ([-\d.]+)", mtl).group(1))
    return az, el


def _reflectance(scene: Path) -> tuple[np.ndarray, int]:
    """(6, h, w) reflectance of a scene at its native band grids resampled by repetition to
    the coarsest factor, plus that factor relative to 10 m (1 for S2 10 m bands, 3 Landsat)."""
    if scene.suffix == ".SAFE":
        out = []
        for band in sample.S2_BANDS:
            dn = rasterio.open(_s2_band(scene, band)).read(1)
            r = sample.decode_s2(dn)
            if sample.S2_BAND_RES[band] == 20:
                r = np.repeat(np.repeat(r, 2, 0), 2, 1)
            out.append(r)
        return np.stack(out), 1
    out = [sample.decode_landsat(rasterio.open(next(scene.glob(f"*_{b}.TIF"))).read(1))
           for b in sample.LANDSAT_BANDS]
    return np.stack(out), 3


@pytest.fixture(scope="module")
def labels(sample_dir) -> gpd.GeoDataFrame:
    gdf = gpd.read_file(sample_dir / "labels.gpkg")
    flipped = pd.read_csv(sample_dir / "flipped_labels.csv")
    true = dict(zip(flipped.point_id, flipped.true_class, strict=True))
    gdf["true_class"] = [true.get(pid, c) for pid, c in zip(gdf.point_id, gdf["class"], strict=True)]
    with rasterio.open(sample_dir / "dem.tif") as src:
        rows, cols = rasterio.transform.rowcol(src.transform, gdf.geometry.x, gdf.geometry.y)
    gdf["row"], gdf["col"] = np.asarray(rows), np.asarray(cols)
    return gdf


def test_same_seed_byte_identical_other_seed_differs(sample_dir, tmp_path):
    t0 = time.perf_counter()
    sample.write_sample(tmp_path / "again", seed=0)
    elapsed = time.perf_counter() - t0
    print(f"sample generation took {elapsed:.1f} s")
    assert elapsed < 20
    first, again = _hashes(sample_dir), _hashes(tmp_path / "again")
    assert len(first) > 50 and first == again
    sample.write_sample(tmp_path / "other", seed=1)
    other = _hashes(tmp_path / "other")
    assert other["dem.tif"] != first["dem.tif"] and other["labels.gpkg"] != first["labels.gpkg"]
    size = sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file())
    assert 2e6 < size < 15e6


def test_files_open_with_crs_on_nested_grids(sample_dir):
    with rasterio.open(sample_dir / "dem.tif") as dem:
        assert dem.crs.to_string() == CRS and dem.res == (10, 10) and dem.nodata == -9999
        z = dem.read(1)
        origin, bounds = (dem.transform.c, dem.transform.f), dem.bounds
    assert 2100 < z.min() and z.max() < 3900 and z.dtype == np.float32
    rasters = list(sample_dir.rglob("*.tif")) + list(sample_dir.rglob("*.TIF"))
    assert len(rasters) == 1 + 4 * 6 + 2 * 6 + 12
    for path in rasters:
        with rasterio.open(path) as src:
            assert src.crs.to_string() == CRS, path
            assert (src.transform.c, src.transform.f) == origin and src.bounds == bounds, path
            assert src.res[0] in (10, 20, 30)
            if "scenes" in path.parts:
                assert src.dtypes[0] == "uint16" and src.nodata == 0
    outlines = gpd.read_file(sample_dir / "outlines.gpkg")
    assert outlines.crs.to_string() == CRS and len(outlines) >= 7
    assert set(outlines.region) == {"Alps-West", "Alps-East"}
    assert outlines.rgi_id.is_unique and outlines.geom_type.eq("Polygon").all()
    assert {"rgi_id", "name", "region", "wgms_id"} <= set(outlines.columns)
    assert len(_scenes(sample_dir)) == 6


def test_product_metadata_as_in_real_products(sample_dir):
    safe = next(p for p in _scenes(sample_dir) if p.suffix == ".SAFE")
    root = ET.parse(safe / "MTD_MSIL2A.xml").getroot()
    assert root.find(".//PRODUCT_START_TIME").text.startswith("20")
    assert root.find(".//PROCESSING_BASELINE").text == "05.09"
    assert root.find(".//BOA_QUANTIFICATION_VALUE").text == "10000"
    offsets = {e.get("band_id"): int(e.text) for e in root.iter("BOA_ADD_OFFSET")}
    assert offsets["1"] == -1000 and len(offsets) == 13
    assert sorted(p.name.split("_")[2] for p in safe.glob("GRANULE/*/IMG_DATA/R10m/*")) == [
        "B02", "B03", "B04", "B08"]
    assert sorted(p.name.split("_")[2] for p in safe.glob("GRANULE/*/IMG_DATA/R20m/*")) == [
        "B11", "B12"]
    az, el = _sun(safe)
    assert 140 < az < 180 and 35 < el < 70
    landsat = next(p for p in _scenes(sample_dir) if p.name.startswith("LC09"))
    mtl = next(landsat.glob("*_MTL.txt")).read_text()
    for key in ("SUN_AZIMUTH", "SUN_ELEVATION", "DATE_ACQUIRED", "SCENE_CENTER_TIME",
                "REFLECTANCE_MULT_BAND_4 = 2.75e-05", "REFLECTANCE_ADD_BAND_4 = -0.2",
                'SPACECRAFT_ID = "LANDSAT_9"'):
        assert key in mtl


def test_every_class_has_labels_away_from_the_edge(labels):
    assert labels.crs.to_string() == CRS
    assert {"point_id", "class", "glacier", "scene_id", "date", "sensor", "region"} <= set(
        labels.columns)
    counts = labels["class"].value_counts()
    assert all(counts.get(c, 0) >= 50 for c in CLASS_NAMES), counts.to_dict()
    assert 3000 <= len(labels) <= 4500 and labels.point_id.is_unique
    assert (labels.sensor != "sentinel2").sum() >= 300
    edge = sample.LABEL_EDGE_PX
    assert labels.row.between(edge, sample.HEIGHT - edge - 1).all()
    assert labels.col.between(edge, sample.WIDTH - edge - 1).all()


def test_flipped_record_matches_labels_and_truth(sample_dir, labels):
    flipped = pd.read_csv(sample_dir / "flipped_labels.csv")
    merged = flipped.merge(labels[["point_id", "class"]], on="point_id")
    assert len(merged) == len(flipped)
    assert (merged["class"] == merged.given_class).all()
    assert (merged.given_class != merged.true_class).all()
    assert 0.07 <= len(flipped) / len(labels) <= 0.13
    facies = merged.true_class.isin(["ice", "snow", "firn", "debris", "refrozen-like"])
    assert facies.mean() > 0.7  # flips are mostly among facies
    # the true class of every label (given or corrected) is what the truth map says there
    for scene_id, group in labels.groupby("scene_id"):
        truth = rasterio.open(sample_dir / "truth" / f"class_{scene_id}.tif").read(1)
        codes = truth[group.row, group.col]
        assert (codes == group.true_class.map(class_index).to_numpy()).all(), scene_id


def test_snow_lies_higher_than_ice(sample_dir, labels):
    z = rasterio.open(sample_dir / "dem.tif").read(1)
    elev = z[labels.row, labels.col]
    snow = elev[labels.true_class == "snow"].mean()
    ice = elev[labels.true_class == "ice"].mean()
    assert snow - ice > 200
    end = labels.date.str[5:7].to_numpy() == "09"  # end of the ablation season: firn exposed
    z_end = {c: elev[end & (labels.true_class == c).to_numpy()].mean() for c in ("snow", "firn", "ice")}
    assert z_end["snow"] > z_end["firn"] > z_end["ice"], z_end


def test_shadow_labels_lie_in_cast_shadow(sample_dir, labels):
    z = rasterio.open(sample_dir / "dem.tif").read(1)
    for scene in _scenes(sample_dir):
        group = labels[(labels.scene_id == _scene_id(scene)) & (labels.true_class == "shadow")]
        if group.empty:
            continue
        az, el = _sun(scene)
        shadow = terrain.cast_shadow(z, 10.0, az, el)
        assert shadow[group.row, group.col].all(), scene.name
        others = labels[(labels.scene_id == _scene_id(scene))
                        & labels.true_class.isin(["ice", "snow", "firn"])]
        assert not shadow[others.row, others.col].any()


def test_reflectance_in_documented_ranges(sample_dir, labels):
    medians: dict[str, list[np.ndarray]] = {c: [] for c in CLASS_NAMES}
    for scene in _scenes(sample_dir):
        refl, k = _reflectance(scene)
        group = labels[labels.scene_id == _scene_id(scene)]
        values = refl[:, group.row // k, group.col // k]  # (6, n)
        for name in CLASS_NAMES:
            sel = (group.true_class == name).to_numpy()
            if sel.sum() < 10:
                continue
            lo, hi = sample.reflectance_range(name)
            inside = (values[:, sel] >= lo[:, None]) & (values[:, sel] <= hi[:, None])
            assert inside.mean(axis=1).min() >= 0.9, (scene.name, name, inside.mean(axis=1))
            medians[name].append(np.median(values[:, sel], axis=1))
    med = {c: np.mean(v, axis=0) for c, v in medians.items()}
    blue, nir, swir1 = 0, 3, 4
    assert med["snow"][blue] > med["firn"][blue] > med["ice"][blue] > med["debris"][blue]
    assert med["cloud"][swir1] > 0.25 > med["snow"][swir1]  # cloud bright in SWIR, snow not
    assert med["water"][nir] < 0.05 and med["shadow"][blue] < 0.25
    assert med["debris"][swir1] > med["debris"][blue]
    for name in ("snow", "ice", "debris", "water"):
        assert np.allclose(med[name], sample.SPECTRA[name], rtol=0.15, atol=0.02), name


def test_same_day_sensors_align(sample_dir):
    scenes = _scenes(sample_dir)
    for landsat in (p for p in scenes if p.name.startswith("LC0")):
        date = landsat.name.split("_")[3]
        safe = next(p for p in scenes if p.suffix == ".SAFE" and f"_{date}T" in p.name)
        s2 = sample.decode_s2(rasterio.open(_s2_band(safe, "B04")).read(1))
        s2_30 = s2.reshape(s2.shape[0] // 3, 3, s2.shape[1] // 3, 3).mean(axis=(1, 3))
        l8 = sample.decode_landsat(rasterio.open(next(landsat.glob("*_SR_B4.TIF"))).read(1))
        ok = np.isfinite(l8) & np.isfinite(s2_30)
        assert ok.mean() > 0.9
        r = np.corrcoef(s2_30[ok], l8[ok])[0, 1]
        assert r > 0.85, r  # same ground on both grids (clouds moved between overpasses)


def test_aar_truth_and_wgms_tables_agree(sample_dir):
    aar = pd.read_csv(sample_dir / "truth" / "aar_truth.csv")
    assert set(aar.scene_id) == {_scene_id(p) for p in _scenes(sample_dir)}
    assert aar.aar.between(0, 1).all() and (aar.aar_with_refrozen >= aar.aar - 1e-9).all()
    # snow-only definitions: at the end of these negative years firn lies exposed 60-150 m
    # below the snowline; early in the summer fresh snow covers it (firn line = snowline)
    end_rows = aar[aar.end_of_season]
    gap = end_rows.snowline_m - end_rows.firnline_m
    assert gap.between(59.99, 150.01).all() and (end_rows.aar_snow_firn > end_rows.aar).all()
    early_rows = aar[~aar.end_of_season]
    assert (early_rows.firnline_m == early_rows.snowline_m).all()
    assert aar.observed_fraction.between(0.3, 1).all() and (aar.observed_fraction < 1).any()
    early = aar[~aar.end_of_season].groupby("glacier").aar_full.mean()
    end = aar[aar.end_of_season].groupby("glacier").aar_full.mean()
    assert (early > end).all()  # the snowline rises through the summer
    overview = pd.read_csv(sample_dir / "wgms" / "WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv",
                           encoding="latin-1")
    assert list(overview.columns[:4]) == ["POLITICAL_UNIT", "NAME", "WGMS_ID", "Year"]
    outlines = gpd.read_file(sample_dir / "outlines.gpkg")
    ids = dict(zip(outlines.rgi_id, outlines.wgms_id, strict=True))
    ends = aar[aar.end_of_season & (aar.sensor == "sentinel2")]
    for row in ends.itertuples():
        year = int(row.date[:4])
        wg = overview[(overview.WGMS_ID == ids[row.glacier]) & (overview.Year == year)]
        assert abs(wg.AAR.iloc[0] / 100 - row.aar_full) < 1e-6  # snow only
        assert abs(wg.ELA.iloc[0] - row.snowline_m) <= 0.5  # the snowline, not the firn line
    mb = pd.concat(pd.read_csv(p) for p in (sample_dir / "wgms" / "mbdata").glob("*.csv"))
    assert len(mb) == 20 * len(outlines) and set(mb.RGI_ID) == set(outlines.rgi_id)
    joined = mb.merge(overview, left_on=["WGMS_ID", "YEAR"], right_on=["WGMS_ID", "Year"])
    slope, _ = np.polyfit(joined.AAR / 100, joined.ANNUAL_BALANCE / 1000, 1)
    r = np.corrcoef(joined.AAR, joined.ANNUAL_BALANCE)[0, 1]
    assert 2.5 < slope < 3.5 and r > 0.85


def test_bad_input_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="seed"):
        sample.write_sample(tmp_path / "x", seed=-1)
    with pytest.raises(InputError, match="does not exist"):
        sample.write_sample(tmp_path / "missing" / "x", seed=0)
    (tmp_path / "taken").mkdir()
    with pytest.raises(InputError, match="overwrite"):
        sample.write_sample(tmp_path / "taken", seed=0)


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "from glacierfacies.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("case", ["missing_folder", "unwritable", "negative_seed", "exists"])
def test_cli_bad_input_one_line_error(tmp_path, case):
    out = tmp_path / "out"
    args = ["sample", str(out)]
    if case == "missing_folder":
        args = ["sample", str(tmp_path / "nope" / "out")]
    elif case == "unwritable":
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        if os.geteuid() == 0:  # root ignores permissions; /proc takes no new files at all
            locked = Path("/proc")
        args = ["sample", str(locked / "glacierfacies-sample-out")]
    elif case == "negative_seed":
        args += ["--seed", "-3"]
    elif case == "exists":
        out.mkdir()
    result = _cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
