"""`predict`: models applied to a point table (CSV/GeoPackage) or a PatchSet folder.

One output row per input point: `pred_class`, `confidence` and `p_<class>` for every class,
the ensemble mean of the calibrated probabilities (`mapping.points.predict_patches`, the
same rule as the maps). With labels, the scores: macro F1, per-class F1, the confusion
matrix and, for a group of classes (`positive`), its binary F1.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import atomic_output, check_output, write_json
from glacierfacies.classes import CLASS_NAMES, class_index
from glacierfacies.errors import InputError, ModelMismatchError

__all__ = ["PredictResult", "predict_points", "scores_lines"]


@dataclass
class PredictResult:
    """What `predict_points` wrote and scored."""

    out: Path
    n_points: int
    n_predicted: int
    scores: dict[str, Any] | None = None
    scores_path: Path | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    band_substitutions: dict[str, dict[str, str]] = field(default_factory=dict)


def _members(models: Sequence[str | os.PathLike]):
    from glacierfacies.model.card import load_members

    return load_members(list(models))


def _from_patchset(folder: Path):
    from glacierfacies.data.patchset import PatchSet

    ps = PatchSet.load(folder)
    table = ps.table.reset_index(drop=True).copy()
    labels = table["class"].astype(str)
    return table, np.asarray(ps.patches), list(ps.feature_names), labels, labels, None


def resolve_bands(bands: str | None, source: Path | None = None
                  ) -> tuple[dict[str, str] | None, dict[str, dict[str, str]]]:
    """``--bands``: a preset (sentinel2, landsat89), BAND=COLUMN pairs, or a preset followed
    by overrides (``sentinel2,swir2=B11``) -> (band -> column, substitutions).

    A substitution is a band read from a column that is another band's (the preset's, or
    the column named as that band): ``{"swir2": {"column": "B11", "column_of": "swir1"}}``;
    it is reported on the terminal and in the scores JSON, never silent.
    """
    from glacierfacies.data.points import SENSOR_BAND_COLUMNS, parse_mapping
    from glacierfacies.features import OPTICAL_BANDS

    if not bands:
        return None, {}
    parts = [t.strip() for t in str(bands).split(",") if t.strip()]
    preset = parts[0] if parts and parts[0] in SENSOR_BAND_COLUMNS else None
    base = dict(SENSOR_BAND_COLUMNS[preset]) if preset else {b: b for b in OPTICAL_BANDS}
    rest = ",".join(parts[1:] if preset else parts)
    if preset is None and "=" not in rest:
        return bands, {}  # not a mapping: `read_point_values` says what is wrong with it
    overrides = (parse_mapping(rest) or {}) if rest else {}
    unknown = sorted(set(overrides) - set(OPTICAL_BANDS))
    if unknown:
        raise InputError(source, f"--bands names {unknown}, not bands "
                                 f"({', '.join(OPTICAL_BANDS)})")
    mapping = {**base, **overrides}
    owner = {col: b for b, col in base.items()}
    subs = {}
    for band in OPTICAL_BANDS:  # a column read for two bands: the later one stands in
        col = mapping[band]
        users = [b for b in OPTICAL_BANDS if mapping[b] == col]
        first = owner.get(col) if owner.get(col) in users else users[0]
        if band != first:
            subs[band] = {"column": col, "column_of": first}
    return mapping, subs


def _from_table(path: Path, bands, scale, offset, class_column, class_map, layer):
    from glacierfacies.data.points import read_point_values

    pv = read_point_values(path, bands, class_column, class_map, scale, offset, layer)
    if len(pv.values) == 0:
        raise InputError(path, "the point table has no rows")
    patches = pv.values.reshape(len(pv.values), -1, 1, 1)
    return pv.table, patches, pv.feature_names, pv.labels, pv.raw_labels, pv.columns


def _raw_text(path: Path, rows):
    """The input columns as their text in a CSV, so that predict copies them unchanged."""
    import pandas as pd

    if path.suffix.lower() != ".csv":
        return rows
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception:  # already read once: leave the parsed values
        return rows
    if len(raw) != len(rows):
        return rows
    for c in raw.columns:
        if c in rows.columns:
            rows[c] = raw[c].to_numpy()
    return rows


def predict_points(
    source: str | os.PathLike,
    models: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    bands: str | None = None,
    scale: float | None = None,
    offset: float | None = None,
    class_column: str = "class",
    class_map: str | None = None,
    layer: str | None = None,
    positive: Sequence[str] | None = None,
    positive_labels: Sequence[str] | None = None,
    overwrite: bool = False,
) -> PredictResult:
    """Predict every point of SOURCE (a point table or a PatchSet folder) into OUT (.csv) and,
    with labels, score them into OUT with `_scores.json` for `.csv`. Nothing is written
    before the models and the table are known to fit."""
    import pandas as pd

    from glacierfacies.mapping.points import missing_features, predict_patches

    source, out = Path(source), Path(out)
    if positive_labels and not positive:
        raise InputError(None, "--positive-labels needs --positive (the classes that make "
                               "the group)")
    if out.suffix.lower() != ".csv":
        raise InputError(out, "predictions output must end in .csv")
    scores_path = out.with_name(out.stem + "_scores.json")
    for p in (out, scores_path):
        check_output(p, overwrite=overwrite)
    if not source.exists():
        raise InputError(source, "point table or PatchSet folder does not exist")
    members = _members(models)
    band_map, substitutions = resolve_bands(bands, source)
    if source.is_dir():
        table, patches, names, labels, raw, columns = _from_patchset(source)
        if len(table) == 0:
            raise InputError(source, "the PatchSet has no patches")
    else:
        table, patches, names, labels, raw, columns = _from_table(
            source, band_map, scale, offset, class_column, class_map, layer)
    for band, sub in substitutions.items():
        warnings.warn(f"{source.name}: band {band} read from column {sub['column']} "
                      f"(that of {sub['column_of']}): a named substitution, recorded in "
                      "the scores", stacklevel=2)
    missing = missing_features(members, names)
    if missing and not source.is_dir() and any(getattr(m.model, "per_patch", False)
                                               for m in members):
        raise ModelMismatchError(source, f"the paper's models given need {', '.join(missing)}: "
                                         "a point table has one value per point, not a 33 x 33 "
                                         "terrain patch; use feature set 1 (`models "
                                         "import-reference --feature-set 1`) or a PatchSet folder")
    if missing:
        cols = [columns[f] if columns else f for f in missing]
        raise ModelMismatchError(source, f"the model(s) need column(s) {', '.join(cols)} "
                                         f"(feature(s) {', '.join(missing)}) that the table lacks; "
                                         "map them with --bands")
    positive = [CLASS_NAMES[class_index(c)] for c in positive] if positive else None
    probs = predict_patches(members, patches, names, source=source)
    ok = np.isfinite(probs).all(axis=1)
    pred = np.where(ok, probs.argmax(axis=1), -1)
    rows = pd.DataFrame(table.drop(columns="geometry", errors="ignore")).reset_index(drop=True)
    rows = _raw_text(source, rows) if not source.is_dir() else rows
    if labels is not None and not (positive_labels and class_map is None):
        rows["label"] = labels.to_numpy()
    rows["pred_class"] = [CLASS_NAMES[k] if k >= 0 else "" for k in pred]
    rows["confidence"] = np.where(ok, np.nanmax(np.where(ok[:, None], probs, 0.0), axis=1),
                                  np.nan)
    for k, name in enumerate(CLASS_NAMES):
        rows[f"p_{name}"] = probs[:, k]
    scores = None
    if labels is not None:
        from glacierfacies.model.card import trained_classes

        binary_only = bool(positive_labels) and class_map is None
        scores = _scores(labels, raw, pred, probs, ok, positive, positive_labels, rows,
                         model_classes=trained_classes(models), binary_only=binary_only)
        scores["bands"] = band_map if isinstance(band_map, dict) else bands
        scores["band_substitutions"] = substitutions
    with atomic_output(out, overwrite=overwrite) as tmp:
        rows.to_csv(tmp, index=False)  # input columns as read, predictions at full precision
    if scores is not None:
        write_json(scores_path, scores, strict=True)
    counts = {CLASS_NAMES[k]: int(v) for k, v in
              enumerate(np.bincount(pred[ok], minlength=len(CLASS_NAMES))) if v}
    return PredictResult(out, len(rows), int(ok.sum()), scores,
                         scores_path if scores is not None else None, counts, substitutions)


def _scores(labels, raw, pred, probs, ok, positive, positive_labels, rows, *,
            model_classes=None, binary_only: bool = False) -> dict[str, Any]:
    """Scores of the predictions: macro F1 over the classes that exist both in the labels
    and in the model (`model_classes`; None: all), and the binary F1 of a group. With
    `binary_only` (binary labels given by --positive-labels, no class map) the binary F1
    alone: the labels are not facies classes."""
    from glacierfacies.training.metrics import group_f1

    names = labels.to_numpy()
    out: dict[str, Any] = {"n_points": int(len(names)), "n_unpredicted": int((~ok).sum())}
    if binary_only:
        out.update(kind="binary", macro_f1=None, n_scored=0)
    else:
        out.update(_class_scores(names, pred, probs, ok, rows, model_classes))
    if positive:
        raw_s = raw.to_numpy()[ok]
        if positive_labels:
            truth = np.isin(raw_s.astype(str), [str(v) for v in positive_labels])
            against = f"label column values {','.join(map(str, positive_labels))}"
        else:
            mapped = names[ok]
            truth = np.isin(mapped.astype(str), positive)
            against = f"labels mapped to {','.join(positive)}"
        pos = [CLASS_NAMES.index(c) for c in positive]
        out["group"] = {"positive": positive, "against": against, "n": int(ok.sum()),
                        "n_positive": int(truth.sum()),
                        "f1": group_f1(truth.astype(np.int64), np.isin(pred[ok], pos).astype(
                            np.int64), [1])}
    return out


def _class_scores(names, pred, probs, ok, rows, model_classes) -> dict[str, Any]:
    from glacierfacies.training.metrics import evaluate

    scored_any = ok & pd_notna(names)
    in_model = (np.ones(len(names), bool) if model_classes is None
                else np.isin(names.astype(str), list(model_classes)))
    scored = scored_any & in_model
    left_out = {}
    for c in sorted(set(names[scored_any & ~in_model].astype(str))):
        left_out[c] = int((names[scored_any].astype(str) == c).sum())
    base = {"kind": "classes", "n_scored": int(scored.sum()),
            "n_unlabelled": int((~pd_notna(names)).sum()),
            "classes_not_in_model": left_out}
    if not scored.any():
        return {**base, "macro_f1": None, "accuracy": None, "ece": None, "per_class_f1": {},
                "support": {}, "confusion": {"rows": "label", "columns": "predicted",
                                             "classes": [], "counts": []}}
    y = np.array([CLASS_NAMES.index(n) for n in names[scored]], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ev = evaluate(y, probs[scored], None, CLASS_NAMES)
    present = [c for c in CLASS_NAMES if ev["per_class"][c]["support"] > 0
               or ev["per_class"][c]["predicted"] > 0]
    idx = [CLASS_NAMES.index(c) for c in present]
    cm = np.asarray(ev["confusion"]["counts"])[np.ix_(idx, idx)]
    # macro F1 over the classes of the labels that the model has (left-out ones listed)
    f1s = [ev["per_class"][c]["f1"] for c in CLASS_NAMES if ev["per_class"][c]["support"] > 0]
    out: dict[str, Any] = {
        **base,
        # one class alone (e.g. `--class-map 1=snow` on a snow/no-snow table) is no macro F1
        "macro_f1": float(np.mean(f1s)) if len(f1s) > 1 else None,
        "macro_f1_classes": [c for c in CLASS_NAMES if ev["per_class"][c]["support"] > 0],
        "accuracy": ev["accuracy"], "ece": ev["ece"],
        "per_class_f1": {c: ev["per_class"][c]["f1"] for c in present},
        "support": {c: ev["per_class"][c]["support"] for c in present},
        "confusion": {"rows": "label", "columns": "predicted", "classes": present,
                      "counts": cm.tolist()},
    }
    if "glacier" in rows:
        g = rows["glacier"].astype(str).to_numpy()[scored]
        out["per_glacier_macro_f1"] = {
            k: evaluate(y[g == k], probs[scored][g == k], None, CLASS_NAMES)["macro_f1"]
            for k in sorted(set(g))} if len(set(g)) > 1 else None
    return out


def pd_notna(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.notna(a)


def scores_lines(scores: dict[str, Any]) -> list[str]:
    """The scores as a few lines for the terminal (binary tables: the binary F1 only)."""
    lines = []
    for band, sub in (scores.get("band_substitutions") or {}).items():
        lines.append(f"band substitution: {band} read from column {sub['column']} "
                     f"(that of {sub['column_of']})")
    if scores.get("kind") == "classes" and scores.get("macro_f1") is not None:
        lines.append(f"macro F1 {scores['macro_f1']:.3f} over "
                     f"{', '.join(scores['macro_f1_classes'])}, accuracy "
                     f"{scores['accuracy']:.3f} on {scores['n_scored']} labelled points"
                     + (f" ({scores['n_unlabelled']} with unmapped labels not scored)"
                        if scores["n_unlabelled"] else ""))
        left = scores.get("classes_not_in_model") or {}
        if left:
            lines.append("not scored (classes the model does not have): " + ", ".join(
                f"{c} ({n} points)" for c, n in left.items()))
        lines.append("per-class F1: " + ", ".join(
            f"{c} {'–' if v is None else f'{v:.3f}'}" for c, v in scores["per_class_f1"].items()))
        conf = scores["confusion"]
        width = max(len(c) for c in conf["classes"]) + 1
        lines.append("confusion (rows label, columns predicted):")
        lines.append(" " * width + "".join(f"{c[:8]:>9}" for c in conf["classes"]))
        for c, row in zip(conf["classes"], conf["counts"], strict=True):
            lines.append(f"{c:<{width}}" + "".join(f"{v:>9}" for v in row))
    elif scores.get("kind") == "classes":
        classes = scores.get("macro_f1_classes") or []
        lines.append(f"labels of one class only ({classes[0]}): no macro F1" if classes
                     else "no label maps to a class of the model: no class scores (map the "
                          "label codes with --class-map CODE=class,...)")
    if scores.get("group"):
        g = scores["group"]
        f1 = "–" if g["f1"] is None else f"{g['f1']:.3f}"
        lines.append(f"binary F1 of {'+'.join(g['positive'])} against {g['against']}: {f1} "
                     f"({g['n_positive']} of {g['n']} points positive)")
    return lines
