"""`export-targets`: one row per glacier and balance year, round-tripping, units documented."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from glacierfacies.products.targets import TARGET_COLUMNS, build_targets, read_targets
from glacierfacies.products.wgms import read_wgms
from tests.products.test_linking import _rgi6, _rgi7
from tests.products.test_table import _products_table
from tests.products.test_wgms import write_fog

REPO = Path(__file__).resolve().parents[2]


def _cli(monkeypatch, *args):
    from glacierfacies.cli import main

    monkeypatch.setattr(sys, "argv", ["glacierfacies", *map(str, args)])
    main()


def test_export_targets_round_trips_and_says_which_line(tmp_path, monkeypatch, capsys):
    table, fog = _products_table()
    table["aar_unc"] = 0.03
    table.to_csv(tmp_path / "products.csv", index=False)
    write_fog(tmp_path / "fog", fog)
    out = tmp_path / "targets.csv"
    _cli(monkeypatch, "export-targets", tmp_path / "products.csv", "-o", out, "--wgms",
         tmp_path / "fog", "--hemisphere", "north")
    assert "25 glacier-years of 3 glaciers" in capsys.readouterr().out
    back = read_targets(out)
    assert list(back.columns) == list(TARGET_COLUMNS)
    # reading the CSV back gives the same numbers (and types) that were built
    built, summary = build_targets(
        table.assign(date=pd.to_datetime(table["date"])), read_wgms(tmp_path / "fog"),
        hemisphere="north")
    pd.testing.assert_frame_equal(back, built, check_exact=True)
    assert len(back) == 25 and not back.duplicated(["glacier", "balance_year"]).any()
    assert (back["date"].str[5:] == "09-01").all()  # the well-observed end-of-season scene
    model = back.groupby("glacier")["balance_model"].first().to_dict()
    assert model == {"Alpha": "glacier", "Beta": "glacier", "Gamma": "global"}  # 5 years
    a = back[back.glacier == "Alpha"]
    # Alpha's own line is exact (balance = -1.4 + 2.4 AAR): prediction = record
    assert np.allclose(a["balance_mwe"], a["record_balance_mwe"], atol=1e-3)
    assert np.allclose(a["balance_slope_mwe"], 2.4, atol=1e-3)
    assert (back["balance_lo_mwe"] < back["balance_mwe"]).all()
    assert (back["balance_hi_mwe"] > back["balance_mwe"]).all()
    # the interval carries the AAR uncertainty through the slope
    assert np.allclose(a["balance_unc_mwe"], np.hypot(a["balance_rmse_mwe"], 2.4 * 0.03),
                       atol=1e-3)
    assert back["wgms_id"].tolist()[:3] == ["1", "1", "1"]
    side = json.loads(out.with_name("targets.csv.json").read_text())
    assert set(side["columns"]) == set(TARGET_COLUMNS)
    assert side["columns"]["balance_mwe"]["unit"] == "m w.e. a-1"
    assert summary["n_glacier_lines"] == 2
    # without records: the observations only, balance_model "none"
    _cli(monkeypatch, "export-targets", tmp_path / "products.csv", "-o", tmp_path / "t2.csv",
         "--hemisphere", "north")
    t2 = read_targets(tmp_path / "t2.csv")
    assert (t2["balance_model"] == "none").all() and t2["balance_mwe"].isna().all()
    assert np.allclose(t2["aar"], back["aar"])


def test_export_targets_links_rgi7_outlines_to_wgms(tmp_path, monkeypatch):
    """Products on RGI 7 outlines (no RGI 6 id) reach WGMS records through --rgi6."""
    seven = _rgi7().iloc[:2]
    rows, fog = [], {}
    rng = np.random.default_rng(0)
    for i, (rid, geom) in enumerate(zip(seven["rgi_id"], seven.geometry, strict=True)):
        recs = []
        for year in range(2010, 2020):
            aar = float(rng.uniform(0.2, 0.7))
            rows.append({"rgi_id": rid, "glims_id": seven["glims_id"].iloc[i],
                         "scene_id": f"S{year}", "date": f"{year}-09-05", "aar": aar,
                         "observed_fraction": 1.0, "geometry": geom})
            recs.append((year, 100 * aar, round(1000 * (-1.5 + 2.5 * aar), 1)))
        fog[10 * (i + 1)] = (f"GL{i}", f"RGI60-11.0000{i + 1}", recs)
    gpd.GeoDataFrame(rows, crs=seven.crs).rename(columns={"rgi_id": "glacier"}).to_file(
        tmp_path / "products.gpkg", layer="products")
    _rgi6().to_file(tmp_path / "rgi6.gpkg")
    write_fog(tmp_path / "fog", fog)
    out = tmp_path / "targets.csv"
    _cli(monkeypatch, "export-targets", tmp_path / "products.gpkg", "-o", out, "--wgms",
         tmp_path / "fog", "--rgi6", tmp_path / "rgi6.gpkg")
    t = read_targets(out)
    first = t.groupby("glacier").first()
    assert first["rgi7_id"].tolist() == list(seven["rgi_id"])
    assert first["rgi6_id"].tolist() == ["RGI60-11.00001", "RGI60-11.00002"]
    assert first["rgi6_link"].tolist() == ["glims", "overlap"]
    assert first["wgms_id"].tolist() == ["10", "20"]
    assert first["hemisphere"].tolist() == ["north", "north"]  # from the outlines
    assert t["record_balance_mwe"].notna().all() and (t["balance_model"] == "glacier").all()
    # massbalance links the same way
    _cli(monkeypatch, "massbalance", tmp_path / "products.gpkg", "--wgms", tmp_path / "fog",
         "--rgi6", tmp_path / "rgi6.gpkg", "-o", tmp_path / "mb", "--bootstrap", "0")
    stats = json.loads((tmp_path / "mb" / "stats.json").read_text())
    assert stats["n_glacier_years"] == 20


def test_every_target_column_has_a_unit_in_the_docs():
    doc = (REPO / "docs" / "massbalance.md").read_text()
    section = doc[doc.index("## Targets for glacier models"):]
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]*) \|", section, flags=re.M))
    missing = [c for c in TARGET_COLUMNS if c not in rows]
    assert not missing, f"columns without a row in docs/massbalance.md: {missing}"
    for col, (unit, _) in TARGET_COLUMNS.items():
        assert rows[col].strip() == (unit or "text"), col
