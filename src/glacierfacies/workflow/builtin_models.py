"""Rebuild the built-in models from the real labelled points (`make models`).

The training protocol (2 rounds, confident learning between them) on Aberle et al.'s points,
4 folds = the 4 glaciers, so each fold model is trained on two glaciers, validated on a third
and tested on the fourth: its out-of-fold scores are leave-one-glacier-out scores. The four
round-2 fold models are the shipped ensemble. Seeded, on the CPU with one thread: the same
weights every time (tests/model/test_builtin.py checks the probabilities within 1e-4).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import write_json
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.errors import InputError
from glacierfacies.layout import fold_model_path, get_filepath
from glacierfacies.model.builtin import BUILTIN_DIR, BUILTIN_MODELS, PREFIX

__all__ = ["REBUILD_COMMAND", "SNOW_GROUP", "build_builtin", "builtin_config", "load_points",
           "logo_scores"]

REBUILD_COMMAND = "make models  (= glacierfacies models build --data ../shared/data/aberle --overwrite)"
#: the binary "snow" of the acceptance scores: snow and shadowed snow against the rest
SNOW_GROUP = ("snow", "shadow")
SOURCE = {
    "name": "Aberle et al., labelled points at the USGS benchmark glaciers (Gulkana, "
            "South Cascade, Sperry, Wolverine)",
    "url": "https://github.com/RaineyAbe/glacier-snow-cover-mapping",
    "licence": "MIT",
    "attribution": "Copyright (c) 2024 Rainey Aberle (MIT licence, LICENSE.md of the data)",
}


def builtin_config(**overrides: Any):
    """The training configuration of the built-in models: the `sample` preset (width 16,
    16 epochs), seed 0, CPU, one thread (deterministic), plus each model's `spec.train`."""
    from glacierfacies.training.config import TrainConfig

    base: dict[str, Any] = dict(seed=0, device="cpu", threads=1, checkpoint_every=0)
    base.update(overrides)
    return TrainConfig.sample(**base)


def load_points(name: str, data_dir: str | os.PathLike):
    """The PatchSet of a built-in model's training points (folds = glaciers)."""
    import warnings

    from glacierfacies.data.points import import_points

    spec = BUILTIN_MODELS[name]
    table = Path(data_dir) / spec.table
    if not table.is_file():
        raise InputError(table, "training table of the built-in model not found "
                                "(../shared/data/aberle)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return import_points(table, band_columns=spec.bands, offset=spec.offset,
                             class_map=spec.class_map, glacier_column=spec.glacier_column,
                             k_folds=4, seed=0, drop_conflicting=True)


def logo_scores(labels: np.ndarray, probs: np.ndarray, glaciers: np.ndarray,
                class_names=CLASS_NAMES) -> dict[str, Any]:
    """Per test glacier: binary snow F1 (snow + shadow vs the rest), macro F1, n; and the
    mean over glaciers."""
    from glacierfacies.training.metrics import group_f1, macro_f1

    pos = [list(class_names).index(c) for c in SNOW_GROUP]
    pred = probs.argmax(1)
    per = {}
    for g in sorted(set(glaciers.tolist())):
        sel = glaciers == g
        present = np.unique(labels[sel])
        per[g] = {"snow_f1": group_f1(labels[sel], pred[sel], pos),
                  "macro_f1": macro_f1(labels[sel], pred[sel], len(class_names)),
                  "accuracy": float((labels[sel] == pred[sel]).mean()), "n": int(sel.sum()),
                  "classes": [class_names[k] for k in present]}
    f1s = [v["snow_f1"] for v in per.values() if v["snow_f1"] is not None]
    return {"per_glacier": per, "mean_snow_f1": float(np.mean(f1s)),
            "positive": list(SNOW_GROUP)}


def _oof_probs(run_dir: Path, n: int) -> np.ndarray:
    """Round-2 out-of-fold probabilities, each fold under its model's calibration."""
    from glacierfacies.training.calibration import calibrated_probs

    logits = np.load(get_filepath("oof_logits", run_dir, round=2))
    fold = np.load(get_filepath("oof_fold", run_dir, round=2))
    probs = np.empty((n, logits.shape[1]))
    for t in np.unique(fold):
        card = json.loads(fold_model_path(run_dir, 2, int(t)).with_suffix(".json").read_text())
        probs[fold == t] = calibrated_probs(logits[fold == t], card["calibration"])
    return probs


def ensemble_probs(model_files, patchset) -> np.ndarray:
    """The shipped ensemble's probabilities on a PatchSet's points (what `predict` gives)."""
    from glacierfacies.mapping.points import predict_patches
    from glacierfacies.model.card import load_members

    return predict_patches(load_members(model_files), np.asarray(patchset.patches),
                           patchset.feature_names)


