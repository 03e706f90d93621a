"""Confident learning on out-of-fold probabilities: find likely wrong labels, export for review.

`find_noisy_labels` runs cleanlab's `find_label_issues` (Northcutt et al., confident
learning) on probabilities that each point received from a model that never saw it (the
first-round models' test-fold predictions). Only labels whose *given* class is a facies
(ice, snow, debris, firn, refrozen-like, by default) can be flagged, as in the paper: the
miscellaneous classes (shadow, water, cloud) are never pruned.

`filter_by="prune_by_noise_rate"` (cleanlab's default and the confident-learning paper's
recommended rule) is used: it estimates, from the confident joint, how many labels of each
given class are wrong and removes that many per (given, suggested) pair, choosing those with
the largest margin p(suggested) - p(given). It is less aggressive than "predicted_neq_given"
(which flags every disagreement, including honest mistakes of the model) and better matched to
the paper's "prune ~16% of labels" than the more conservative "confident_learning" off-diagonal
rule. Pass another `filter_by` to compare.

`write_review` is the only function with file I/O (CSV + GeoPackage for QGIS); geopandas is
imported inside it so the maths runs on a box with numpy/scipy/sklearn/cleanlab only.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES, FACIES_CODES, class_index

REVIEW_CSV = "label_review.csv"


REVIEW_GPKG = "label_review.gpkg"


REVIEW_LAYER = "flagged_labels"


def _codes(classes: Sequence[int | str]) -> np.ndarray:
    """Class codes from codes or names (names via `classes.class_index`)."""
    return np.array(
        [int(c) if isinstance(c, (int, np.integer)) else class_index(str(c)) for c in classes],
        dtype=np.int64,
    )


def find_noisy_labels(
    labels: Any,
    oof_probs: Any,
    prune_classes: Sequence[int | str] = FACIES_CODES,
    seed: int = 0,
    *,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
) -> np.ndarray:
    """Boolean mask, True where the given label is likely wrong and its class may be pruned.

    `labels` (N,) given class codes; `oof_probs` (N, C) out-of-fold probabilities (rows of
    points that no model saw during training). `seed` fixes numpy's global RNG for the call
    (restored afterwards); cleanlab's filter is deterministic, the seed only guards ties in
    future versions. Runs single-process (`n_jobs=1`) so results do not depend on the machine.
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(oof_probs, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"labels (N,) and oof_probs (N, C) disagree: {labels.shape} vs {probs.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels have codes outside 0..{probs.shape[1] - 1}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("oof_probs contain NaN/inf: every point needs an out-of-fold prediction")
    prunable = np.isin(labels, _codes(prune_classes))
    if labels.size == 0 or not prunable.any():
        return np.zeros(labels.shape[0], dtype=bool)
    # cleanlab expects rows summing to 1 (softmax output); renormalise float error away
    probs = probs / probs.sum(axis=1, keepdims=True)

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # cleanlab warns for classes with (almost) no given labels, e.g. no cloud in a set
            warnings.filterwarnings("ignore", message="May not flag all label issues in class")
            issues = find_label_issues(
                labels, probs, filter_by=filter_by, frac_noise=frac_noise, n_jobs=1
            )
    finally:
        np.random.set_state(state)
    return np.asarray(issues, dtype=bool) & prunable


def review_table(
    table: Any,
    labels: Any,
    oof_probs: Any,
    mask: Any,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Any:
    """pandas table of the flagged points, least self-confident first (the review order).

    Columns: point_id, glacier, scene_id, given_class, suggested_class, self_confidence
    (out-of-fold probability of the given class), suggested_confidence, then date, sensor,
    region, x, y where present, and an empty `decision` column for the reviewer.
    """
    import pandas as pd

    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(oof_probs, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not (len(table) == labels.shape[0] == probs.shape[0] == mask.shape[0]):
        raise ValueError(
            f"table ({len(table)}), labels {labels.shape}, oof_probs {probs.shape} and mask "
            f"{mask.shape} must have one row per point"
        )
    idx = np.flatnonzero(mask)
    names = np.asarray(class_names, dtype=object)
    suggested = probs[idx].argmax(axis=1)
    out = pd.DataFrame(
        {
            "point_id": np.asarray(table["point_id"])[idx],
            "glacier": np.asarray(table["glacier"])[idx],
            "scene_id": np.asarray(table["scene_id"])[idx],
            "given_class": names[labels[idx]],
            "suggested_class": names[suggested],
            "self_confidence": probs[idx, labels[idx]],
            "suggested_confidence": probs[idx, suggested],
        }
    )
    for col in ("date", "sensor", "region", "x", "y"):
        if col in table:
            out[col] = np.asarray(table[col])[idx]
    out["decision"] = ""
    return out.sort_values(["self_confidence", "point_id"], kind="mergesort", ignore_index=True)


def write_review(
    table: Any,
    labels: Any,
    oof_probs: Any,
    mask: Any,
    class_names: Sequence[str],
    out_dir: str | os.PathLike,
    crs: Any,
) -> dict[str, Path]:
    """Write the flagged labels for expert review: CSV and a point GeoPackage for QGIS.

    Points are built from the table's `x`/`y` in `crs` (the PatchSet's point CRS). Returns
    `{"csv": path, "gpkg": path}`; both files are written atomically.
    """
    import geopandas as gpd

    from glacierfacies._io import atomic_output
    from glacierfacies.errors import InputError

    for col in ("x", "y", "point_id", "glacier", "scene_id"):
        if col not in table:
            raise InputError(None, f"point table lacks column {col!r} needed for the label review")
    if crs is None:
        raise InputError(None, "label review needs the CRS of the points' x/y")
    review = review_table(table, labels, oof_probs, mask, class_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / REVIEW_CSV, "gpkg": out_dir / REVIEW_GPKG}

    with atomic_output(paths["csv"]) as tmp:
        review.to_csv(tmp, index=False, float_format="%.6g")

    gdf = gpd.GeoDataFrame(
        review.astype({"point_id": str, "glacier": str, "scene_id": str}),
        geometry=gpd.points_from_xy(review["x"], review["y"]),
        crs=crs,
    )
    if "date" in gdf:
        gdf["date"] = gdf["date"].astype(str)
    with atomic_output(paths["gpkg"]) as tmp, warnings.catch_warnings():
        # the temporary name ends in .tmp until the rename; GDAL warns about the extension
        warnings.filterwarnings("ignore", message="The filename extension should be")
        gdf.to_file(tmp, layer=REVIEW_LAYER, driver="GPKG", engine="pyogrio")
    return paths


def score_against_truth(
    flagged_point_ids: Any,
    flipped_point_ids: Any,
    *,
    flipped_given_classes: Any = None,
    prune_classes: Sequence[int | str] = FACIES_CODES,
    dataset_point_ids: Any = None,
) -> dict[str, Any]:
    """Recall and precision of the flagged labels against the known flipped labels.

    Only flipped labels whose *given* class may be pruned (facies by default) count: the
    others can never be flagged. Pass the given classes with `flipped_given_classes`, or pass
    the `flipped_labels.csv` table itself (columns point_id, given_class) as
    `flipped_point_ids`. Without given classes all flipped ids count. `dataset_point_ids`
    (e.g. the PatchSet table's point_id) further restricts them to points that made it into
    the dataset (a point off the scene's valid data never got a patch, so cannot be flagged).
    """
    if hasattr(flipped_point_ids, "columns") and "point_id" in flipped_point_ids.columns:
        frame = flipped_point_ids
        if flipped_given_classes is None and "given_class" in frame.columns:
            flipped_given_classes = frame["given_class"].to_numpy()
        flipped_point_ids = frame["point_id"].to_numpy()
    flipped_ids = np.asarray(flipped_point_ids).astype(str)
    n_flipped_total = int(flipped_ids.size)
    if flipped_given_classes is not None:
        given = _codes(list(flipped_given_classes))
        if given.shape != flipped_ids.shape:
            raise ValueError("flipped_given_classes must align with flipped_point_ids")
        flipped_ids = flipped_ids[np.isin(given, _codes(prune_classes))]
    if dataset_point_ids is not None:
        flipped_ids = flipped_ids[np.isin(flipped_ids, np.asarray(dataset_point_ids).astype(str))]
    flipped = set(flipped_ids.tolist())
    flagged = set(np.asarray(flagged_point_ids).astype(str).tolist())
    hits = len(flagged & flipped)
    recall = hits / len(flipped) if flipped else None
    precision = hits / len(flagged) if flagged else None
    f1 = (
        2 * recall * precision / (recall + precision)
        if recall is not None and precision is not None and recall + precision > 0
        else None
    )
    return {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "n_flagged": len(flagged),
        "n_flipped": len(flipped),
        "n_flipped_total": n_flipped_total,
        "n_true_positive": hits,
        "restricted_to": [CLASS_NAMES[c] for c in _codes(prune_classes)]
        if flipped_given_classes is not None
        else None,
    }

