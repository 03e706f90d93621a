"""The k-fold protocol: round 1, confident learning, round 2, each fold resumable.

Every fold of every round, and the cleaning step, is a stage of `tasks.StageLog` (markers in
RUN_DIR/stages): a rerun skips the stages whose fingerprint (training configuration
signature, fold split, labels) matches. Inside an unfinished fold, training resumes from its
mid-fold checkpoint (checkpoints are not stages).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glacierfacies._io import atomic_output, write_json
from glacierfacies.errors import InputError, RunStateError
from glacierfacies.layout import COMPLETE_MARKER, fold_model_path, get_filepath, models_dir
from glacierfacies.model.card import ModelCard, save_model
from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.tasks import StageLog, fingerprint
from glacierfacies.training.calibration import tempered_softmax
from glacierfacies.training.config import STAGES, TrainConfig
from glacierfacies.training.evaluation import _flipped_table, run_evaluation
from glacierfacies.training.loop import (
    _Data,
    _fit_norm,
    _Normaliser,
    predict_logits,
    prepare_training_data,
    sample_weights,
    selected_features,
    train_fold,
)

__all__ = ["fold_splits", "run_cleaning", "run_protocol", "run_round", "train_dataset"]

BatchHook = Callable[[int, int, int, int], None]
Log = Callable[[str], None]


def fold_splits(patchset: Any, keep: np.ndarray | None = None
                ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """[(t, train, val, test)] per test fold t: val = (t - 1) mod k, train = the rest.

    `keep` (bool, cleaned set) removes points from train and val; test is never filtered
    (the caller scores cleaned and unpruned test points). Folds must not share a glacier.
    """
    table = patchset.table
    folds = table["fold"].to_numpy(dtype=np.int64)
    k = int(getattr(patchset, "fold_config", {}).get("k", 0) or len(np.unique(folds)))
    if (folds < 0).any() or (folds >= k).any():
        raise InputError(None, f"fold column must hold 0..{k - 1}, got {np.unique(folds)}")
    if k < 3:
        raise InputError(None, f"the protocol needs >= 3 folds (test, validation, train), got {k}")
    glaciers = table["glacier"].astype(str).to_numpy()
    per_glacier = {g: np.unique(folds[glaciers == g]) for g in np.unique(glaciers)}
    split = {g: f.tolist() for g, f in per_glacier.items() if len(f) > 1}
    if split:
        g = next(iter(split))
        raise InputError(None, f"glacier {g} lies in folds {split[g]}: folds must be "
                               "glacier-disjoint (no glacier in both training and test)")
    keep = np.ones(len(folds), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    out = []
    for t in range(k):
        v = (t - 1) % k
        test = np.flatnonzero(folds == t)
        val = np.flatnonzero((folds == v) & keep)
        train = np.flatnonzero((folds != t) & (folds != v) & keep)
        out.append((t, train, val, test))
    return out


def _macro_f1(y: np.ndarray, logits: np.ndarray, n_classes: int) -> float | None:
    from glacierfacies.training.metrics import macro_f1

    return macro_f1(y, logits.argmax(1), n_classes) if len(y) else None


def _digest(*arrays: np.ndarray) -> str:
    """Short hash of arrays' contents (the fold split, labels, out-of-fold logits)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _stage_log(run_dir: Path, log: Log | None) -> StageLog:
    return StageLog(get_filepath("train_stages", run_dir), log=log, root=run_dir)


