"""Issue 23, item 4: every input is validated before anything runs.

Each bad-input case of the issue is rerun through the real command line
(`glacierfacies.cli.main`, in this process): it must stop with exit 1 and one line naming the
file and the problem, and leave nothing behind; the cases that have a correct reading (an
invalid outline that `make_valid` repairs, labels as a CSV with coordinates) must give the
same numbers as the clean input.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_bad_input_matrix import PROGRESS, _snapshot
from tests.mapping.test_scene_map import _save_model


def _spiked(geom):
    """`geom` with a zero-width spike on its ring: invalid (self-intersection), and
    `make_valid`'s polygonal part is `geom` again."""
    from shapely.geometry import Polygon

    ring = list(geom.exterior.coords)
    x0, y0 = ring[0]
    x1, y1 = ring[1]
    spike = (x0 + (x1 - x0) / 2 + 0.0, y0 + (y1 - y0) / 2 + 400.0)
    mid = (x0 + (x1 - x0) / 2, y0 + (y1 - y0) / 2)
    return Polygon([ring[0], mid, spike, mid, *ring[1:]])


def _bowtie(geom):
    """A self-intersecting 'bow tie' over `geom`'s bounds: GEOS's TopologyException case."""
    from shapely.geometry import Polygon

    x0, y0, x1, y1 = geom.bounds
    return Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])


