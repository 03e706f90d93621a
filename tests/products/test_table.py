"""Products from facies-map GeoTIFFs, and the products/massbalance commands end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from glacierfacies.classes import NODATA_CLASS, class_index
from glacierfacies.products import massbalance as mb
from glacierfacies.products.table import compute_products, read_products

SNOW, FIRN, ICE, CLOUD = (class_index(n) for n in ("snow", "firn", "ice", "cloud"))
CRS = "EPSG:32632"
X0, Y0, RES = 600000.0, 5200000.0, 10.0
H, W = 100, 120


def _write(path: Path, array: np.ndarray, nodata, transform=None, tags=None) -> Path:
    profile = dict(driver="GTiff", height=array.shape[0], width=array.shape[1], count=1,
                   dtype=array.dtype, crs=CRS, transform=transform or from_origin(X0, Y0, RES,
                                                                                  RES),
                   nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
        if tags:
            dst.update_tags(**tags)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A DEM falling north to south (3400 -> 2410 m), two box glaciers, one map with cloud."""
    d = tmp_path_factory.mktemp("products")
    rows = np.arange(H)[:, None] * np.ones((1, W))
    dem = (3400.0 - 10.0 * rows).astype(np.float32)  # 10 m per row
    # DEM on a coarser 20 m grid to exercise resampling
    dem20 = (3400.0 - 5.0 - 20.0 * np.arange(H // 2)[:, None] * np.ones((1, W // 2))).astype(
        np.float32)
    _write(d / "dem.tif", dem20, -9999.0, from_origin(X0, Y0, 20.0, 20.0))
    # glacier A: cols 10..49, rows 0..99 ; glacier B: cols 70..109, rows 20..79 (+ 20 rows
    # south of the map, outside it: unobserved)
    a = box(X0 + 100, Y0 - 1000, X0 + 500, Y0)
    b = box(X0 + 700, Y0 - 1000 - 200, X0 + 1100, Y0 - 200)
    gpd.GeoDataFrame({"name": ["Alpha", "Beta"], "rgi_id": ["RGI60-11.00001", "RGI60-11.00002"],
                      "wgms_id": [1, 2]}, geometry=[a, b], crs=CRS).to_file(d / "outlines.gpkg")
    cmap = np.full((H, W), NODATA_CLASS, np.uint8)
    cmap[:, :] = ICE
    cmap[dem >= 3000] = SNOW  # snowline 3000 m: rows 0..40 (41 rows) are snow
    cmap[(dem >= 2950) & (dem < 3000)] = FIRN  # and firn rows 41..45 -> accumulation
    cmap[60:70, 70:90] = CLOUD
    name = "S2B_MSIL2A_20210828T103629_N0301_R108_T32TPS_20210828T130000_facies.tif"
    _write(d / name, cmap, NODATA_CLASS, tags={
        "SCENE_ID": "S2B_MSIL2A_20210828T103629", "SENSOR": "S2B",
        "ACQUIRED": "2021-08-28 10:36:29+00:00"})
    conf = np.full((H, W), 90, np.uint8)
    conf[:, 60:] = 70
    _write(d / name.replace("facies", "confidence"), conf, 255, tags={"LAYER": "confidence"})
    return {"dir": d, "map": d / name, "dem": d / "dem.tif", "outlines": d / "outlines.gpkg",
            "dem_array": dem}


def test_products_from_geotiff(world):
    with pytest.warns(UserWarning, match="glacier RGI60-11.00002: 80.0% of its outline"):
        t = compute_products([world["map"]], world["outlines"], world["dem"],
                             mb.ProductConfig(outline_withhold_below=0.5))
    assert list(t["glacier"]) == ["RGI60-11.00001", "RGI60-11.00002"]  # rgi_id before name
    assert list(t["name"]) == ["Alpha", "Beta"] and list(t["wgms_id"]) == [1, 2]
    a, b = t.iloc[0], t.iloc[1]
    assert a.scene_id == "S2B_MSIL2A_20210828T103629" and a.date == "2021-08-28"
    assert a.sensor == "S2B"
    # Alpha: 40 cols x 100 rows of 100 m2, fully observed, 41 snow rows and 5 firn rows
    assert a.glacier_area_km2 == pytest.approx(0.4)
    assert a.observed_fraction == pytest.approx(1.0)
    assert a.aar == pytest.approx(0.41)  # snow only: the exposed firn is ablation area
    assert a.aar_snow_firn == pytest.approx(0.46)
    assert a.area_km2_firn == pytest.approx(0.02)
    assert abs(a.snowline_m - 2995.0) <= 20.0  # line between rows 40 and 41 (3000 / 2990 m)
    assert abs(a.firnline_m - 2945.0) <= 20.0  # line between rows 45 and 46 (2950 / 2940 m)
    assert a.mean_confidence == pytest.approx(90.0)
    assert a.accumulation == "snow" and a.shadow_method == "snowline"
    assert a.uncertainty_method == "fallback:confidence-bound" and 0 < a.aar_unc < 0.2
    assert a.outline_in_scene == 1.0 and a.firn_mapped  # no MODEL_CLASSES tag: no claim
    # the box spans all 100 rows: its top and bottom rows (80 of 276 boundary pixels) lie on
    # the raster's edge, an outline cut to the image
    assert a.outline_edge_fraction == pytest.approx(80 / 276)
    assert a.product_flags == "outline_at_scene_edge;uncertainty_fallback"
    assert a.hemisphere == "north"
    # Beta: rows 20..119 of which 100..119 are outside the map, 20 x 10 pixels of cloud
    assert b.glacier_area_km2 == pytest.approx(0.4)
    observed = 40 * 80 - 200
    assert b.observed_fraction == pytest.approx(observed / 4000)
    assert b.aar == pytest.approx(40 * 21 / observed)  # rows 20..40 snow
    assert b.aar_snow_firn == pytest.approx(40 * 26 / observed)  # rows 20..45 snow + firn
    assert b.mean_confidence == pytest.approx((40 * 80 - 200 + 200) / (40 * 80) * 70, rel=1e-6)
    assert t.crs.to_epsg() == 32632 and t.geometry.iloc[0].area == pytest.approx(400000)
    # 80 of its 100 rows in the scene: flagged; kept above a threshold of 0.5, withheld under
    # the default 0.9
    assert b.outline_in_scene == pytest.approx(0.8)
    assert b.outline_edge_fraction == pytest.approx(40 / 236)  # its row 99 above the edge
    assert b.product_flags == "outline_in_scene<0.99;outline_at_scene_edge;uncertainty_fallback"
    with pytest.warns(UserWarning, match="withheld"):
        d = compute_products([world["map"]], world["outlines"], world["dem"]).iloc[1]
    assert d.outline_in_scene == pytest.approx(0.8) and "withheld:outline_in_scene<0.9" in d.product_flags
    assert all(np.isnan(d[c]) for c in ("aar", "aar_unc", "aar_snow_firn", "snowline_m",
                                        "snowline_unc_m", "firnline_m", "firnline_unc_m"))
    assert d.glacier_area_km2 == pytest.approx(0.4) and d.observed_fraction == b.observed_fraction


def test_write_products_and_cli(world, tmp_path, monkeypatch, capsys):
    from glacierfacies.cli import main

    out = tmp_path / "p.gpkg"
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "products", str(world["map"]),
                                      "--outlines", str(world["outlines"]), "--dem",
                                      str(world["dem"]), "-o", str(out)])
    main()
    assert "2 glacier-scene rows" in capsys.readouterr().out
    back = read_products(out)
    assert back["aar"].round(4).tolist()[0] == 0.41
    assert back["hemisphere"].tolist() == ["north", "north"]
    assert json.loads(out.with_name("p.gpkg.json").read_text())["config"]["shadow"] == "snowline"
    csv = tmp_path / "p.csv"
    # no silent switch: the default --shadow snowline needs --dem
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "products", str(world["map"]),
                                      "--outlines", str(world["outlines"]), "-o", str(csv)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "--shadow snowline needs --dem" in err and not csv.exists()
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "products", str(world["map"]),
                                      "--outlines", str(world["outlines"]), "-o", str(csv),
                                      "--shadow", "exclude", "--date", "2021-09-01",
                                      "--accumulation", "snow+firn"])
    main()
    t = pd.read_csv(csv)
    assert t["date"].tolist() == ["2021-09-01"] * 2 and t["snowline_m"].isna().all()
    assert t["shadow_method"].tolist() == ["exclude"] * 2
    assert t["accumulation"].tolist() == ["snow+firn"] * 2
    assert t["aar"].round(4).tolist()[0] == 0.46
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "products", str(tmp_path / "nope.tif"),
                                      "--outlines", str(world["outlines"]), "-o", str(csv),
                                      "--dem", str(world["dem"]), "--overwrite"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1 and "nope.tif: facies map not found" in capsys.readouterr().err