def _train_one_fold(
    patchset: Any, cfg: TrainConfig, run_dir: Path, round_no: int, keep: np.ndarray | None,
    data: _Data, split: tuple[int, np.ndarray, np.ndarray, np.ndarray], k: int, *,
    progress: bool, on_batch: BatchHook | None,
) -> dict[str, Any]:
    """One fold of a round: train, predict test and validation, calibrate; write the model
    (+ card) and the predictions. Returns the stage summary."""
    from glacierfacies.training.calibration import choose_calibration

    t, train_idx, val_idx, test_idx = split
    if len(train_idx) < 2:
        raise InputError(None, f"round {round_no} fold {t}: fewer than 2 training points")
    device = data.x.device
    n, n_classes = len(data.labels), len(data.class_names)
    table = patchset.table
    scenes = table["scene_id"].astype(str).to_numpy()
    t0 = time.perf_counter()
    norm = _fit_norm(data, train_idx)
    weights = np.zeros(n, dtype=np.float32)
    weights[train_idx] = sample_weights(data.labels[train_idx], scenes[train_idx],
                                        cfg.class_weight_power)
    res = train_fold(data, train_idx, val_idx, cfg, norm, weights, round_no=round_no, fold=t,
                     ckpt_path=get_filepath("fold_checkpoint", run_dir, round=round_no, fold=t),
                     progress=progress, on_batch=on_batch)
    model = TwoScaleCNN(**res["architecture"]).to(device)
    model.load_state_dict(res["state_dict"])
    normalise = _Normaliser(norm, device)
    test_logits = predict_logits(model, data.x, test_idx, normalise, cfg.eval_batch_size)
    val_logits = predict_logits(model, data.x, val_idx, normalise, cfg.eval_batch_size)
    calibration = choose_calibration(val_logits, data.labels[val_idx], cfg.calibration)
    temperature = float(calibration.get("temperature", 1.0))
    y_test = data.labels[test_idx]
    cleaned = np.ones(len(test_idx), bool) if keep is None else np.asarray(keep)[test_idx]
    fold_metrics = {
        "best_epoch": res["best_epoch"], "best_val_mean_iou": res["best_val_mean_iou"],
        "stopped_early": res["stopped_early"], "history": res["history"],
        "test_macro_f1_unpruned": _macro_f1(y_test, test_logits, n_classes),
        "test_macro_f1_cleaned": _macro_f1(y_test[cleaned], test_logits[cleaned], n_classes),
        "train_seconds": time.perf_counter() - t0,
    }
    card = ModelCard(
        features=list(data.feature_names), classes=list(data.class_names),
        patch_size=data.patch_size, normalisation=norm, architecture=res["architecture"],
        training=cfg.to_dict(),
        calibration=calibration,
        resolution_m=data.resolution_m,
        metrics=fold_metrics,
        fold={"round": round_no, "test_fold": t, "validation_fold": (t - 1) % k,
              "train_folds": sorted(set(range(k)) - {t, (t - 1) % k}),
              "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
              "test_glaciers": sorted(set(table["glacier"].astype(str).iloc[test_idx])),
              # the classes this model can predict: a map's products say what it cannot see
              "classes_trained": sorted({str(data.class_names[c])
                                         for c in set(data.labels[train_idx].tolist())})},
    )
    save_model(model, card, fold_model_path(run_dir, round_no, t))
    with atomic_output(get_filepath("fold_predictions", run_dir, round=round_no, fold=t)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, test_idx=test_idx, test_logits=test_logits, val_idx=val_idx,
                     val_logits=val_logits, temperature=temperature)
    return {"temperature": float(temperature), "best_epoch": res["best_epoch"],
            "test_macro_f1_unpruned": fold_metrics["test_macro_f1_unpruned"],
            "test_macro_f1_cleaned": fold_metrics["test_macro_f1_cleaned"]}