@pytest.fixture(scope="module")
def bad(sample_dir, tmp_path_factory) -> dict[str, Path]:
    import geopandas as gpd
    import pandas as pd
    import rasterio

    from glacierfacies.scenes.reader import find_scenes

    w = tmp_path_factory.mktemp("bad23")
    scenes = find_scenes(sample_dir / "scenes")
    s2 = next(s for s in scenes if s.name.startswith("S2"))
    p = {"sample": sample_dir, "scene": s2, "dem": sample_dir / "dem.tif",
         "outlines": sample_dir / "outlines.gpkg", "labels": sample_dir / "labels.gpkg",
         "wgms": sample_dir / "wgms", "inputs": w}
    outlines = gpd.read_file(p["outlines"])
    spiked = outlines.copy()
    spiked.loc[0, "geometry"] = _spiked(outlines.geometry[0])
    assert not spiked.geometry[0].is_valid
    spiked.to_file(w / "outlines_spiked.gpkg")
    bowtie = outlines.copy()
    bowtie.loc[1, "geometry"] = _bowtie(outlines.geometry[1])
    bowtie.to_file(w / "outlines_bowtie.gpkg")
    pts = outlines.copy()
    pts["geometry"] = outlines.geometry.centroid
    pts.to_file(w / "outlines_points.gpkg")
    dup = outlines.copy()
    dup.loc[1, "rgi_id"] = dup.loc[0, "rgi_id"]
    dup.to_file(w / "outlines_dup.gpkg")
    for name in ("spiked", "bowtie", "points", "dup"):
        p[f"outlines_{name}"] = w / f"outlines_{name}.gpkg"
    labels = gpd.read_file(p["labels"])
    labels_s2 = labels[labels["scene_id"] == s2.name[:-5]].copy()
    labels_s2.to_file(w / "labels_s2.gpkg")
    p["labels_s2"] = w / "labels_s2.gpkg"
    xy = pd.DataFrame(labels_s2.drop(columns="geometry"))
    xy["x"], xy["y"] = labels_s2.geometry.x, labels_s2.geometry.y
    xy.to_csv(w / "labels_xy_nocrs.csv", index=False)
    xy["crs"] = labels_s2.crs.to_string()
    xy.to_csv(w / "labels_xy.csv", index=False)
    pd.DataFrame(labels_s2.drop(columns="geometry")).to_csv(w / "labels_nogeom.csv", index=False)
    typo = labels_s2.copy()
    typo.loc[typo.index[:3], "glacier"] = "RGI60-11.99999"
    typo.to_file(w / "labels_typo.gpkg")
    for name in ("xy_nocrs", "xy", "nogeom"):
        p[f"labels_{name}"] = w / f"labels_{name}.csv"
    p["labels_typo"] = w / "labels_typo.gpkg"
    with rasterio.open(p["dem"]) as src:
        prof, z = src.profile, src.read(1)
    holes = z.copy()
    holes[100:130, 200:260] = -9999
    with rasterio.open(w / "dem_voids.tif", "w", **{**prof, "nodata": None}) as dst:
        dst.write(holes, 1)
    with rasterio.open(w / "dem_allnodata.tif", "w", **{**prof, "nodata": -9999}) as dst:
        dst.write(np.full_like(z, -9999), 1)
    p["dem_voids"], p["dem_allnodata"] = w / "dem_voids.tif", w / "dem_allnodata.tif"
    with rasterio.open(w / "map_facies.tif", "w", driver="GTiff", width=z.shape[1],
                       height=z.shape[0], count=1, dtype="uint8", nodata=255, crs=prof["crs"],
                       transform=prof["transform"]) as dst:
        classes = np.zeros(z.shape, np.uint8)
        classes[z > np.nanmedian(z)] = 1  # snow above the median elevation, ice below
        dst.write(classes, 1)
    p["map"] = w / "map_facies.tif"
    rng = np.random.default_rng(0)
    refl = rng.uniform(0.05, 0.9, (40, 6))
    cols = ["blue", "green", "red", "nir", "swir1", "swir2"]
    table = pd.DataFrame(refl, columns=cols)
    table.insert(0, "class", np.array(["ice", "snow"] * 20))
    table.insert(1, "glacier", [f"G{i % 4}" for i in range(40)])
    table.to_csv(w / "points.csv", index=False)
    dn = table.copy()
    dn[cols] = (dn[cols] * 10000).round()
    dn.to_csv(w / "points_dn.csv", index=False)
    p["points"], p["points_dn"] = w / "points.csv", w / "points_dn.csv"
    # WGMS folders: "n.a." in a balance column; an overview cut mid-row
    import shutil

    for name in ("wgms_na", "wgms_cut"):
        shutil.copytree(p["wgms"], w / name)
        p[name] = w / name
    mb = sorted((p["wgms_na"] / "mbdata").glob("*.csv"))[0]
    lines = mb.read_text().splitlines()
    head = lines[0].split(",")
    row = lines[2].split(",")
    row[head.index("ANNUAL_BALANCE")] = "n.a."
    lines[2] = ",".join(row)
    mb.write_text("\n".join(lines) + "\n")
    ov = p["wgms_cut"] / "WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv"
    text = ov.read_bytes()
    start = text.rfind(b"\n", 0, len(text) - 2) + 1
    cut = text.index(b",", text.index(b",", start) + 1) + 1  # after the last row's 2nd field
    ov.write_bytes(text[:cut])
    # a model folder of an interrupted training: 2 folds, no complete.json
    (w / "models_partial").mkdir()
    for k in range(2):
        _save_model(w / "models_partial" / f"fold{k}.pt", k)
    p["models_partial"] = w / "models_partial"
    # run configurations with values of the wrong type or out of range
    configs = {
        "k_folds_float": "k_folds: 2.5\n", "patch_size_text": "patch_size: big\n",
        "scenes_number": "scenes: 5\n", "min_observed_text": 'min_observed: "high"\n',
        "smoothing_text": 'smoothing: "no"\n', "unknown_key": "smothing: false\n",
        "patch_size_9": "patch_size: 9\n", "training_typo": "training: {epoch: 3}\n",
        "min_observed_range": "min_observed: 1.5\n",
    }
    for name, text in configs.items():
        (w / f"cfg_{name}.yaml").write_text(text)
        p[f"cfg_{name}"] = w / f"cfg_{name}.yaml"
    (w / "cfg_voids.yaml").write_text(
        f"scenes: ['{s2}']\ndem: {p['dem_voids']}\noutlines: {p['outlines']}\n"
        f"labels: {p['labels_s2']}\n")
    p["cfg_voids"] = w / "cfg_voids.yaml"
    (w / "cfg_typo.yaml").write_text(
        f"scenes: ['{s2}']\ndem: {p['dem']}\noutlines: {p['outlines']}\n"
        f"labels: {p['labels_typo']}\n")
    p["cfg_typo"] = w / "cfg_typo.yaml"
    (w / "cfg_dup.yaml").write_text(
        f"scenes: ['{s2}']\ndem: {p['dem']}\noutlines: {p['outlines_dup']}\n"
        f"labels: {p['labels_s2']}\n")
    p["cfg_dup"] = w / "cfg_dup.yaml"
    (w / "cfg_missing.yaml").write_text(
        f"scenes: ['{s2}']\ndem: {w / 'no_dem.tif'}\noutlines: {p['outlines']}\n"
        f"labels: {p['labels_s2']}\n")
    p["cfg_missing"] = w / "cfg_missing.yaml"
    return p


BUILD = "dataset build --scenes {scene} --dem {dem} --outlines {outlines} -o {out}/ds "
PRODUCTS = "products {map} --outlines {outlines} --dem {dem} -o {out}/p.csv "

