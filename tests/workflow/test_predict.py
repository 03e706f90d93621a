"""`glacierfacies predict`: point tables and PatchSet folders -> per-point probabilities and
scores, with the built-in models shipped in the package (no ../shared needed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.cli import cli
from glacierfacies.errors import ModelMismatchError

torch.set_num_threads(1)
COLS = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
# C2 L2 reflectance + 0.2 (Aberle's Landsat scaling): snow, ice, rock
SPECTRA = {"1": [1.10, 1.08, 1.05, 0.95, 0.22, 0.21], "3": [0.62, 0.58, 0.52, 0.40, 0.21, 0.21],
           "4": [0.29, 0.30, 0.31, 0.35, 0.40, 0.36]}


def _table(path, n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for code, spec in SPECTRA.items():
        for i in range(n_per):
            v = np.array(spec) * (1 + rng.normal(0, 0.02, 6))
            rows.append({"site": "GH"[i % 2], "class": code, "point_id": f"{code}_{i}",
                         **dict(zip(COLS, v, strict=True))})
    rows.append({"site": "G", "class": "9", "point_id": "odd", **dict(zip(COLS, SPECTRA["1"],
                                                                           strict=True))})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ARGS = ["--model", "builtin:landsat", "--bands", "landsat89", "--offset", "-0.2",
        "--class-map", "1=snow,2=shadow,3=ice,4=debris,5=water"]


def _invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_predict_table_rows_probabilities_and_scores(tmp_path):
    table = _table(tmp_path / "points.csv")
    out = tmp_path / "pred.csv"
    res = _invoke(["predict", table, *ARGS, "--positive", "snow,shadow", "--positive-labels",
                   "1,2", "-o", out])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out, dtype={"class": str})
    assert len(rows) == 61 and list(rows["point_id"])[:2] == ["1_0", "1_1"]
    p = rows[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    assert np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert np.allclose(rows["confidence"], p.max(1), atol=1e-6)
    assert (rows["pred_class"] == [CLASS_NAMES[k] for k in p.argmax(1)]).all()
    # obvious spectra get their class
    want = {"1": "snow", "3": "ice", "4": "debris"}
    for code, name in want.items():
        assert (rows.loc[rows["class"] == code, "pred_class"] == name).mean() >= 0.9, code
    scores = json.loads((tmp_path / "pred_scores.json").read_text())
    scored = rows[rows["label"].notna()]
    from sklearn.metrics import f1_score

    assert scores["n_scored"] == 60 and scores["n_unlabelled"] == 1
    f1 = f1_score(scored["label"], scored["pred_class"], average=None,
                  labels=["ice", "snow", "debris"])
    assert scores["per_class_f1"]["snow"] == pytest.approx(f1[1])
    assert scores["macro_f1"] == pytest.approx(
        f1_score(scored["label"], scored["pred_class"], average="macro"))
    cm = np.array(scores["confusion"]["counts"])
    assert cm.sum() == 60 and scores["confusion"]["classes"][:3] == ["ice", "snow", "debris"]
    # the group F1: label codes 1,2 against predicted snow or shadow (the odd code-9 row is a
    # negative here: the group is defined on the label column, not on mapped classes)
    truth = rows["class"].isin(["1", "2"])
    pred = rows["pred_class"].isin(["snow", "shadow"])
    tp, fp, fn = (truth & pred).sum(), (~truth & pred).sum(), (truth & ~pred).sum()
    assert scores["group"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert "binary F1 of snow+shadow against label column values 1,2" in res.output
    assert "macro F1" in res.output and "confusion" in res.output


def test_predict_equals_the_map_of_the_same_values(tmp_path):
    """A point gets the probabilities the dense map gives a pixel of the same values."""
    from glacierfacies.features import FEATURE_NAMES
    from glacierfacies.mapping.inference import dense_predict
    from glacierfacies.mapping.points import predict_patches
    from glacierfacies.model.card import load_members

    members = load_members(["builtin:sentinel2"])
    assert len(members) == 4
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (6, 7, 9)).astype(np.float32)
    stack = np.full((11, 7, 9), np.nan, np.float32)
    stack[:6] = x
    dense = dense_predict(members, _pad(stack), return_probs=True)
    pts = predict_patches(members, x.reshape(6, -1).T.reshape(-1, 6, 1, 1),
                          list(FEATURE_NAMES[:6]))
    got = dense.probs.reshape(dense.probs.shape[0], -1).T
    assert np.abs(got - pts).max() < 1e-5


def _pad(stack):
    """The 11-feature raster the mapping side gets (terrain features unused by the model)."""
    out = stack.copy()
    out[6:] = 0.0
    return out


def test_predict_patchset_folder_equals_table(tmp_path):
    from glacierfacies.data.points import import_points

    table = _table(tmp_path / "points.csv")
    ps = import_points(table, band_columns="landsat89", offset=-0.2, glacier_column="site",
                       class_map="1=snow,3=ice,4=debris", k_folds=2)
    ps.save(tmp_path / "ps")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _invoke(["predict", tmp_path / "ps", "--model", "builtin:landsat", "-o", a]
                   ).exit_code == 0
    assert _invoke(["predict", table, *ARGS, "-o", b]).exit_code == 0
    pa, pb = pd.read_csv(a), pd.read_csv(b)
    pb = pb[pb["label"].notna()].reset_index(drop=True)
    cols = [f"p_{c}" for c in CLASS_NAMES]
    assert np.abs(pa[cols].to_numpy() - pb[cols].to_numpy()).max() < 1e-6
    assert json.loads((tmp_path / "a_scores.json").read_text())["n_scored"] == 60


def test_missing_feature_columns_one_line_nothing_written(tmp_path):
    table = tmp_path / "points.csv"
    _table(table)
    pd.read_csv(table).drop(columns=["SR_B6", "SR_B7"]).to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    res = _invoke(["predict", table, *ARGS, "-o", out])
    assert res.exit_code != 0 and isinstance(res.exception, ModelMismatchError)
    msg = str(res.exception)
    assert "\n" not in msg and msg.startswith(str(table))
    assert "SR_B6, SR_B7" in msg and "swir1, swir2" in msg
    assert not out.exists() and not (tmp_path / "pred_scores.json").exists()


def test_existing_output_refused_and_unknown_builtin(tmp_path):
    table = _table(tmp_path / "points.csv")
    out = tmp_path / "pred.csv"
    out.write_text("keep")
    res = _invoke(["predict", table, *ARGS, "-o", out])
    assert res.exit_code != 0 and out.read_text() == "keep"
    res = _invoke(["predict", table, "--model", "builtin:modis", "-o", tmp_path / "x.csv"])
    assert res.exit_code != 0 and "unknown built-in model" in str(res.exception)
    assert "builtin:landsat" in str(res.exception)


def test_predict_geopackage_table(tmp_path):
    """A GeoPackage of points predicts as its CSV twin does, with the points' x and y."""
    import geopandas as gpd

    table = _table(tmp_path / "points.csv")
    df = pd.read_csv(table, dtype={"class": str})
    gdf = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(np.arange(len(df)) * 10.0,
                                                           np.zeros(len(df))), crs="EPSG:32611")
    gdf.to_file(tmp_path / "points.gpkg", driver="GPKG")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _invoke(["predict", tmp_path / "points.gpkg", *ARGS, "-o", a]).exit_code == 0
    assert _invoke(["predict", table, *ARGS, "-o", b]).exit_code == 0
    pa, pb = pd.read_csv(a), pd.read_csv(b)
    cols = [f"p_{c}" for c in CLASS_NAMES]
    assert np.abs(pa[cols].to_numpy() - pb[cols].to_numpy()).max() < 1e-6
    assert list(pa["x"][:3]) == [0.0, 10.0, 20.0] and "geometry" not in pa