def run_round(
    patchset: Any,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    round_no: int,
    keep: np.ndarray | None = None,
    *,
    progress: bool = True,
    data: _Data | None = None,
    on_batch: BatchHook | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train all k fold models of a round, each fold a stage (finished folds are skipped,
    an unfinished one resumes from its checkpoint).

    Writes the fold models + cards and predictions; returns out-of-fold test logits
    (N, C), the test fold of each point, per-fold temperatures and warnings.
    """
    run_dir = Path(run_dir)
    get_filepath("predictions", run_dir, round=round_no).mkdir(parents=True, exist_ok=True)
    models_dir(run_dir, round_no).mkdir(parents=True, exist_ok=True)
    marker = models_dir(run_dir, round_no) / COMPLETE_MARKER  # written again after the last fold
    marker.unlink(missing_ok=True)
    data = data or prepare_training_data(patchset, cfg, cfg.resolved_device())
    n, n_classes = len(data.labels), len(data.class_names)
    oof = np.full((n, n_classes), np.nan, dtype=np.float32)
    oof_fold = np.full(n, -1, dtype=np.int64)
    folds_info, warn = [], []
    splits = fold_splits(patchset, keep)
    k = len(splits)
    stages = _stage_log(run_dir, log)
    for split in splits:
        t, train_idx, val_idx, test_idx = split
        pred_path = get_filepath("fold_predictions", run_dir, round=round_no, fold=t)
        absent = [data.class_names[c] for c in range(n_classes)
                  if c in set(data.labels.tolist()) and c not in set(data.labels[train_idx].tolist())]
        if absent:
            msg = f"round {round_no} fold {t}: class(es) {', '.join(absent)} absent from the training folds"
            warn.append(msg)
            warnings.warn(msg, stacklevel=2)
        name = f"round{round_no}_fold{t}"
        fp = fingerprint({"config": cfg.signature(), "round": round_no, "fold": t,
                          "split": _digest(train_idx, val_idx, test_idx),
                          "labels": _digest(data.labels)})
        model_path = fold_model_path(run_dir, round_no, t)
        if not (pred_path.is_file() and model_path.is_file()):
            stages.invalidate([name])  # a finished fold's outputs were removed: train again
        stages.run(name, fp, functools.partial(
            _train_one_fold, patchset, cfg, run_dir, round_no, keep, data, split, k,
            progress=progress, on_batch=on_batch),
            outputs=(model_path, model_path.with_suffix(".json"), pred_path))
        get_filepath("fold_checkpoint", run_dir, round=round_no, fold=t).unlink(missing_ok=True)
        with np.load(pred_path) as z:
            if not np.array_equal(z["test_idx"], test_idx):
                raise RunStateError(pred_path, "predictions of another data split; use a new RUN_DIR")
            oof[test_idx] = z["test_logits"]
            oof_fold[test_idx] = t
            temperature = float(z["temperature"])
        folds_info.append({"test_fold": t, "temperature": temperature,
                           "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx)})
    np.save(get_filepath("oof_logits", run_dir, round=round_no), oof)
    np.save(get_filepath("oof_fold", run_dir, round=round_no), oof_fold)
    write_json(marker, {"round": round_no, "folds": k,
                        "models": [fold_model_path(run_dir, round_no, f["test_fold"]).name
                                   for f in folds_info]})
    return {"oof_logits": oof, "oof_fold": oof_fold, "folds": folds_info, "warnings": warn}


def _clean(patchset: Any, cfg: TrainConfig, run_dir: Path, labels: np.ndarray,
           probs: np.ndarray) -> dict[str, Any]:
    """The cleaning stage: flags, label review files and RUN_DIR/cleaning/summary.json."""
    from glacierfacies.training.cleaning import find_noisy_labels, write_review

    mask = find_noisy_labels(labels, probs, list(cfg.prune_classes))
    out = get_filepath("cleaning", run_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = patchset.table
    crs = None
    if "crs" in table and len(table):
        crs = str(table["crs"].iloc[0]) or None
    paths = write_review(table, labels, probs, mask, list(patchset.class_names), out, crs) \
        if crs else {}
    with atomic_output(get_filepath("flagged", run_dir)) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, mask)
    names = list(patchset.class_names)
    per_class = {names[c]: int(mask[labels == c].sum()) for c in range(len(names))}
    summary = {"n_flagged": int(mask.sum()), "fraction": float(mask.mean()) if len(mask) else 0.0,
               "per_class": per_class, "prune_classes": list(cfg.prune_classes),
               "files": {k: str(v) for k, v in paths.items()}}
    write_json(get_filepath("cleaning_summary", run_dir), summary)
    return summary


def run_cleaning(patchset: Any, cfg: TrainConfig, run_dir: str | os.PathLike, *,
                 log: Log | None = None) -> dict[str, Any]:
    """Confident learning on the round-1 out-of-fold probabilities only; review files.

    A stage: skipped when the round-1 predictions, labels and configuration are unchanged.
    """
    run_dir = Path(run_dir)
    oof_path = get_filepath("oof_logits", run_dir, round=1)
    if not oof_path.is_file():
        raise InputError(oof_path, "no round-1 predictions; run --stage round1 first")
    oof = np.load(oof_path)
    labels = np.asarray(patchset.labels, dtype=np.int64)
    if oof.shape[0] != len(labels) or not np.isfinite(oof).all():
        raise InputError(oof_path, "round-1 predictions do not match this dataset")
    probs = tempered_softmax(oof)
    stages = _stage_log(run_dir, log)
    flagged_path = get_filepath("flagged", run_dir)
    if not flagged_path.is_file():
        stages.invalidate(["clean"])
    fp = fingerprint({"config": cfg.signature(), "oof": _digest(oof), "labels": _digest(labels)})
    summary = stages.run("clean", fp, functools.partial(_clean, patchset, cfg, run_dir, labels,
                                                        probs),
                         outputs=(get_filepath("cleaning", run_dir),))
    return {"mask": np.load(flagged_path), **summary}


def run_protocol(
    patchset: Any,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    stage: str = "all",
    *,
    progress: bool = True,
    flipped: Any | None = None,
    dataset_path: str | os.PathLike | None = None,
    flipped_path: str | os.PathLike | None = None,
    on_batch: BatchHook | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """The paper's protocol (or one stage): round 1, cleaning, round 2, evaluation.

    Returns the metrics dict written to RUN_DIR/metrics.json (after round 2) or a stage
    summary. Reruns resume: finished folds are kept, unfinished ones restart from their
    last checkpoint. `on_batch` is called before every training batch (test hooks); `log`
    gets one line per stage run or skipped.
    """
    if stage not in STAGES:
        raise InputError(None, f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    run_dir = Path(run_dir)
    # everything that can be checked before RUN_DIR is created or written
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(existing, "is not a folder (cannot write inside a file)")
    cfg.resolved_device()
    selected_features(patchset, cfg)
    fold_splits(patchset)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = get_filepath("train_config", run_dir)
    if cfg_path.is_file():
        old = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
        if old.signature() != cfg.signature():
            raise RunStateError(cfg_path, "RUN_DIR holds a run with another configuration; "
                                          "use a new RUN_DIR (or the same options)")
    write_json(cfg_path, cfg.to_dict())
    if dataset_path is not None:  # lets `glacierfacies evaluate RUN_DIR` find the data
        write_json(get_filepath("train_run", run_dir), {
            "dataset": str(Path(dataset_path).resolve()),
            "flipped_labels": str(Path(flipped_path).resolve()) if flipped_path else None})
    if cfg.resolved_device().type == "cpu":
        torch.set_num_threads(cfg.threads)
    timings: dict[str, float] = {}
    device = cfg.resolved_device()
    data = None
    warn: list[str] = []
    out: dict[str, Any] = {}
    if stage in ("round1", "all"):
        t0 = time.perf_counter()
        data = prepare_training_data(patchset, cfg, device)
        r1 = run_round(patchset, cfg, run_dir, 1, progress=progress, data=data,
                       on_batch=on_batch, log=log)
        warn += r1["warnings"]
        timings["round1_s"] = time.perf_counter() - t0
        out["round1"] = {"folds": r1["folds"]}
    if stage in ("clean", "all"):
        t0 = time.perf_counter()
        out["cleaning"] = {k: v for k, v in run_cleaning(patchset, cfg, run_dir, log=log).items()
                           if k != "mask"}
        timings["cleaning_s"] = time.perf_counter() - t0
    if stage in ("round2", "all"):
        t0 = time.perf_counter()
        flagged_path = get_filepath("flagged", run_dir)
        if not flagged_path.is_file():
            raise InputError(flagged_path, "no cleaning result; run --stage clean first")
        keep = ~np.load(flagged_path)
        data = data or prepare_training_data(patchset, cfg, device)
        r2 = run_round(patchset, cfg, run_dir, 2, keep=keep, progress=progress, data=data,
                       on_batch=on_batch, log=log)
        warn += r2["warnings"]
        timings["round2_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_evaluation(patchset, run_dir, flipped=flipped)
        timings["evaluation_s"] = time.perf_counter() - t0
        out["folds"] = r2["folds"]
    prev = get_filepath("metrics", run_dir)
    if prev.is_file() and stage != "all":
        old = json.loads(prev.read_text())
        old.update(out)
        out = old
    out["warnings"] = sorted(set(out.get("warnings", [])) | set(warn)
                             | set(out.get("unpruned", {}).get("warnings", [])))
    out.setdefault("timings", {}).update(timings)
    out["config"] = cfg.to_dict()
    if dataset_path is not None:
        out["dataset"] = str(dataset_path)
    write_json(prev, out)
    return out


def train_dataset(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    stage: str = "all",
    *,
    flipped_csv: str | os.PathLike | None = None,
    progress: bool = True,
    on_batch: BatchHook | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Load a PatchSet folder and run the protocol (or one stage) into RUN_DIR."""
    from glacierfacies.data.patchset import PatchSet

    ps = PatchSet.load(dataset)
    flipped = _flipped_table(ps, flipped_csv)
    return run_protocol(ps, run_dir, cfg, stage, progress=progress, flipped=flipped,
                        dataset_path=dataset, flipped_path=flipped_csv, on_batch=on_batch,
                        log=log)