# (id, argv, expected text in the one line)
CASES = [
    ("config-k-folds-float", "run {cfg_k_folds_float} -o {out}/run", r"k_folds.*whole number"),
    ("config-patch-size-text", "run {cfg_patch_size_text} -o {out}/run", r"patch_size.*'big'"),
    ("config-scenes-number", "run {cfg_scenes_number} -o {out}/run", r"scenes.*got 5"),
    ("config-min-observed-text", "run {cfg_min_observed_text} -o {out}/run",
     r"min_observed.*number.*'high'"),
    ("config-min-observed-range", "run {cfg_min_observed_range} -o {out}/run",
     r"min_observed.*\[0, 1\]"),
    ("config-smoothing-text", "run {cfg_smoothing_text} -o {out}/run",
     r"smoothing.*true or false.*'no'"),
    ("config-unknown-key", "run {cfg_unknown_key} -o {out}/run",
     r"unknown configuration key `smothing` \(did you mean `smoothing`\?\)"),
    ("config-patch-size-9", "run {cfg_patch_size_9} -o {out}/run", r"patch size 9 does not fit"),
    ("config-training-typo", "run {cfg_training_typo} -o {out}/run",
     r"unknown setting `epoch` \(did you mean `epochs`\?\)"),
    ("run-dem-voids", "run {cfg_voids} -o {out}/run", r"dem_voids.tif: .*-9999.*nodata"),
    ("run-label-glacier-typo", "run {cfg_typo} -o {out}/run", r"labels_typo.gpkg: 3 label.*99999"),
    ("run-duplicate-outline-ids", "run {cfg_dup} -o {out}/run",
     r"outlines_dup.gpkg: duplicate glacier id"),
    ("run-missing-dem", "run {cfg_missing} -o {out}/run",
     r"cfg_missing.yaml: `dem`: .*no_dem.tif does not exist"),
    ("build-labels-xy-without-crs", BUILD + "--labels {labels_xy_nocrs}", r"no single CRS"),
    ("build-labels-without-geometry", BUILD + "--labels {labels_nogeom}", r"no geometry"),
    ("build-label-glacier-typo", BUILD + "--labels {labels_typo}", r"RGI60-11.99999"),
    ("build-patch-size-9", BUILD + "--labels {labels_s2} --patch-size 9",
     r"--patch-size: patch size 9 does not fit"),
    ("features-point-outlines", "features {scene} --dem {dem} --outlines {outlines_points} "
     "-o {out}/f.tif", r"outlines_points.gpkg: outlines must be polygons: 8 Point"),
    ("products-point-outlines", PRODUCTS.replace("{outlines}", "{outlines_points}"),
     r"must be polygons"),
    ("products-duplicate-ids", PRODUCTS.replace("{outlines}", "{outlines_dup}"),
     r"outlines_dup.gpkg: duplicate glacier id.*RGI60-11.90001"),
    ("features-dem-voids", "features {scene} --dem {dem_voids} --outlines {outlines} "
     "-o {out}/f.tif", r"dem_voids.tif: .*outside -500..9000 m"),
    ("products-dem-voids", PRODUCTS.replace("{dem}", "{dem_voids}"), r"dem_voids.tif: .*-9999"),
    ("products-dem-all-nodata", PRODUCTS.replace("{dem}", "{dem_allnodata}"),
     r"dem_allnodata.tif: DEM holds no valid elevation"),
    ("products-bad-date", PRODUCTS + "--date 2022-13-45", r"--date must be a date.*2022-13-45"),
    ("predict-dn-without-scale", "predict {points_dn} --model builtin:landsat -o {out}/p.csv",
     r"points_dn.csv: median blue/green/red reflectance is .*--scale"),
    ("import-points-dn-without-scale", "dataset import-points {points_dn} -o {out}/ds --folds 2",
     r"points_dn.csv: median.*unscaled DN"),
    ("massbalance-wgms-na", "massbalance --records-aar --wgms {wgms_na} -o {out}/mb",
     r"mbdata_WGMS-\d+.csv: column ANNUAL_BALANCE: 1 value.*'n.a.'"),
    ("massbalance-wgms-truncated", "massbalance --records-aar --wgms {wgms_cut} -o {out}/mb",
     r"OVERVIEW.csv: the last row has \d+ of \d+ fields"),
    ("map-partial-model-folder", "map {scene} --dem {dem} --outlines {outlines} "
     "--model {models_partial} -o {out}/f.tif", r"models_partial: incomplete model folder"),
]


def _run_cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from glacierfacies.cli import main

    monkeypatch.setattr(sys, "argv", ["glacierfacies", *argv])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    cap = capsys.readouterr()
    err = "\n".join(line for line in cap.err.replace("\r", "\n").splitlines()
                    if line.strip() and not PROGRESS.match(line))
    return code, cap.out, err


