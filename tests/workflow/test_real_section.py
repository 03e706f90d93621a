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
