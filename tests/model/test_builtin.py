"""Built-in models: registry, shipped files and card, reproducible rebuild, ONNX export."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from glacierfacies.cli import cli
from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.model.builtin import (
    BUILTIN_MODELS,
    builtin_card,
    builtin_files,
    resolve_models,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


def test_registry_resolves_builtin_names():
    assert set(BUILTIN_MODELS) == {"landsat", "sentinel2"}
    files = resolve_models(["builtin:landsat", "x/fold0.pt"])
    assert [f.name for f in files] == ["fold0.pt", "fold1.pt", "fold2.pt", "fold3.pt",
                                       "fold0.pt"]
    assert all(f.is_file() and f.with_suffix(".json").is_file() for f in files[:4])
    with pytest.raises(InputError, match="unknown built-in model; known: builtin:landsat, "
                                         "builtin:sentinel2") as e:
        builtin_files("builtin:modis")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["landsat", "sentinel2"])
def test_card_and_shipped_probabilities(name):
    from glacierfacies.mapping.points import predict_patches
    from glacierfacies.model.card import load_members

    card = builtin_card(name)
    assert card["features"] == list(OPTICAL_BANDS) and card["patch_size"] == 1
    src = card["training_data"]
    assert src["licence"] == "MIT" and "Rainey Aberle" in src["attribution"]
    assert src["url"].endswith("glacier-snow-cover-mapping") and src["points_used"] > 8000
    assert card["rebuild"].startswith("make models")
    logo = card["leave_one_glacier_out"]
    assert set(logo["per_glacier"]) == {"Gulkana", "SouthCascade", "Sperry", "Wolverine"}
    f1s = [v["snow_f1"] for v in logo["per_glacier"].values()]
    assert logo["mean_snow_f1"] == pytest.approx(np.mean(f1s)) and logo["mean_snow_f1"] > 0.85
    assert card["band_columns"]["nir"] == ("SR_B5" if name == "landsat" else "B8")
    # the shipped weights give the probabilities recorded when they were built
    ref = card["training_points_ensemble"]
    x = np.array(ref["reference_values"], np.float32).reshape(-1, 6, 1, 1)
    probs = predict_patches(load_members([f"builtin:{name}"]), x, OPTICAL_BANDS)
    assert np.abs(probs - np.array(ref["reference_probabilities"])).max() < 1e-6
    # calibration: per fold, kept only where it lowered the validation ECE
    for fold in card["calibration"]["folds"]:
        if fold["method"] == "temperature":
            assert fold["val_ece_after"] < fold["val_ece_before"]
        else:
            assert fold["method"] == "none" and "reason" in fold


def test_models_command_lists_both():
    res = CliRunner().invoke(cli, ["models"])
    assert res.exit_code == 0, res.output
    assert "builtin:landsat: Landsat 8/9 Collection 2 Level 2, HLS v2.0 L30" in res.output
    assert "builtin:sentinel2: Sentinel-2 L2A, HLS v2.0 S30" in res.output
    assert res.output.count("leave-one-glacier-out snow F1") == 2


def test_package_data_ships_the_models():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    data = cfg["tool"]["setuptools"]["package-data"]
    assert data["glacierfacies.model.builtin"] == ["*/*.pt", "*/*.json"]
    assert {"onnx>=1.16", "onnxruntime>=1.17"} <= set(cfg["project"]["optional-dependencies"]
                                                      ["dev"])


def test_onnx_export_of_a_builtin_fold_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from glacierfacies.model.card import load_model
    from glacierfacies.model.onnx import DenseProbabilities, export_onnx

    path = builtin_files("builtin:sentinel2")[0]
    out = export_onnx(path, tmp_path / "s2.onnx", size=16)
    model, card = load_model(path)
    x = np.random.default_rng(0).uniform(0, 1, (2, 6, 13, 17)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out)).run(None, {"features": x})
    with torch.no_grad():
        want = DenseProbabilities(model, card)(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 8, 13, 17) and np.abs(got - want).max() <= 1e-5


def test_export_onnx_command_takes_a_builtin_name(tmp_path):
    """`export-onnx builtin:NAME -o m.onnx` writes one m_foldK.onnx per fold model; a second
    call refuses before writing anything."""
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(cli, ["export-onnx", "builtin:landsat", "-o", str(out)])
    assert res.exit_code == 0, res.output
    want = sorted(f"m_{f.stem}.onnx" for f in builtin_files("builtin:landsat"))
    assert sorted(p.name for p in tmp_path.iterdir()) == want and len(want) == 4
    res = CliRunner().invoke(cli, ["export-onnx", "builtin:landsat", "-o", str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    assert "--overwrite" in str(res.exception)
    res = CliRunner().invoke(cli, ["export-onnx", "builtin:nosuch", "-o", str(out)])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["landsat", "sentinel2"])
def test_rebuild_reproduces_shipped_probabilities(name, shared_data, tmp_path):
    """`make models` gives the shipped weights: the same probabilities (<= 1e-4) on every
    training point."""
    from glacierfacies.workflow.builtin_models import build_builtin, ensemble_probs, load_points

    card = build_builtin(name, shared_data / "aberle", tmp_path)
    ps = load_points(name, shared_data / "aberle")
    new = ensemble_probs(sorted((tmp_path / name).glob("fold*.pt")), ps)
    shipped = ensemble_probs(builtin_files(name), ps)
    assert np.abs(new - shipped).max() <= 1e-4
    assert card["leave_one_glacier_out"]["mean_snow_f1"] == pytest.approx(
        builtin_card(name)["leave_one_glacier_out"]["mean_snow_f1"], abs=1e-3)