@pytest.mark.parametrize("case, argv, problem", CASES, ids=[c[0] for c in CASES])
def test_refused_before_anything_runs(case, argv, problem, bad, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(out=out, **bad) for a in argv.split()]
    before, sample_before = _snapshot(bad["inputs"]), _snapshot(bad["sample"])
    code, _, err = _run_cli(args, monkeypatch, capsys)
    assert code == 1, err
    assert err.startswith("error: ") and "\n" not in err, err  # exactly one line
    assert re.search(problem, err), err
    assert list(out.rglob("*")) == [], "files left behind"
    assert _snapshot(bad["inputs"]) == before and _snapshot(bad["sample"]) == sample_before


def test_unwritable_output_folder(bad, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: take a folder even root cannot
        folder = Path("/proc/1")
    try:
        code, _, err = _run_cli(f"features {bad['scene']} --dem {bad['dem']} --outlines "
                                f"{bad['outlines']} -o {folder}/f.tif".split(), monkeypatch, capsys)
    finally:
        (tmp_path / "readonly").chmod(0o755)
    assert code == 1 and err == f"error: {folder}: output folder is not writable (permission denied)"


def test_invalid_outline_is_repaired_counted_and_gives_the_clean_aar(bad, tmp_path, monkeypatch,
                                                                   capsys):
    import json

    import pandas as pd

    rows = {}
    for name in ("outlines", "outlines_spiked"):
        out = tmp_path / f"{name}.csv"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, _, err = _run_cli(f"products {bad['map']} --outlines {bad[name]} --dem "
                                    f"{bad['dem']} -o {out}".split(), monkeypatch, capsys)
        assert code == 0, err
        rows[name] = pd.read_csv(out).set_index("glacier")
        told = [str(w.message) for w in caught if "make_valid" in str(w.message)]
        sidecar = next(tmp_path.glob(f"{name}.csv*.json"))
        repaired = json.loads(sidecar.read_text())["sources"]["outlines_repaired"]
        if name == "outlines_spiked":
            assert told and told[0].endswith("outlines_spiked.gpkg: 1 invalid outline geometry "
                                             "repaired with make_valid (rgi_id RGI60-11.90001)")
            assert repaired == 1
        else:
            assert not told and repaired == 0
    clean, repaired = rows["outlines"], rows["outlines_spiked"]
    assert 0.2 < clean["aar"].iloc[0] < 0.8
    np.testing.assert_allclose(repaired["aar"], clean["aar"], atol=1e-9)


def test_self_intersecting_outline_maps_in_features(bad, tmp_path, monkeypatch, capsys):
    """The bow tie that gave GEOS's TopologyException: repaired, named, and mapped."""
    out = tmp_path / "f.tif"
    with pytest.warns(UserWarning, match=r"1 invalid outline geometry repaired with make_valid "
                                         r"\(rgi_id RGI60-11.90002\)"):
        code, stdout, err = _run_cli(f"features {bad['scene']} --dem {bad['dem']} --outlines "
                                     f"{bad['outlines_bowtie']} -o {out}".split(), monkeypatch,
                                     capsys)
    assert code == 0, err
    assert "8 glacier(s)" in stdout and out.is_file()


def test_labels_as_csv_with_coordinates_read_as_the_geopackage(bad):
    from glacierfacies.data.build import read_labels

    gpkg = read_labels(bad["labels_s2"])
    csv = read_labels(bad["labels_xy"])
    assert csv.crs == gpkg.crs and len(csv) == len(gpkg) > 100
    np.testing.assert_allclose(csv.geometry.x, gpkg.geometry.x)
    np.testing.assert_allclose(csv.geometry.y, gpkg.geometry.y)
    assert list(csv["class"]) == list(gpkg["class"])


def test_builtin_model_of_another_sensor_warns():
    from glacierfacies.model.builtin import sensor_family, sensor_warning

    assert sensor_family("sentinel2") == sensor_family("hls-s30") == "sentinel2"
    assert sensor_family("landsat8") == sensor_family("hls-l30") == "landsat"
    assert sensor_family("generic") is None
    text = sensor_warning(["builtin:landsat"], "sentinel2")
    assert text.startswith("builtin:landsat was trained on Landsat 8/9 Collection 2 Level 2")
    assert "use builtin:sentinel2" in text
    assert sensor_warning(["builtin:sentinel2"], "hls-s30") is None
    assert sensor_warning(["builtin:landsat"], "generic") is None


def test_dem_check_values(bad):
    from glacierfacies.dem import check_dem

    info = check_dem(bad["dem"])
    assert info["valid_fraction"] == 1.0 and 500 < info["min_m"] < info["max_m"] < 5000
