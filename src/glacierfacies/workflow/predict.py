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


def _members(models: Sequence[str | os.PathLike]):
    from glacierfacies.model.card import load_members

    return load_members(list(models))


def _from_patchset(folder: Path):
    from glacierfacies.data.patchset import PatchSet

    ps = PatchSet.load(folder)
    table = ps.table.reset_index(drop=True).copy()
    labels = table["class"].astype(str)
    return table, np.asarray(ps.patches), list(ps.feature_names), labels, labels, None


def _from_table(path: Path, bands, scale, offset, class_column, class_map, layer):
    from glacierfacies.data.points import read_point_values

    pv = read_point_values(path, bands, class_column, class_map, scale, offset, layer)
    patches = pv.values.reshape(len(pv.values), -1, 1, 1)
    return pv.table, patches, pv.feature_names, pv.labels, pv.raw_labels, pv.columns


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
    if out.suffix.lower() != ".csv":
        raise InputError(out, "predictions output must end in .csv")
    scores_path = out.with_name(out.stem + "_scores.json")
    for p in (out, scores_path):
        check_output(p, overwrite=overwrite)
    if not source.exists():
        raise InputError(source, "point table or PatchSet folder does not exist")
    members = _members(models)
    if source.is_dir():
        table, patches, names, labels, raw, columns = _from_patchset(source)
    else:
        table, patches, names, labels, raw, columns = _from_table(
            source, bands, scale, offset, class_column, class_map, layer)
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
    if labels is not None:
        rows["label"] = labels.to_numpy()
    rows["pred_class"] = [CLASS_NAMES[k] if k >= 0 else "" for k in pred]
    rows["confidence"] = np.where(ok, np.nanmax(np.where(ok[:, None], probs, 0.0), axis=1),
                                  np.nan)
    for k, name in enumerate(CLASS_NAMES):
        rows[f"p_{name}"] = probs[:, k]
    scores = None
    if labels is not None:
        scores = _scores(labels, raw, pred, probs, ok, positive, positive_labels, rows)
    with atomic_output(out, overwrite=overwrite) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.6g")
    if scores is not None:
        write_json(scores_path, scores, strict=True)
    counts = {CLASS_NAMES[k]: int(v) for k, v in
              enumerate(np.bincount(pred[ok], minlength=len(CLASS_NAMES))) if v}
    return PredictResult(out, len(rows), int(ok.sum()), scores,
                         scores_path if scores is not None else None, counts)


def _scores(labels, raw, pred, probs, ok, positive, positive_labels, rows) -> dict[str, Any]:
    from glacierfacies.training.metrics import evaluate, group_f1

    names = labels.to_numpy()
    scored = ok & pd_notna(names)
    y = np.array([CLASS_NAMES.index(n) for n in names[scored]], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ev = evaluate(y, probs[scored], None, CLASS_NAMES)
    present = [c for c in CLASS_NAMES if ev["per_class"][c]["support"] > 0
               or ev["per_class"][c]["predicted"] > 0]
    idx = [CLASS_NAMES.index(c) for c in present]
    cm = np.asarray(ev["confusion"]["counts"])[np.ix_(idx, idx)]
    out: dict[str, Any] = {
        "n_points": int(len(names)), "n_scored": int(scored.sum()),
        "n_unlabelled": int((~pd_notna(names)).sum()), "n_unpredicted": int((~ok).sum()),
        "macro_f1": ev["macro_f1"], "accuracy": ev["accuracy"], "ece": ev["ece"],
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


def pd_notna(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.notna(a)


def scores_lines(scores: dict[str, Any]) -> list[str]:
    """The scores as a few lines for the terminal."""
    lines = [f"macro F1 {scores['macro_f1']:.3f}, accuracy {scores['accuracy']:.3f} on "
             f"{scores['n_scored']} labelled points"
             + (f" ({scores['n_unlabelled']} with unmapped labels not scored)"
                if scores["n_unlabelled"] else "")]
    lines.append("per-class F1: " + ", ".join(
        f"{c} {'–' if v is None else f'{v:.3f}'}" for c, v in scores["per_class_f1"].items()))
    conf = scores["confusion"]
    width = max(len(c) for c in conf["classes"]) + 1
    lines.append("confusion (rows label, columns predicted):")
    lines.append(" " * width + "".join(f"{c[:8]:>9}" for c in conf["classes"]))
    for c, row in zip(conf["classes"], conf["counts"], strict=True):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>9}" for v in row))
    if scores.get("group"):
        g = scores["group"]
        f1 = "–" if g["f1"] is None else f"{g['f1']:.3f}"
        lines.append(f"binary F1 of {'+'.join(g['positive'])} against {g['against']}: {f1} "
                     f"({g['n_positive']} of {g['n']} points positive)")
    return lines