def build_builtin(name: str, data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  *, log: Callable[[str], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train built-in model `name` on its points and write it to OUT_DIR/NAME (default: the
    package's own folder). Returns its card (model.json)."""
    import torch

    from glacierfacies.model.card import load_model
    from glacierfacies.training.config import TrainConfig
    from glacierfacies.training.protocol import run_protocol
    from glacierfacies.workflow.config import versions

    if name not in BUILTIN_MODELS:
        raise InputError(None, f"unknown built-in model {name!r}; known: {', '.join(BUILTIN_MODELS)}")
    spec = BUILTIN_MODELS[name]
    dest = Path(out_dir or BUILTIN_DIR) / name
    ps = load_points(name, data_dir)
    cfg: TrainConfig = builtin_config(**{**dict(spec.train), **overrides})
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix=f"builtin_{name}_") as tmp:
        run_dir = Path(tmp) / "run"
        metrics = run_protocol(ps, run_dir, cfg, progress=False, log=log)
        probs = _oof_probs(run_dir, len(ps.labels))
        dest.mkdir(parents=True, exist_ok=True)
        for old in dest.glob("fold*"):
            old.unlink()
        files = []
        for src in sorted(get_filepath("final_models", run_dir).glob("fold*.pt")):
            files.append(Path(shutil.copy(src, dest / src.name)))
            shutil.copy(src.with_suffix(".json"), dest / src.with_suffix(".json").name)
    glaciers = ps.table["glacier"].astype(str).to_numpy()
    labels = np.asarray(ps.labels)
    ens = ensemble_probs(files, ps)
    ref_idx = np.concatenate([np.flatnonzero(labels == k)[:4] for k in np.unique(labels)])
    _, card0 = load_model(files[0])
    prov = ps.provenance
    counts = ps.table.groupby(["glacier", "class"]).size().unstack(fill_value=0)
    card = {
        "name": PREFIX + name,
        "sensors": list(spec.sensors),
        "features": list(card0.features),
        "band_columns": prov["band_columns"],
        "nir": spec.nir,
        "patch_size": 1,
        "classes": list(CLASS_NAMES),
        "classes_trained": sorted(set(ps.table["class"])),
        "members": [f.name for f in files],
        "training_data": {
            **SOURCE, "file": spec.table, "offset": spec.offset, "class_map": spec.class_map,
            "points_used": int(len(labels)), "dropped_missing": prov["dropped_missing"],
            "dropped_conflicting": prov["dropped_conflicting"],
            "per_glacier_class": {g: {c: int(v) for c, v in row.items()}
                                  for g, row in counts.iterrows()},
        },
        "protocol": "4 folds = the 4 glaciers; each fold model trained on 2 glaciers, its "
                    "best epoch chosen on a 3rd (validation), scored on the 4th; round 2 after "
                    "confident learning; the ensemble is the 4 round-2 fold models",
        "training": cfg.to_dict(),
        "rebuild": REBUILD_COMMAND,
        "leave_one_glacier_out": {
            **logo_scores(labels, probs, glaciers),
            "macro_f1_cleaned": metrics["macro_f1_cleaned"],
            "macro_f1_unpruned": metrics["macro_f1_unpruned"],
            "note": "out-of-fold (unpruned) test points of round 2: each glacier scored by "
                    "the fold model that never saw it",
        },
        "calibration": {k: v for k, v in metrics["calibration"].items() if k != "diagram_eces"},
        "cleaning": {"n_flagged": metrics["cleaning"]["n_flagged"],
                     "fraction": metrics["cleaning"]["fraction"]},
        "training_points_ensemble": {
            "macro_f1": _macro(labels, ens), "snow_f1": _snow(labels, ens),
            "reference_point_index": ref_idx.tolist(),
            "reference_values": np.asarray(ps.patches)[ref_idx, :, 0, 0].astype(float).tolist(),
            "reference_probabilities": np.round(ens[ref_idx], 7).tolist(),
        },
        "versions": {k: v for k, v in versions().items() if k in ("glacierfacies", "torch",
                                                                  "numpy", "python")},
    }
    write_json(dest / "model.json", card)
    return card


def _macro(labels: np.ndarray, probs: np.ndarray) -> float:
    from glacierfacies.training.metrics import macro_f1

    return macro_f1(labels, probs.argmax(1), len(CLASS_NAMES))


def _snow(labels: np.ndarray, probs: np.ndarray) -> float | None:
    from glacierfacies.training.metrics import group_f1

    return group_f1(labels, probs.argmax(1), [CLASS_NAMES.index(c) for c in SNOW_GROUP])
