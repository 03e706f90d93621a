"""The report's "Real glacier" section (issue 13): the Athabasca clips mapped with the built-in
models from package data only, with products and the zone check; opened in headless
Chromium when one is installed (CI has none: skipped there)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from glacierfacies.workflow.html import render_html
from glacierfacies.workflow.real_example import real_section, stage_real_example

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    summary = stage_real_example(out)
    fig_dir = out / "figures"
    fig_dir.mkdir()
    section = real_section(out, summary, fig_dir)
    report = out / "report.html"
    report.write_text(render_html("real", "real glacier", [section]))
    return out, summary, section, report


def test_real_section_maps_products_and_figures(real_report):
    out, summary, section, report = real_report
    assert [s["model"] for s in summary["scenes"]] == ["builtin:landsat", "builtin:sentinel2"]
    for s in summary["scenes"]:
        assert s["zones"]["below 2300 m"]["share"] >= 0.85
        assert s["zones"]["above 2700 m"]["share"] >= 0.90
    prod = pd.read_csv(out / "real" / "products.csv")
    assert list(prod["sensor"]) == ["hls-l30", "hls-s30"]
    assert prod["aar"].between(0.55, 0.9).all() and prod["snowline_m"].between(2300, 2800).all()
    assert (prod["glacier_area_km2"].round(2) == 16.14).all()
    assert section.heading == "Real glacier" and len(section.figures) == 2
    assert all(f.path.read_bytes()[:4] == b"\x89PNG" for f in section.figures)
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 2 and "SatRbedo" in html
    assert "Aberle" in html and "snow km²" in html and "snowline (m)" in html


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="no headless Chromium installed")
def test_real_section_opens_in_chromium_without_broken_images(real_report, tmp_path):
    spec = importlib.util.spec_from_file_location("check_report",
                                                  REPO / "scripts" / "check_report.py")
    check_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_report)
    res = check_report.check(real_report[3], tmp_path / "shot.png")
    assert res["images"] == 2 and res["broken"] == 0 and res["screenshot_bytes"] > 10_000


def test_real_section_numbers_equal_the_cli_whatever_file_is_given(real_report, tmp_path):
    """Issue 23: the report's products are the CLI's, and the CLI gives the same AAR +-
    whichever optional file is passed; the built-in models' rows say what they cannot see."""
    from click.testing import CliRunner

    from glacierfacies.cli import cli
    from glacierfacies.examples import example_path

    out, summary, _, _ = real_report
    report = pd.read_csv(out / "real" / "products.csv")
    ex = example_path("athabasca")
    cols = ["aar", "aar_unc", "snowline_m", "snowline_unc_m", "mean_confidence",
            "aar_member_sd"]
    for i, s in enumerate(summary["scenes"]):
        facies = Path(s["map"])
        conf = facies.with_name(f"{s['scene']}_confidence.tif")
        prob = facies.with_name(f"{s['scene']}_probabilities.tif")
        rows = []
        for k, extra in enumerate(([], ["--confidence", conf], ["--probabilities", prob])):
            dest = tmp_path / f"{s['scene']}_{k}.csv"
            res = CliRunner().invoke(cli, ["products", str(facies), "--outlines",
                                           str(ex / "athabasca_outline.shp"), "--dem",
                                           str(ex / "athabasca_dem.tif"), "--id-column", "ID",
                                           *map(str, extra), "-o", str(dest)])
            assert res.exit_code == 0, res.output
            rows.append(pd.read_csv(dest).iloc[0])
        for r in rows:
            assert r["uncertainty_method"] == "probabilities+members"
            for c in cols:
                assert r[c] == pytest.approx(report[c].iloc[i], rel=1e-9), (s["scene"], c)
        r = rows[0]
        assert 0.02 < r["aar_member_sd"] <= r["aar_unc"] < 0.08
        assert not r["firn_mapped"] and pd.isna(r["firnline_m"]) and pd.isna(r["aar_snow_firn"])
        assert pd.isna(r["area_km2_firn"]) and "firn_not_mapped" in r["product_flags"]
        # the 1984 outline is cut to the clip: its edge runs along the image's edge
        assert r["outline_edge_fraction"] > 0.005 and "outline_at_scene_edge" in r["product_flags"]
    assert report["outline_in_scene"].round(3).tolist() == [0.987, 1.0]
    assert report["product_flags"].str.contains("outline_in_scene<0.99").tolist() == [True, False]
