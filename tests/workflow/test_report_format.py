"""The report reads well: numbers to sensible digits, series broken between seasons, a
sentence instead of an empty plot, lines and hypsometry figures drawn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from glacierfacies.workflow.figures import hypsometry_png, quicklook_png, season_segments
from glacierfacies.workflow.html import column_digits, table_html


def test_altitudes_to_1_m_and_areas_to_001_km2():
    assert column_digits("snowline_m") == column_digits("snowline ± (m)") == 0
    assert column_digits("area_km2_ice") == column_digits("area (km2)") == 2
    assert column_digits("RMSE (m w.e.)") == 2 and column_digits("aar") is None
    df = pd.DataFrame({"snowline (m)": [2871.4321, np.nan], "area (km2)": [1.23456, 0.5],
                       "AAR": [0.51234, 0.2]})
    text = table_html(df)
    assert ">2871<" in text and ">1.23<" in text and ">0.50<" in text and ">0.512<" in text
    assert "2871.4" not in text and text.startswith('<div class="tblwrap">')


def test_series_break_between_seasons():
    dates = pd.to_datetime(["2022-07-08", "2022-09-05", "2023-07-03", "2023-09-20"])
    x, y = season_segments(dates, [1, 2, 3, 4])
    assert len(x) == 5 and np.isnan(y[2]) and y[:2] == [1, 2] and y[3:] == [3, 4]
    x, y = season_segments(dates[:2], [1, 2])
    assert y == [1, 2]


def test_quicklook_lines_and_hypsometry(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:60]
    elevation = (3400 - 10.0 * yy).astype(np.float32)
    index = np.zeros((80, 60), np.int32)
    index[10:70, 15:45] = 1
    classes = np.where(index == 1, np.where(elevation > 3000, 1, 0), 255).astype(np.uint8)
    rgb = rng.random((3, 80, 60)).astype(np.float32)
    p = quicklook_png(rgb, classes, tmp_path / "q.png", "t", elevation=elevation,
                      glacier_index=index, lines=[(1, 3000.0, 3150.0)])
    assert p.stat().st_size > 1000
    h = hypsometry_png(np.where(index == 1, elevation, np.nan), classes, 1e-4,
                       tmp_path / "h.png", "G")
    assert h.stat().st_size > 1000


def test_an_empty_scatter_is_a_sentence(tmp_path):
    from glacierfacies.workflow.report import _scatter_figures

    mb = tmp_path / "mb"
    mb.mkdir()
    (mb / "stats.json").write_text(json.dumps({"regressions": {"aar": {
        "global_leave_one_glacier_out": {"n": 3, "r": 0.5, "rmse_mwe": 0.4},
        "per_glacier_leave_one_year_out": {"n": 0}}}}))
    pd.DataFrame({"annual_balance_mwe": [-1.0, 0.2, -0.5],
                  "pred_global_aar": [-0.8, 0.1, -0.4],
                  "pred_glacier_aar": [np.nan] * 3}).to_csv(mb / "glacier_years.csv", index=False)
    for name in ("scatter_aar_global.png", "scatter_aar_glacier.png"):
        (mb / name).write_bytes(b"png")
    figs, empty = _scatter_figures(mb, tmp_path)
    assert [f.path.name for f in figs] == ["scatter_aar_global.png"]
    assert len(empty) == 1 and empty[0].startswith("aar, per glacier")
