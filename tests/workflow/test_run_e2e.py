"""The main job end to end on the built-in sample, with a tiny training run (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from glacierfacies.workflow.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_run_writes_every_output_then_skips_all_stages(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("training: {epochs: 1, width: 8, threads: 1}\n")
    out = tmp_path / "out"
    report = run_pipeline(cfg, out, log=lambda m: None)
    assert report == out / "report.html" and report.stat().st_size > 100_000
    maps = sorted((out / "maps").glob("*_facies.tif"))
    assert len(maps) == 6
    with rasterio.open(maps[0]) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.overviews(1)
        assert ds.colormap(1)[1][:3] == (255, 255, 255)  # snow is white
        assert ds.tags().get("CLASS_NAMES", "").startswith("ice")
    assert len(list((out / "train" / "models").glob("fold*.pt"))) == 6
    metrics = json.loads((out / "train" / "metrics.json").read_text())
    assert 0.0 < metrics["macro_f1_cleaned"] <= 1.0
    assert (out / "products" / "products.gpkg").is_file()
    assert json.loads((out / "massbalance" / "stats.json").read_text())["n_glacier_years"] > 0
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 10
    # the real glacier beside the synthetic one (issue 13): built-in models, no training
    assert "<h2 id='s" in html and "Real glacier</h2>" in html
    assert (out / "real" / "products.csv").is_file()
    assert len(list((out / "real").glob("*_facies.tif"))) == 2
    t0 = time.perf_counter()
    log: list[str] = []
    run_pipeline(cfg, out, log=log.append)
    assert time.perf_counter() - t0 < 30
    assert sum("up to date, skipped" in m for m in log) == 8  # with the real example (issue 13)
    # an expert edits one label: the run reruns from the dataset stage on (issue 15)
    import geopandas as gpd

    labels_path = out / "sample" / "labels.gpkg"
    labels = gpd.read_file(labels_path)
    labels.loc[0, "class"] = "snow" if labels.loc[0, "class"] != "snow" else "ice"
    labels.to_file(labels_path, driver="GPKG")
    log.clear()
    run_pipeline(cfg, out, log=log.append)
    assert "[sample] up to date, skipped" in log
    assert any(m.startswith("[dataset] input files changed: sample/labels.gpkg") for m in log)
    ran = [m.split("]")[0][1:] for m in log if m.endswith("running ...")]
    assert ran == ["dataset", "train", "maps", "products", "massbalance", "real", "report"]
    import pandas as pd

    table = pd.read_parquet(out / "dataset" / "table.parquet")
    assert (table["point_id"].astype(str) == str(labels.loc[0, "point_id"])).sum() <= 1
    row = table[table["point_id"].astype(str) == str(labels.loc[0, "point_id"])]
    assert row.empty or row["class"].iloc[0] == labels.loc[0, "class"]
    t0 = time.perf_counter()
    log.clear()
    run_pipeline(cfg, out, log=log.append)
    assert time.perf_counter() - t0 < 30  # nothing changed: every stage skipped
    assert sum("up to date, skipped" in m for m in log) == 8  # with the real example (issue 13)
    if shutil.which("chromium") is None:
        pytest.skip("no headless Chromium here to screenshot the report")
    shot = tmp_path / "shot.png"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "check_report.py"), str(report),
                          "--screenshot", str(shot)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout and shot.stat().st_size > 10_000
