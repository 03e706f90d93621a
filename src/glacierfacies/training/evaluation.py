"""Scores of a finished run: out-of-fold metrics, calibration, summary lines.

Numbers only: the evaluation writes RUN_DIR/figure_data.json (confusion matrices, reliability
bins before and after calibration) beside metrics.json, and `workflow.figures` draws them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import check_output, write_json
from glacierfacies.errors import InputError
from glacierfacies.layout import fold_model_path, get_filepath
from glacierfacies.training.calibration import tempered_softmax

__all__ = ["evaluate_run", "metrics_summary_lines", "run_evaluation"]


def run_evaluation(patchset: Any, run_dir: str | os.PathLike,
                   flipped: Any | None = None) -> dict[str, Any]:
    """Scores of the final round's out-of-fold predictions (the metrics.json entries) and
    RUN_DIR/figure_data.json (the numbers of the confusion and reliability figures).

    Uses round 2 when present (else round 1). Probabilities are calibrated with each fold
    model's temperature. `flipped` (a table with point_id, e.g. the sample's
    flipped_labels.csv) adds the cleaning detection rate and precision.
    """
    from glacierfacies.training.calibration import calibrated_probs, reliability
    from glacierfacies.training.metrics import evaluate, expected_calibration_error

    run_dir = Path(run_dir)
    round_no = 2 if get_filepath("oof_logits", run_dir, round=2).is_file() else 1
    oof_path = get_filepath("oof_logits", run_dir, round=round_no)
    if not oof_path.is_file():
        raise InputError(run_dir, "no trained round found; run `glacierfacies train` first")
    logits = np.load(oof_path)
    oof_fold = np.load(get_filepath("oof_fold", run_dir, round=round_no))
    labels = np.asarray(patchset.labels, dtype=np.int64)
    if logits.shape[0] != len(labels):
        raise InputError(run_dir, f"run has {logits.shape[0]} predictions, dataset {len(labels)} points")
    k = int(oof_fold.max()) + 1
    temps = np.ones(k)
    probs_raw = tempered_softmax(logits)
    probs = np.empty_like(probs_raw)
    methods = set()
    decisions = []
    for t in range(k):
        with np.load(get_filepath("fold_predictions", run_dir, round=round_no, fold=t)) as z:
            temps[t] = float(z["temperature"])
        card_path = fold_model_path(run_dir, round_no, t).with_suffix(".json")
        cal = (json.loads(card_path.read_text()).get("calibration") if card_path.is_file()
               else None) or {"method": "temperature", "temperature": temps[t]}
        methods.add(cal["method"])
        decisions.append({"fold": t, "method": cal["method"],
                          **{key: cal[key] for key in ("temperature", "val_ece_before",
                                                       "val_ece_after", "reason") if key in cal}})
        rows = oof_fold == t
        probs[rows] = calibrated_probs(logits[rows], cal)
    class_names = list(patchset.class_names)
    flagged_path = get_filepath("flagged", run_dir)
    flagged = np.load(flagged_path) if flagged_path.is_file() else np.zeros(len(labels), bool)
    keep = ~flagged
    table = patchset.table.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cleaned = evaluate(labels[keep], probs[keep], table[keep].reset_index(drop=True), class_names)
        unpruned = evaluate(labels, probs, table, class_names)
    rel = reliability(probs_raw[keep], probs[keep], labels[keep])
    eces = rel.pop("eces")
    write_json(get_filepath("figure_data", run_dir), {
        "round": round_no, "classes": class_names,
        "confusion": {name: {"title": f"round {round_no}, {name} test folds",
                             "counts": scores["confusion"]["counts"]}
                      for name, scores in (("cleaned", cleaned), ("unpruned", unpruned))},
        "reliability": rel}, strict=True)
    result: dict[str, Any] = {
        "round": round_no,
        "macro_f1_cleaned": cleaned["macro_f1"],
        "macro_f1_unpruned": unpruned["macro_f1"],
        "cleaned": cleaned,
        "unpruned": unpruned,
        "calibration": {
            "method": f"{'/'.join(sorted(methods))} (per fold, fitted on its validation fold)",
            "temperatures": temps.tolist(),
            "ece_before": expected_calibration_error(probs_raw[keep], labels[keep], 100),
            "ece_after": expected_calibration_error(probs[keep], labels[keep], 100),
            "ece_before_unpruned": expected_calibration_error(probs_raw, labels, 100),
            "ece_after_unpruned": expected_calibration_error(probs, labels, 100),
            "ece_bins": 100, "diagram_eces": eces,
            "rule": "kept only where it lowers the validation-fold ECE, else identity",
            "folds": decisions,
        },
        "cleaning": {"n_flagged": int(flagged.sum()),
                     "fraction": float(flagged.mean()) if len(flagged) else 0.0},
    }
    result["n_pruned"] = result["cleaning"]["n_flagged"]
    if flipped is not None:
        result["flip_detection"] = _flip_detection(table, flagged, flipped)
        result["cleaning"].update(result["flip_detection"])
    summary = get_filepath("cleaning_summary", run_dir)
    if summary.is_file():
        result["cleaning"]["summary"] = json.loads(summary.read_text())
    return result


def _flip_detection(table: Any, flagged: np.ndarray, flipped: Any) -> dict[str, Any]:
    """Recall/precision of the flags against known deliberately flipped labels."""
    from glacierfacies.training.cleaning import score_against_truth

    ids = table["point_id"].astype(str).to_numpy()
    score = score_against_truth(ids[flagged], flipped, dataset_point_ids=ids)
    return {
        "flipped_in_dataset": int(np.isin(ids, np.asarray(flipped["point_id"]).astype(str)).sum()),
        "flipped_facies_in_dataset": score["n_flipped"],
        "flipped_facies_flagged_recall": score["recall"] or 0.0,
        "flag_precision": score["precision"] or 0.0,
    }


def evaluate_run(run_dir: str | os.PathLike, dataset: str | os.PathLike | None = None,
                 *, out: str | os.PathLike | None = None, overwrite: bool = False
                 ) -> dict[str, Any]:
    """Recompute a run's metrics (and figure_data.json) from the stored out-of-fold
    predictions.

    The metrics of RUN_DIR/metrics.json, updated, go to `out` (default that same file); an
    existing `out` is an InputError unless `overwrite`, and then nothing is written.
    """
    from glacierfacies.data.patchset import PatchSet

    run_dir = Path(run_dir)
    dest = check_output(Path(out) if out is not None else get_filepath("metrics", run_dir),
                        overwrite=overwrite)
    info_path = get_filepath("train_run", run_dir)
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    dataset = dataset or info.get("dataset")
    if not dataset:
        raise InputError(run_dir, "no dataset recorded in run.json; pass --dataset")
    ps = PatchSet.load(dataset)
    scores = run_evaluation(ps, run_dir, flipped=_flipped_table(ps, info.get("flipped_labels")))
    prev = get_filepath("metrics", run_dir)
    old = json.loads(prev.read_text()) if prev.is_file() else {}
    old.update(scores)
    old["dataset"] = str(dataset)
    write_json(dest, old)
    return old


def metrics_summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A few human lines of a run's metrics for the CLI."""
    lines = []
    if "macro_f1_cleaned" in metrics:
        lines.append(f"macro F1 (round {metrics.get('round')}): cleaned test folds "
                     f"{metrics['macro_f1_cleaned']:.3f}, unpruned {metrics['macro_f1_unpruned']:.3f}")
        gw = metrics.get("cleaned", {}).get("glacier_wise")
        if gw and gw.get("macro_f1_mean") is not None:
            lines.append(f"glacier-wise macro F1 (cleaned): {gw['macro_f1_mean']:.3f} "
                         f"+- {gw['macro_f1_std']:.3f} over {gw['n_glaciers']} glaciers")
        cal = metrics.get("calibration", {})
        if cal:
            line = (f"ECE (100 bins): {cal['ece_before']:.4f} before, "
                    f"{cal['ece_after']:.4f} after calibration")
            if "ece_after_unpruned" in cal:
                line += (f" (unpruned test folds: {cal['ece_before_unpruned']:.4f} -> "
                         f"{cal['ece_after_unpruned']:.4f})")
            kept = [f for f in cal.get("folds", []) if f["method"] == "none"]
            if kept:
                line += f"; identity kept in {len(kept)} fold(s)"
            lines.append(line)
    cl = metrics.get("cleaning")
    if cl:
        line = f"confident learning flagged {cl['n_flagged']} labels ({cl['fraction']:.1%})"
        if "flipped_facies_flagged_recall" in cl:
            line += (f"; known flipped facies labels found: "
                     f"{cl['flipped_facies_flagged_recall']:.1%}, precision {cl['flag_precision']:.1%}")
        lines.append(line)
    for w in metrics.get("warnings", []):
        lines.append(f"warning: {w}")
    t = metrics.get("timings")
    if t:
        lines.append("time: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()))
    return lines


def _flipped_table(patchset: Any, flipped_csv: str | os.PathLike | None) -> Any:
    """The known flipped labels: the given CSV, else flipped_labels.csv beside the labels."""
    import pandas as pd

    path = Path(flipped_csv) if flipped_csv else None
    if path is None:
        labels = (getattr(patchset, "provenance", None) or {}).get("labels")
        if labels and (Path(labels).parent / "flipped_labels.csv").is_file():
            path = Path(labels).parent / "flipped_labels.csv"
    if path is None:
        return None
    if not path.is_file():
        raise InputError(path, "flipped-labels table does not exist")
    table = pd.read_csv(path)
    if "point_id" not in table:
        raise InputError(path, "flipped-labels table lacks a point_id column")
    return table
