"""Scores of a facies classifier: F1/IoU/confusion, per-glacier and per-group scores, ECE.

Pure computation (numpy + scikit-learn), numbers only: the figures are drawn in `workflow.figures`.
Conventions, chosen to match how the paper reports its numbers:

- **macro F1** averages the per-class F1 over the classes *present in the reference labels*
  of the set being scored (a class with no reference label has undefined recall; it is
  reported, with a warning, but kept out of the mean). Predictions of absent classes still
  count, as errors of the classes they were taken from.
- **glacier-wise macro F1** is that macro F1 computed on each glacier's points alone, then
  averaged over glaciers: mean ± population standard deviation (ddof = 0).
- **ECE** is the top-label expected calibration error with equal-width confidence bins
  (100 by default, as in the paper).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

__all__ = ["confusion_counts", "evaluate", "expected_calibration_error", "group_f1", "macro_f1",
           "mean_iou",
           "reliability_bins", "row_normalised"]


def _as_numpy(a: Any) -> np.ndarray:
    """Array from numpy, lists or (CPU/GPU) torch tensors, without importing torch."""
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy() if a.is_floating_point() else a.detach().cpu().numpy()
    return np.asarray(a)


def _labels_1d(y: Any, name: str) -> np.ndarray:
    y = _as_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class codes, got shape {y.shape}")
    return y.astype(np.int64, copy=False)


def confusion_counts(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; rows = reference class, columns = predicted class."""
    y_true = _labels_1d(y_true, "y_true")
    y_pred = _labels_1d(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    if y_true.size == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    return confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.int64)