def _binary_table(path, n_per=20, seed=1):
    """A snow / no-snow table (the common held-out format): truth 1 = snow, 0 = not."""
    rng = np.random.default_rng(seed)
    rows = []
    for code, spec in SPECTRA.items():
        for _ in range(n_per):
            v = np.array(spec) * (1 + rng.normal(0, 0.02, 6))
            rows.append({"truth": int(code == "1"), "ndsi": f"{rng.uniform():.9f}",
                         **dict(zip(COLS, v, strict=True))})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


BIN = ["--model", "builtin:landsat", "--bands", "landsat89", "--offset", "-0.2",
       "--class-column", "truth", "--positive", "snow,firn,shadow", "--positive-labels", "1"]


def test_predict_binary_table_scores_binary_f1_only(tmp_path):
    table = _binary_table(tmp_path / "binary.csv")
    out = tmp_path / "pred.csv"
    res = _invoke(["predict", table, *BIN, "-o", out])
    assert res.exit_code == 0, res.output
    assert "macro F1" not in res.output and "confusion" not in res.output
    scores = json.loads((tmp_path / "pred_scores.json").read_text())
    assert scores["kind"] == "binary" and scores["macro_f1"] is None
    rows = pd.read_csv(out)
    pred_pos = rows["pred_class"].isin(["snow", "firn", "shadow"]).to_numpy()
    truth = rows["truth"].to_numpy() == 1
    tp, fp, fn = (truth & pred_pos).sum(), (~truth & pred_pos).sum(), (truth & ~pred_pos).sum()
    assert scores["group"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["group"]["n_positive"] == 20 and scores["group"]["n"] == 60
    assert f"binary F1 of snow+firn+shadow against label column values 1: " \
           f"{scores['group']['f1']:.3f}" in res.output
    # a class map of the positive value alone: still no (one-class) macro F1
    res = _invoke(["predict", table, *BIN, "--class-map", "1=snow", "-o", tmp_path / "p2.csv"])
    assert res.exit_code == 0, res.output
    assert "labels of one class only (snow): no macro F1" in res.output
    s2 = json.loads((tmp_path / "p2_scores.json").read_text())
    assert s2["macro_f1"] is None and s2["group"]["f1"] == scores["group"]["f1"]


def test_predict_copies_input_columns_unchanged(tmp_path):
    table = _binary_table(tmp_path / "binary.csv")
    out = tmp_path / "pred.csv"
    assert _invoke(["predict", table, *BIN, "-o", out]).exit_code == 0
    src = pd.read_csv(table, dtype=str)
    got = pd.read_csv(out, dtype=str)
    for c in src.columns:  # the very text of every input column (no %.6g rounding)
        assert list(got[c]) == list(src[c]), c
    assert any(len(v.split(".")[1]) > 6 for v in src["SR_B2"])  # there was something to round


def test_predict_macro_f1_over_classes_of_both_labels_and_model(tmp_path):
    table = _table(tmp_path / "points.csv")
    df = pd.read_csv(table, dtype=str)
    df.loc[:4, "class"] = "firn"  # five labels of a class builtin:landsat never learnt
    df.to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    res = _invoke(["predict", table, *ARGS[:-2], "--class-map",
                   "1=snow,2=shadow,3=ice,4=debris,5=water,firn=firn", "-o", out])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "pred_scores.json").read_text())
    assert s["classes_not_in_model"] == {"firn": 5}
    assert s["macro_f1_classes"] == ["ice", "snow", "debris"]
    f1 = [s["per_class_f1"][c] for c in ("ice", "snow", "debris")]
    assert s["macro_f1"] == pytest.approx(np.mean(f1))
    assert s["n_scored"] == 55 and "not scored (classes the model does not have): firn (5 " \
           "points)" in res.output


