"""Bad input across every command, as one table: each case must stop with one line on stderr
(`error: ...`, naming the problem), a non-zero exit status, and no file left behind.

The inputs (missing, empty, truncated and wrong-CRS rasters; outlines far from the scene;
labels with an unknown class; a model of other features; half-written outputs of an
interrupted command; a regular file where a folder must be) are made once for the module;
each case then runs the real command line (`glacierfacies.cli.main`) in this process.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.mapping.test_scene_map import _save_model


def _truncate(src: Path, dest: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: max(1, int(len(data) * keep))])
    return dest


def _small_patchset(dest: Path) -> Path:
    import pandas as pd

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.data.patchset import PatchSetWriter
    from glacierfacies.features import FEATURE_NAMES

    n, rng = 60, np.random.default_rng(0)
    glacier = np.arange(n) % 6
    optical = FEATURE_NAMES[:6]  # a spectral-only set: models of terrain features mismatch
    with PatchSetWriter(dest, n, optical, 9) as w:
        w.patches[:] = rng.random((n, len(optical), 9, 9), dtype=np.float32)
        table = pd.DataFrame({
            "class": np.asarray(CLASS_NAMES)[np.arange(n) % 4], "glacier": [f"G{g}" for g in glacier],
            "scene_id": "S1", "fold": glacier % 3, "point_id": [str(i) for i in range(n)]})
        w.finish(table, CLASS_NAMES, fold_config={"k": 3, "method": "glacier"})
    return dest


@pytest.fixture(scope="module")
def world(sample_dir, tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, shared by every case (read-only for them)."""
    import geopandas as gpd
    import rasterio
    from rasterio.crs import CRS

    from glacierfacies.scenes.reader import find_scenes

    w = tmp_path_factory.mktemp("world")
    scenes = find_scenes(sample_dir / "scenes")
    s2 = next(s for s in scenes if s.name.startswith("S2"))
    p = {"sample": sample_dir, "scene": s2, "dem": sample_dir / "dem.tif",
         "outlines": sample_dir / "outlines.gpkg", "labels": sample_dir / "labels.gpkg",
         "missing": w / "missing.tif", "blocker": w / "blocker", "wgms": sample_dir / "wgms"}
    p["blocker"].write_text("a regular file, not a folder\n")
    (w / "empty.tif").write_bytes(b"")
    p["empty"] = w / "empty.tif"
    p["dem_trunc"] = _truncate(p["dem"], w / "dem_trunc.tif", 0.3)
    with rasterio.open(p["dem"]) as src:
        prof, z = src.profile, src.read(1)
        shape, transform, crs = z.shape, src.transform, src.crs
    for name, new_crs in (("dem_nocrs", None), ("dem_wrongcrs", CRS.from_epsg(4326))):
        with rasterio.open(w / f"{name}.tif", "w", **{**prof, "crs": new_crs}) as dst:
            dst.write(z, 1)
        p[name] = w / f"{name}.tif"
    # a copy of a Sentinel-2 scene whose largest band file was cut short (interrupted copy)
    bad_scene = w / s2.name
    shutil.copytree(s2, bad_scene)
    band = max((f for f in bad_scene.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    _truncate(band, band, 0.4)
    p["scene_trunc"] = bad_scene
    far = gpd.read_file(p["outlines"])
    far.geometry = far.geometry.translate(0, 300_000)
    far.to_file(w / "outlines_far.gpkg")
    p["outlines_far"] = w / "outlines_far.gpkg"
    labels = gpd.read_file(p["labels"])
    labels[labels["scene_id"] == s2.name[:-5]].to_file(w / "labels_s2.gpkg")
    p["labels_s2"] = w / "labels_s2.gpkg"  # the points of that one scene
    labels.loc[3, "class"] = "glacier_ice"
    labels.to_file(w / "labels_unknown.gpkg")
    p["labels_unknown"] = w / "labels_unknown.gpkg"
    (w / "points.csv").write_text("class,glacier,blue,green,red,nir,swir1,swir2\n"
                                  "ice,G1,.1,.1,.1,.1,.1,.1\nlava,G1,.2,.2,.2,.2,.2,.2\n")
    p["points_unknown"] = w / "points.csv"
    p["model"] = _save_model(w / "fold0.pt", 0)
    p["model_ndsi"] = _save_model(w / "ndsi.pt", 1, features=["blue", "green", "ndsi"])
    (w / "cut").mkdir()
    p["model_trunc"] = _truncate(p["model"], w / "cut" / "fold0.pt", 0.5)
    shutil.copy(p["model"].with_suffix(".json"), w / "cut" / "fold0.json")
    p["dataset"] = _small_patchset(w / "dataset")
    p["dataset_notable"] = w / "dataset_notable"  # interrupted before its table was written
    shutil.copytree(p["dataset"], p["dataset_notable"])
    (p["dataset_notable"] / "table.parquet").unlink()
    p["dataset_trunc"] = w / "dataset_trunc"
    shutil.copytree(p["dataset"], p["dataset_trunc"])
    _truncate(p["dataset"] / "patches.npy", p["dataset_trunc"] / "patches.npy", 0.5)
    (w / "published").mkdir()
    _truncate(p["dem"], w / "published" / "0_G1_2020-08-01_S1_12_ice.tif", 0.05)
    p["published_trunc"] = w / "published"
    (w / "run_untrained").mkdir()
    (w / "run_untrained" / "run.json").write_text(f'{{"dataset": "{p["dataset"]}"}}')
    p["run_untrained"] = w / "run_untrained"
    # a facies map (all ice) on the DEM grid, and the same cut short
    with rasterio.open(w / "map_facies.tif", "w", driver="GTiff", width=shape[1],
                       height=shape[0], count=1, dtype="uint8", nodata=255, crs=crs,
                       transform=transform) as dst:
        dst.write(np.zeros(shape, np.uint8), 1)
    p["map"] = w / "map_facies.tif"
    p["map_trunc"] = _truncate(p["map"], w / "cut" / "map_facies.tif", 0.3)
    p["products_trunc"] = w / "products.gpkg"
    p["products_trunc"].write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)  # interrupted
    for name, text in {
        "run_badglob": f"scenes: ['{w}/nothing/*.SAFE']\n",
        "run_unknown": f"scenes: ['{s2}']\nlabels: {p['labels_unknown']}\n",
        "run_emptydem": f"scenes: ['{s2}']\ndem: {p['empty']}\n",
        "run_faroutlines": f"scenes: ['{s2}']\noutlines: {p['outlines_far']}\n",
    }.items():
        base = {"dem": p["dem"], "outlines": p["outlines"], "labels": p["labels"]}
        keys = {line.split(":")[0] for line in text.splitlines()}
        extra = "".join(f"{k}: {v}\n" for k, v in base.items() if k not in keys)
        (w / f"{name}.yaml").write_text(text + extra)
        p[name] = w / f"{name}.yaml"
    return p


# (case id, argv with {name} placeholders ({out} = this case's empty folder), error text)
CASES = [
    # sample
    ("sample-out-under-file", "sample {blocker}/sample", "not a folder|does not exist"),
    ("sample-negative-seed", "sample {out}/s --seed -1", "seed must be"),
    # features
    ("features-missing-scene", "features {missing} --dem {dem} --outlines {outlines} -o {out}/f.tif",
     "not found|does not exist"),
    ("features-empty-dem", "features {scene} --dem {empty} --outlines {outlines} -o {out}/f.tif",
     "empty.tif"),
    ("features-truncated-dem", "features {scene} --dem {dem_trunc} --outlines {outlines} "
     "-o {out}/f.tif", "dem_trunc.tif"),
    ("features-dem-without-crs", "features {scene} --dem {dem_nocrs} --outlines {outlines} "
     "-o {out}/f.tif", "no CRS"),
    ("features-dem-wrong-crs", "features {scene} --dem {dem_wrongcrs} --outlines {outlines} "
     "-o {out}/f.tif", "does not overlap"),
    ("features-truncated-scene", "features {scene_trunc} --dem {dem} --outlines {outlines} "
     "-o {out}/f.tif", "MSIL2A"),
    ("features-outlines-no-overlap", "features {scene} --dem {dem} --outlines {outlines_far} "
     "-o {out}/f.tif", "no outline"),
    ("features-out-under-file", "features {scene} --dem {dem} --outlines {outlines} "
     "-o {blocker}/f.tif", "not a folder|does not exist"),
    # dataset
    ("build-unknown-class", "dataset build --scenes {scene} --dem {dem} --outlines {outlines} "
     "--labels {labels_unknown} -o {out}/ds", "unknown class 'glacier_ice'"),
    ("build-empty-labels", "dataset build --scenes {scene} --dem {dem} --outlines {outlines} "
     "--labels {empty} -o {out}/ds", "cannot read labels"),
    ("build-truncated-scene", "dataset build --scenes {scene_trunc} --dem {dem} "
     "--outlines {outlines} --labels {labels_s2} -o {out}/ds", "MSIL2A"),
    ("build-out-under-file", "dataset build --scenes {scene} --dem {dem} --outlines {outlines} "
     "--labels {labels_s2} -o {blocker}/ds", "not a folder|does not exist"),
    ("import-published-truncated", "dataset import-published {published_trunc} -o {out}/ds",
     "0_G1_2020-08-01_S1_12_ice.tif"),
    ("import-points-unknown-class", "dataset import-points {points_unknown} -o {out}/ds --strict",
     "lava"),
    ("info-interrupted-dataset", "dataset info {dataset_notable}", "table.parquet"),
    # train / evaluate / export
    ("train-interrupted-dataset", "train {dataset_notable} -o {out}/run --preset sample",
     "table.parquet"),
    ("train-truncated-patches", "train {dataset_trunc} -o {out}/run --preset sample",
     "patches.npy"),
    ("train-features-not-in-dataset", "train {dataset} -o {out}/run --preset sample "
     "--features blue,elevation", "not in the dataset"),
    ("train-unknown-feature", "train {dataset} -o {out}/run --preset sample "
     "--features blue,ndsi", "ndsi"),
    ("train-out-under-file", "train {dataset} -o {blocker}/run --preset sample",
     "not a folder|does not exist"),
    ("evaluate-untrained-run", "evaluate {run_untrained}", "no trained round"),
    ("export-onnx-truncated-model", "export-onnx {model_trunc} -o {out}/m.onnx",
     "cannot load weights"),
    # map / map-many
    ("map-model-other-features", "map {scene} --dem {dem} --outlines {outlines} "
     "--model {model_ndsi} -o {out}/f.tif", "ndsi"),
    ("map-truncated-model", "map {scene} --dem {dem} --outlines {outlines} "
     "--model {model_trunc} -o {out}/f.tif", "cannot load weights"),
    ("map-dem-wrong-crs", "map {scene} --dem {dem_wrongcrs} --outlines {outlines} "
     "--model {model} -o {out}/f.tif", "does not overlap"),
    ("map-empty-dem", "map {scene} --dem {empty} --outlines {outlines} "
     "--model {model} -o {out}/f.tif", "empty.tif"),
    ("map-outlines-no-overlap", "map {scene} --dem {dem} --outlines {outlines_far} "
     "--model {model} -o {out}/f.tif", "outline"),
    ("map-out-under-file", "map {scene} --dem {dem} --outlines {outlines} "
     "--model {model} -o {blocker}/f.tif", "not a folder|does not exist"),
    ("map-many-no-scene", "map-many {missing}* --dem {dem} --outlines {outlines} "
     "--model {model} -o {out}", "no scene matches"),
    ("map-many-model-other-features", "map-many {scene} --dem {dem} --outlines {outlines} "
     "--model {model_ndsi} -o {out}", "ndsi"),
    # predict / models (issue 13)
    ("predict-missing-table", "predict {missing} --model builtin:landsat -o {out}/p.csv",
     "does not exist"),
    ("predict-model-other-features", "predict {dataset} --model {model_ndsi} -o {out}/p.csv",
     "ndsi"),
    ("predict-unknown-builtin", "predict {dataset} --model builtin:modis -o {out}/p.csv",
     "unknown built-in model"),
    ("models-build-missing-data", "models build --data {missing} -o {out}/m", "does not exist"),
    # products / massbalance
    ("products-truncated-map", "products {map_trunc} --outlines {outlines} --shadow exclude -o {out}/p.gpkg",
     "map_facies.tif"),
    ("products-outlines-no-overlap", "products {map} --outlines {outlines_far} --shadow exclude -o {out}/p.gpkg",
     "no glacier outline"),
    ("products-out-under-file", "products {map} --outlines {outlines} --shadow exclude -o {blocker}/p.gpkg",
     "not a folder|does not exist"),
    ("massbalance-interrupted-products", "massbalance {products_trunc} --wgms {wgms} "
     "-o {out}/mb", "products.gpkg"),
    ("export-targets-interrupted-products", "export-targets {products_trunc} --wgms {wgms} "
     "-o {out}/targets.csv", "products.gpkg"),
    ("massbalance-missing-wgms", "massbalance {products_trunc} --wgms {missing} -o {out}/mb",
     "missing.tif|products.gpkg"),
    # the main job: nothing may be written, not even run_config.json
    ("run-bad-scene-glob", "run {run_badglob} -o {out}/run", "no scene matches"),
    ("run-unknown-class", "run {run_unknown} -o {out}/run", "unknown class"),
    ("run-empty-dem", "run {run_emptydem} -o {out}/run", "empty.tif"),
    ("run-outlines-no-overlap", "run {run_faroutlines} -o {out}/run", "no outline"),
    ("run-out-under-file", "run -o {blocker}/run", "not a folder|does not exist"),
]


PROGRESS = re.compile(r"^[^|]*\d+%\|.*\| \d+/\d+ \[")  # a tqdm frame


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(f.relative_to(folder)): f.stat().st_mtime_ns for f in folder.rglob("*")}


@pytest.mark.parametrize("case, argv, problem", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, argv, problem, world, tmp_path, monkeypatch, capsys):
    from glacierfacies.cli import main

    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(out=out, **world) for a in argv.split()]
    inputs = world["blocker"].parent
    before, sample_before = _snapshot(inputs), _snapshot(world["sample"])
    monkeypatch.setattr(sys, "argv", ["glacierfacies", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    # progress-bar frames (tqdm, drawn with carriage returns) are not part of the message
    err = "\n".join(line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
                    if line.strip() and not PROGRESS.match(line))
    assert exit_.value.code not in (0, None), err
    assert err.startswith("error: ") and "\n" not in err, err  # exactly one line
    assert re.search(problem, err), err
    assert list(out.rglob("*")) == [], "files left behind"
    assert _snapshot(inputs) == before and _snapshot(world["sample"]) == sample_before


def test_the_matrix_is_large_and_covers_every_command():
    from glacierfacies.cli import cli

    assert len(CASES) >= 25
    commands = {c[1].split()[0] for c in CASES}
    assert commands >= set(cli.commands)