def _products_table(n_years=10, short_years=5, seed=0) -> tuple[pd.DataFrame, dict]:
    """3 scenes per glacier-year; the end-of-season one has the lowest AAR (well observed)."""
    rng = np.random.default_rng(seed)
    rows, fog = [], {}
    for gi, (name, wid, years) in enumerate([("Alpha", 1, n_years), ("Beta", 2, n_years),
                                             ("Gamma", 3, short_years)]):
        recs = []
        for year in range(2010, 2010 + years):
            aar_min = rng.uniform(0.2, 0.8)
            for date, aar, obs in ((f"{year}-07-10", aar_min + 0.3, 1.0),
                                   (f"{year}-09-01", aar_min, 0.95),
                                   (f"{year}-09-20", aar_min - 0.15, 0.5)):  # cloudy
                rows.append({"glacier": name, "wgms_id": wid, "scene_id": f"S_{date}",
                             "date": date, "aar": aar, "observed_fraction": obs,
                             "snowline_m": 3300 - 600 * aar})
            recs.append((year, 50.0, round(1000 * (-1.4 + 2.4 * aar_min + 0.1 * gi), 1)))
        fog[wid] = (name.upper(), f"RGI60-11.0000{wid}", recs)
    return pd.DataFrame(rows), fog


def test_massbalance_cli_end_to_end(tmp_path, monkeypatch, capsys):
    from glacierfacies.cli import main
    from tests.products.test_wgms import write_fog

    table, fog = _products_table()
    table.to_csv(tmp_path / "products.csv", index=False)
    write_fog(tmp_path / "fog", fog)
    out = tmp_path / "mb"
    # a CSV has no outlines to take the hemisphere from
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "massbalance", str(tmp_path /
                                      "products.csv"), "--wgms", str(tmp_path / "fog"), "-o",
                                      str(out)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1 and "pass --hemisphere" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "massbalance", str(tmp_path /
                                      "products.csv"), "--wgms", str(tmp_path / "fog"), "-o",
                                      str(out), "--hemisphere", "north", "--bootstrap", "200"])
    main()
    stats = json.loads((out / "stats.json").read_text())
    aar = stats["regressions"]["aar"]
    assert stats["end_of_season_rule"] == "robust" and stats["season_months"] == {
        "north": ["8,9,10"]}
    gl = aar["global_leave_one_glacier_out"]
    assert gl["n_bootstrap"] == 200 and gl["r_ci95"][0] <= gl["r"] <= gl["r_ci95"][1]
    assert stats["n_glacier_years"] == 25  # the end-of-season scene of every glacier-year
    assert aar["global_fit_in_sample"]["slope"] == pytest.approx(2.4, abs=0.1)
    assert aar["per_glacier_leave_one_year_out"]["r"] == pytest.approx(1.0, abs=1e-6)
    assert aar["per_glacier_leave_one_year_out"]["n"] == 20
    assert aar["skipped"] == [{"glacier": "Gamma", "n_years": 5, "reason": "5 years < 8"}]
    years = pd.read_csv(out / "glacier_years.csv")
    assert (years["date"].str[5:] == "09-01").all()  # not the cloudy, lower-AAR scene
    assert {p.name for p in out.glob("*.png")} >= {"scatter_aar_global.png",
                                                  "scatter_aar_glacier.png"}
    assert "skipped" in capsys.readouterr().out
    # no overlap: glaciers unknown to WGMS -> one-line error, exit 1, nothing written
    table.assign(glacier="Nowhere", wgms_id=99).to_csv(tmp_path / "other.csv", index=False)
    monkeypatch.setattr(sys, "argv", ["glacierfacies", "massbalance", str(tmp_path /
                                      "other.csv"), "--wgms", str(tmp_path / "fog"), "-o",
                                      str(tmp_path / "mb2"), "--hemisphere", "north"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "other.csv: no overlap" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mb2").exists()


def test_products_recover_sample_truth(sample_dir):
    """Products from the sample's TRUE class maps recover its true snow-only AAR and snow +
    firn AAR within 0.05 where at least 80% of the glacier is observed (and the observed
    fraction itself), and at the end of the season its own snowline and firn line (the
    generator's parameters) within 20 m."""
    maps = sorted((sample_dir / "truth").glob("class_*.tif"))
    assert maps
    t = compute_products(maps, sample_dir / "outlines.gpkg", sample_dir / "dem.tif")
    truth = pd.read_csv(sample_dir / "truth" / "aar_truth.csv")
    m = t.merge(truth, on=["glacier", "scene_id"], suffixes=("", "_true"))
    assert len(m) == len(truth) == len(t)
    assert (m["date"] == m["date_true"]).all()
    seen = m["observed_fraction_true"] >= 0.8
    assert seen.sum() >= len(m) // 2
    assert (m["aar"] - m["aar_true"])[seen].abs().max() < 0.05
    assert (m["aar_snow_firn"] - m["aar_snow_firn_true"])[seen].abs().max() < 0.05
    end = seen & m["end_of_season"]
    assert end.sum() >= 16
    assert (m["snowline_m"] - m["snowline_m_true"])[end].abs().max() < 20.0
    assert (m["firnline_m"] - m["firnline_m_true"])[end].abs().max() < 20.0
    assert (m["firnline_m"] < m["snowline_m"] - 40)[end].all()  # firn exposed below snow
    assert np.allclose(m["observed_fraction"], m["observed_fraction_true"], atol=0.01)
    assert np.allclose(m["glacier_area_km2"], m["glacier_area_km2_true"], rtol=0.01)
