"""Every file and folder name of a run, in one documented registry (after OGGM's
`cfg.BASENAMES` and `GlacierDirectory.get_filepath`).

Two kinds of folder hold results: the main job's run folder (`glacierfacies run -o OUT`)
and a training run folder (`glacierfacies train DATASET RUN_DIR`, which the main job puts
at `OUT/train`). Code asks `get_filepath(key, root, **fields)` instead of spelling names, so a
name changes here or nowhere.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUN_BASENAMES", "TRAIN_BASENAMES", "describe", "fold_model_path", "get_filepath",
           "models_dir"]

# key -> (path relative to the main job's run folder, what it holds)
RUN_BASENAMES: dict[str, tuple[str, str]] = {
    "run_config": ("run_config.json", "the run's configuration, as resolved"),
    "run_lock": ("run.lock", "held (fcntl lock) by the `run` writing the folder: a second "
                             "`run` on it stops"),
    "stages": ("stages", "one marker per finished stage (what makes reruns skip)"),
    "sample": ("sample", "the built-in sample's inputs, when no user data is configured"),
    "dataset": ("dataset", "the packed PatchSet (patches.npy, table.parquet, meta.json)"),
    "dataset_table": ("dataset/table.parquet", "one row per patch"),
    "train": ("train", "the training run folder (see TRAIN_BASENAMES)"),
    "maps": ("maps", "facies maps and confidence, one pair per scene"),
    "facies_map": ("maps/{stem}_facies.tif", "Cloud-Optimised GeoTIFF of class codes"),
    "confidence_map": ("maps/{stem}_confidence.tif", "calibrated confidence, percent"),
    "probabilities_map": ("maps/{stem}_probabilities.tif",
                          "calibrated class probabilities, 8 bands (uncertainties)"),
    "map_item": ("maps/{stem}_facies.stac.json",
                 "STAC Item of a map (proj, raster, classification, processing)"),
    "maps_catalog": ("maps/catalog.json", "static STAC catalog of the run's maps"),
    "products": ("products", "glacier products"),
    "products_gpkg": ("products/products.gpkg", "one row per glacier x scene, with outlines"),
    "products_csv": ("products/products.csv", "the same rows without geometry"),
    "massbalance": ("massbalance", "regressions against balance records"),
    "massbalance_stats": ("massbalance/stats.json", "r, RMSE, n, slope, intercept, p"),
    "real": ("real", "the real example (Athabasca HLS clips) mapped with the built-in models"),
    "real_map": ("real/{stem}_facies.tif", "facies map of one real example clip"),
    "real_products_csv": ("real/products.csv", "products of the real example clips"),
    "figures": ("figures", "every figure of the report as PNG"),
    "report": ("report.html", "the whole run in one self-contained page"),
}

# key -> (path relative to a training run folder, what it holds)
TRAIN_BASENAMES: dict[str, tuple[str, str]] = {
    "train_config": ("config.json", "the TrainConfig the run was started with"),
    "train_run": ("run.json", "where the dataset (and known flipped labels) came from"),
    "train_stages": ("stages", "one marker per finished fold of each round, and cleaning"),
    "metrics": ("metrics.json", "macro F1 cleaned / unpruned, per class, glacier, region, sensor"),
    "round": ("round{round}", "one round's predictions, checkpoints and (round 1) models"),
    "round_models": ("round{round}/models", "fold models of round 1"),
    "round_fold_model": ("round{round}/models/fold{fold}.pt",
                         "one round-1 fold model (its card: the same name, .json)"),
    "final_models": ("models", "the final (round-2) fold models and their cards"),
    "final_fold_model": ("models/fold{fold}.pt", "one final fold model (card: .json beside)"),
    "models_complete": ("models/complete.json",
                        "written last, once every fold model of round 2 finished: only then "
                        "is models/ a model (round1/models/ has its own)"),
    "fold_checkpoint": ("round{round}/fold{fold}.ckpt", "mid-fold checkpoint (resume)"),
    "predictions": ("round{round}/predictions", "one round's per-fold predictions"),
    "fold_predictions": ("round{round}/predictions/fold{fold}.npz",
                         "test and validation logits of one fold"),
    "oof_logits": ("round{round}/oof_logits.npy", "out-of-fold test logits (N, C)"),
    "oof_fold": ("round{round}/oof_fold.npy", "the test fold of each point"),
    "cleaning": ("cleaning", "confident-learning results and label review files"),
    "flagged": ("cleaning/flagged.npy", "bool per patch: pruned by confident learning"),
    "cleaning_summary": ("cleaning/summary.json", "how many labels were flagged, per class"),
    "figure_data": ("figure_data.json",
                    "the numbers behind the confusion and reliability figures"),
    "confusion_cleaned": ("confusion_cleaned.png", "confusion matrix, cleaned test folds"),
    "confusion_unpruned": ("confusion_unpruned.png", "confusion matrix, unpruned test folds"),
    "reliability": ("reliability.png", "reliability before and after calibration"),
}

_ALL = {**RUN_BASENAMES, **TRAIN_BASENAMES}
assert len(_ALL) == len(RUN_BASENAMES) + len(TRAIN_BASENAMES), "duplicate layout key"


def get_filepath(key: str, root: str | Path, **fields: object) -> Path:
    """The path of `key` under `root` (a run folder or a training run folder)."""
    try:
        template = _ALL[key][0]
    except KeyError:
        raise KeyError(f"unknown layout key {key!r}; known: {', '.join(sorted(_ALL))}") from None
    return Path(root) / template.format(**fields)


def models_dir(train_dir: str | Path, round_no: int) -> Path:
    """Where a round's fold models live: round 2's are the final models."""
    if round_no == 2:
        return get_filepath("final_models", train_dir)
    return get_filepath("round_models", train_dir, round=round_no)


#: The marker of a finished model folder (every fold model written), in any model folder.
COMPLETE_MARKER = "complete.json"


def fold_model_path(train_dir: str | Path, round_no: int, fold: int) -> Path:
    """One fold model of a round (`models_dir(train_dir, round_no) / fold{fold}.pt`)."""
    key = "final_fold_model" if round_no == 2 else "round_fold_model"
    return get_filepath(key, train_dir, round=round_no, fold=fold)


def describe() -> str:
    """The registry as a Markdown table (docs/architecture.md embeds it)."""
    lines = ["| key | path | holds |", "|---|---|---|"]
    for prefix, table in (("OUT/", RUN_BASENAMES), ("RUN_DIR/", TRAIN_BASENAMES)):
        lines += [f"| `{k}` | `{prefix}{p}` | {d} |" for k, (p, d) in table.items()]
    return "\n".join(lines)