def test_predict_empty_table_is_one_line(tmp_path):
    table = tmp_path / "empty.csv"
    pd.DataFrame(columns=[*COLS, "class"]).to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    res = _invoke(["predict", table, *ARGS, "-o", out])
    assert res.exit_code != 0 and "the point table has no rows" in str(res.exception)
    assert not out.exists() and not (tmp_path / "pred_scores.json").exists()


def test_predict_named_band_substitution(tmp_path):
    table = _binary_table(tmp_path / "binary.csv")
    df = pd.read_csv(table, dtype=str).drop(columns="SR_B7")  # a table without SWIR2
    df.to_csv(table, index=False)
    out = tmp_path / "pred.csv"
    args = [a if a != "landsat89" else "landsat89,swir2=SR_B6" for a in BIN]
    with pytest.warns(UserWarning, match="band swir2 read from column SR_B6"):
        res = _invoke(["predict", table, *args, "-o", out])
    assert res.exit_code == 0, res.output
    assert "band substitution: swir2 read from column SR_B6 (that of swir1)" in res.output
    s = json.loads((tmp_path / "pred_scores.json").read_text())
    assert s["band_substitutions"] == {"swir2": {"column": "SR_B6", "column_of": "swir1"}}
    assert s["bands"]["swir2"] == "SR_B6" and s["bands"]["swir1"] == "SR_B6"
    # without it, the missing band is a one-line refusal naming the column
    res = _invoke(["predict", table, *BIN, "-o", tmp_path / "p2.csv"])
    assert res.exit_code != 0 and "SR_B7" in str(res.exception)
