"""`export-targets --format pygem`: PyGEM's snowline_1d files (header, types, parsing) and the
facies + confidence stack."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glacierfacies.products.pygem import PYGEM_COLUMNS, pygem_file_name
from tests.products.test_table import _products_table
from tests.products.test_targets import REPO, _cli

#: The header of PyGEM's example file plus the ref_dem column its current reader requires
#: (pygem/shop/meltextent_and_snowline_1d.py, validate_snowline_1d_structure).
PYGEM_HEADER = "date,z,z_min,z_max,direction,ref_dem,ref_dem_year"


def pygem_validate(data: pd.DataFrame) -> None:
    """The checks of PyGEM's `validate_snowline_1d_structure`, on a frame `pd.read_csv` made."""
    for col in ["date", "z", "z_min", "z_max", "direction", "ref_dem", "ref_dem_year"]:
        assert col in data.columns, col
    dates = data["date"]
    assert isinstance(dates, pd.Series) and len(dates) > 0
    for d in dates:
        datetime.datetime.strptime(d, "%Y-%m-%d")
    for col in ("z", "z_min", "z_max"):
        assert len(data[col]) == len(dates)
        assert all(isinstance(x, int | float) for x in data[col]), col
    assert all(isinstance(x, str) for x in data["direction"])
    assert all(isinstance(x, str) for x in data["ref_dem"].dropna().unique())
    assert all(isinstance(x, int | np.integer) for x in data["ref_dem_year"].dropna().unique())
    # and its snowline_csv_to_dict
    assert isinstance(data["ref_dem_year"].astype(int).tolist()[0], int)
    data["z"].astype(float).tolist()


def test_pygem_files_parse_as_pygem_reads_them(tmp_path, monkeypatch, capsys):
    table, _ = _products_table()
    table["snowline_unc_m"] = 12.4
    table.loc[table.index[::7], "snowline_unc_m"] = np.nan
    table["rgi_id"] = table["glacier"].map({"Alpha": "RGI60-11.01450", "Beta": "RGI60-11.00897",
                                            "Gamma": ""})
    table.to_csv(tmp_path / "products.csv", index=False)
    (tmp_path / "products.csv.json").write_text(json.dumps(
        {"config": {}, "sources": {"dem": "/data/swissALTI3D_2019.tif", "maps": []}}))
    out = tmp_path / "pygem"
    with pytest.raises(SystemExit):
        _cli(monkeypatch, "export-targets", tmp_path / "products.csv", "-o", out,
             "--format", "pygem")
    assert "needs --ref-dem-year" in capsys.readouterr().err
    _cli(monkeypatch, "export-targets", tmp_path / "products.csv", "-o", out, "--format",
         "pygem", "--ref-dem-year", "2019")
    assert "3 PyGEM snowline files" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*.csv"))
    assert names == ["11.00897_snowline_elev.csv", "11.01450_snowline_elev.csv",
                     "Gamma_snowline_elev.csv"]
    text = (out / "11.01450_snowline_elev.csv").read_text()
    assert text.splitlines()[0] == PYGEM_HEADER
    first = text.splitlines()[1].split(",")
    assert first[0] == "2010-07-10" and first[4:] == ["descending", "swissALTI3D_2019.tif",
                                                       "2019"]
    assert first[1].endswith(".0") and "." in first[2]  # floats with one decimal, as PyGEM's
    back = pd.read_csv(out / "11.01450_snowline_elev.csv")
    pygem_validate(back)
    alpha = table[(table.glacier == "Alpha") & (table.observed_fraction >= 0.8)]
    assert len(back) == len(alpha) == 20  # the cloudy 50%-observed scenes are left out
    assert np.allclose(back["z"], np.round(alpha["snowline_m"]))
    unc = alpha["snowline_unc_m"].fillna(0).to_numpy()
    assert np.allclose(back["z_max"] - back["z"], np.round(back["z"] + unc) - back["z"])
    assert (back["z_min"] <= back["z"]).all() and (back["z"] <= back["z_max"]).all()
    assert list(back["date"]) == sorted(back["date"])


def test_pygem_file_names():
    assert pygem_file_name("G1", "RGI60-01.00570") == "01.00570_snowline_elev.csv"
    assert pygem_file_name("G1", None) == "G1_snowline_elev.csv"
    assert pygem_file_name("a/b", "nan") == "a_b_snowline_elev.csv"
    assert pygem_file_name("RGI60-11.90002") == "11.90002_snowline_elev.csv"


def test_every_pygem_column_is_documented():
    doc = (REPO / "docs" / "massbalance.md").read_text()
    assert ",".join(PYGEM_COLUMNS) == PYGEM_HEADER
    for col in PYGEM_COLUMNS:
        assert f"`{col}`" in doc, col


def test_facies_stack_is_eight_probabilities_and_confidence(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from glacierfacies.mapping.facies_stack import STACK_BANDS, write_facies_stack

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), size=(300, 200)).transpose(2, 0, 1).astype(np.float32)
    p[:, :10] = np.nan
    prof = dict(driver="GTiff", height=300, width=200, count=8, dtype="float32",
                crs="EPSG:32632", transform=from_origin(6e5, 5.2e6, 10, 10), nodata=np.nan)
    with rasterio.open(tmp_path / "x_probabilities.tif", "w", **prof) as dst:
        dst.write(p)
    conf = np.where(np.isnan(p[0]), 255, np.round(100 * p.max(axis=0))).astype(np.uint8)
    with rasterio.open(tmp_path / "x_confidence.tif", "w",
                       **{**prof, "count": 1, "dtype": "uint8", "nodata": 255}) as dst:
        dst.write(conf, 1)
    out = write_facies_stack(tmp_path / "x_probabilities.tif", tmp_path / "s.tif",
                             confidence=tmp_path / "x_confidence.tif")
    with rasterio.open(out) as src:
        assert src.count == 9 and src.descriptions == STACK_BANDS
        assert src.profile["tiled"] and src.dtypes[0] == "float32"
        s = src.read()
    np.testing.assert_array_equal(s[:8], p)
    ok = np.isfinite(p[0])
    np.testing.assert_allclose(s[8][ok], conf[ok] / 100.0, atol=1e-6)
    assert np.isnan(s[8][~ok]).all()
    # without a confidence file: the largest probability
    out2 = write_facies_stack(tmp_path / "x_probabilities.tif", tmp_path / "s2.tif")
    with rasterio.open(out2) as src:
        np.testing.assert_allclose(src.read(9)[ok], p.max(axis=0)[ok])
    assert Path(out2).is_file()