def mean_iou(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Mean intersection-over-union over the classes present in `y_true` or `y_pred`.

    Used to pick the best checkpoint on the validation fold; classes seen in neither are
    left out so that a fold lacking, say, water is not penalised for it. 0.0 for empty input.
    """
    cm = confusion_counts(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    present = union > 0
    if not present.any():
        return 0.0
    return float(np.mean(tp[present] / union[present]))


def macro_f1(y_true: Any, y_pred: Any, n_classes: int) -> float:
    """Macro F1 over the classes present in `y_true` (see module docstring); 0.0 if empty."""
    y_true = _labels_1d(y_true, "y_true")
    y_pred = _labels_1d(y_pred, "y_pred")
    present = np.unique(y_true)
    if present.size == 0:
        return 0.0
    _, _, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average=None, zero_division=0.0
    )
    return float(np.mean(f1))


def group_f1(y_true: Any, y_pred: Any, positive: Sequence[int]) -> float | None:
    """Binary F1 of a group of classes (e.g. snow + shadowed snow) against the rest; None
    when the group is neither present nor predicted."""
    t = np.isin(_labels_1d(y_true, "y_true"), list(positive))
    p = np.isin(_labels_1d(y_pred, "y_pred"), list(positive))
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    return None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def reliability_bins(probs: Any, y: Any, n_bins: int = 100) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top label.

    Bins are [k/n, (k+1)/n), the last one closed at 1. Empty bins have count 0 and NaN means.
    """
    probs = _as_numpy(probs).astype(np.float64, copy=False)
    y = _labels_1d(y, "y")
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = len(y) = {y.shape[0]}, got {probs.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(probs: Any, y: Any, n_bins: int = 100) -> float:
    """Top-label ECE: sum over bins of |accuracy - confidence| weighted by the bin's share."""
    bins = reliability_bins(probs, y, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return 0.0
    used = bins["count"] > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(gap * bins["count"][used]) / n)


def _group_scores(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_classes: int
) -> dict[str, dict[str, float | int]]:
    out: dict[str, dict[str, float | int]] = {}
    for g in sorted(np.unique(groups), key=str):
        sel = groups == g
        out[str(g)] = {
            "macro_f1": macro_f1(y_true[sel], y_pred[sel], n_classes),
            "n": int(sel.sum()),
        }
    return out


def _none_if_nan(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def evaluate(
    y_true: Any,
    probs: Any,
    table: Any,
    class_names: Sequence[str],
    *,
    ece_bins: int = 100,
) -> dict[str, Any]:
    """All scores of one set of predictions, as a JSON-able dict.

    `probs` (N, C) are class probabilities (argmax = prediction); `table` is the PatchSet table
    (or any DataFrame/dict of columns) aligned with `y_true`; its `glacier`, `region` and
    `sensor` columns give the group scores (a missing column is skipped). Classes without
    reference labels are listed in `absent_classes` and `warnings` and warned about.
    """
    y_true = _labels_1d(y_true, "y_true")
    probs = _as_numpy(probs)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (y_true.shape[0], n_classes):
        raise ValueError(
            f"probs must have shape (N={y_true.shape[0]}, C={n_classes}), got {probs.shape}"
        )
    if y_true.size and (y_true.min() < 0 or y_true.max() >= n_classes):
        raise ValueError(f"y_true has codes outside 0..{n_classes - 1}")
    y_pred = probs.argmax(axis=1).astype(np.int64)
    n = int(y_true.shape[0])
    columns = _columns(table, n)

    labels = np.arange(n_classes)
    if n:
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=None, zero_division=0.0
        )
    else:  # an empty set: everything absent, scores 0, no crash
        precision = recall = f1 = np.zeros(n_classes)
        support = np.zeros(n_classes, dtype=np.int64)
    cm = confusion_counts(y_true, y_pred, n_classes)
    predicted = cm.sum(axis=0)
    present = support > 0
    absent = [class_names[k] for k in labels[~present]]
    messages = []
    if absent:
        messages.append(
            f"classes without reference labels (left out of macro F1): {', '.join(absent)}"
        )
        warnings.warn(messages[-1], UserWarning, stacklevel=2)

    per_class: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(class_names):
        per_class[name] = {
            # precision is undefined when the class is never predicted, recall when absent
            "precision": float(precision[k]) if predicted[k] > 0 else None,
            "recall": float(recall[k]) if present[k] else None,
            "f1": float(f1[k]) if present[k] else None,
            "support": int(support[k]),
            "predicted": int(predicted[k]),
        }
    with np.errstate(invalid="ignore", divide="ignore"):
        row_norm = np.where(
            cm.sum(axis=1, keepdims=True) > 0, cm / cm.sum(axis=1, keepdims=True), 0.0
        )

    result: dict[str, Any] = {
        "n": n,
        "classes": list(class_names),
        "macro_f1": float(np.mean(f1[present])) if present.any() else 0.0,
        "accuracy": float(np.mean(y_true == y_pred)) if n else 0.0,
        "mean_iou": mean_iou(y_true, y_pred, n_classes),
        "ece": expected_calibration_error(probs, y_true, ece_bins) if n else 0.0,
        "ece_bins": ece_bins,
        "per_class": per_class,
        "absent_classes": absent,
        "confusion": {
            "rows": "reference",
            "columns": "predicted",
            "counts": cm.tolist(),
            "normalised": np.round(row_norm, 6).tolist(),
        },
    }

    if "glacier" in columns:
        per_glacier = _group_scores(y_true, y_pred, columns["glacier"], n_classes)
        scores = np.array([v["macro_f1"] for v in per_glacier.values()], dtype=np.float64)
        result["glacier_wise"] = {
            "macro_f1_mean": float(scores.mean()) if scores.size else None,
            "macro_f1_std": float(scores.std(ddof=0)) if scores.size else None,
            "n_glaciers": int(scores.size),
            "per_glacier": per_glacier,
        }
    if "region" in columns:
        result["per_region"] = _group_scores(y_true, y_pred, columns["region"], n_classes)
    if "sensor" in columns:
        result["per_sensor"] = _group_scores(y_true, y_pred, columns["sensor"], n_classes)
    result["warnings"] = messages
    return result


def _columns(table: Any, n: int) -> dict[str, np.ndarray]:
    """The group columns of `table` (DataFrame, dict of arrays or None) as arrays of length n."""
    if table is None:
        return {}
    out = {}
    for col in ("glacier", "region", "sensor"):
        if col in table:
            values = np.asarray(table[col])
            if values.shape[0] != n:
                raise ValueError(f"table has {values.shape[0]} rows but there are {n} labels")
            out[col] = values.astype(str)
    return out


def row_normalised(counts: Any) -> np.ndarray:
    """Confusion counts divided by their row sums (recall per reference class); empty rows 0."""
    cm = np.asarray(counts)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
