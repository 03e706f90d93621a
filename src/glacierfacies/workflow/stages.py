"""The stages of the main job, each a function of the configuration and the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glacierfacies.layout import get_filepath
from glacierfacies.workflow.config import Inputs, RunConfig, train_config

__all__ = ["compare_aar_with_truth", "model_paths", "stage_dataset", "stage_maps",
           "stage_massbalance", "stage_products", "stage_sample", "stage_train"]


def stage_sample(cfg: RunConfig, out: Path) -> dict[str, Any]:
    from glacierfacies.sample.generate import write_sample

    text = write_sample(get_filepath("sample", out), seed=cfg.seed, overwrite=True)
    return {"summary": text}


def stage_dataset(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.data.build import build_patchset

    ps = build_patchset(inputs.scenes, inputs.dem, inputs.outlines, inputs.labels,
                        patch_size=cfg.patch_size, features=cfg.features, k_folds=cfg.k_folds,
                        seed=cfg.seed, out_dir=get_filepath("dataset", out), overwrite=True,
                        read_options=cfg.read_options)
    return {"n_patches": int(len(ps.labels)), "summary": ps.provenance.get("summary", {})}


def stage_train(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.training.protocol import train_dataset
    from glacierfacies.workflow.figures import training_figures

    metrics = train_dataset(get_filepath("dataset", out), get_filepath("train", out), train_config(cfg),
                            flipped_csv=inputs.flipped if inputs.flipped and
                            inputs.flipped.is_file() else None)
    training_figures(get_filepath("train", out))
    keep = ("macro_f1_cleaned", "macro_f1_unpruned", "n_pruned", "flip_detection")
    return {k: metrics.get(k) for k in keep if k in metrics}


def model_paths(out: Path) -> list[Path]:
    return sorted(get_filepath("final_models", get_filepath("train", out)).glob("fold*.pt"))


def stage_maps(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.mapping.scene_map import map_scene, scene_stem
    from glacierfacies.model.card import load_members

    get_filepath("maps", out).mkdir(parents=True, exist_ok=True)
    models = model_paths(out)
    members = load_members(models)
    done = []
    for scene in inputs.scenes:
        stem = scene_stem(scene)
        facies = get_filepath("facies_map", out, stem=stem)
        conf = get_filepath("confidence_map", out, stem=stem)
        prob = get_filepath("probabilities_map", out, stem=stem)
        res = map_scene(scene, inputs.dem, inputs.outlines, models, facies,
                        config=cfg.map_config,
                        confidence_out=conf, overwrite=True, members=members, progress=False,
                        probabilities_out=prob)
        done.append({"scene": str(scene), "map": str(facies), "seconds": round(res.seconds, 2),
                     "classified_px": res.n_classified})
    from glacierfacies.stac import map_item_path, write_catalog

    write_catalog(get_filepath("maps", out), [map_item_path(d["map"]) for d in done],
                  title="glacierfacies run maps")
    return {"maps": done}


def _map_files(out: Path) -> list[Path]:
    return sorted(get_filepath("maps", out).glob("*_facies.tif"))


def stage_products(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.products.massbalance import ProductConfig
    from glacierfacies.products.table import compute_products, write_products

    pcfg = ProductConfig(refrozen_is_accumulation=cfg.include_refrozen,
                         accumulation=cfg.accumulation)
    maps = _map_files(out)
    table = compute_products(maps, inputs.outlines, inputs.dem, pcfg)  # companions: map tags
    get_filepath("products", out).mkdir(exist_ok=True)
    sources = {"maps": [str(m) for m in maps], "outlines": str(inputs.outlines),
               "dem": str(inputs.dem)}  # export-targets --format pygem reads them
    write_products(table, get_filepath("products_gpkg", out), pcfg, sources, overwrite=True)
    write_products(table, get_filepath("products_csv", out), pcfg, sources, overwrite=True)
    summary: dict[str, Any] = {"rows": int(len(table))}
    if inputs.truth is not None and (inputs.truth / "aar_truth.csv").is_file():
        summary["aar_vs_truth"] = compare_aar_with_truth(table, inputs.truth / "aar_truth.csv",
                                                         cfg.min_observed)
        summary["end_of_season_vs_truth"] = compare_end_of_season_with_truth(
            table, inputs.truth / "aar_truth.csv", cfg.min_observed)
    return summary


def compare_aar_with_truth(table, truth_csv: Path, min_observed: float) -> dict[str, Any]:
    """Products' AAR against the sample's true AAR, where the glacier is well observed."""
    import numpy as np
    import pandas as pd

    truth = pd.read_csv(truth_csv, dtype={"glacier": str, "scene_id": str})
    merged = pd.DataFrame(table).merge(truth, on=["glacier", "scene_id"], suffixes=("", "_true"))
    ok = merged[merged["observed_fraction_true"] >= min_observed]
    err = (ok["aar"] - ok["aar_true"]).abs()
    out = {"n": int(len(ok)), "max_abs_error": float(err.max()) if len(ok) else float("nan"),
           "median_abs_error": float(np.median(err)) if len(ok) else float("nan"),
           "within_0.05": int((err <= 0.05).sum())}
    if "aar_unc" in ok.columns and ok["aar_unc"].notna().any():
        out["within_2_unc"] = int((err <= 2 * ok["aar_unc"]).sum())
    return out


#: Tolerances of the end-of-season comparison with the sample's truth (issue 14).
TRUTH_TOLERANCE = {"snowline_m": 30.0, "firnline_m": 30.0, "aar": 0.05}


def compare_end_of_season_with_truth(table, truth_csv: Path, min_observed: float
                                     ) -> dict[str, Any]:
    """End-of-season snowline, firn line and snow-only AAR of every glacier-year (scenes
    observed >= `min_observed`, chosen as `massbalance` chooses them) against the sample's
    true lines (the generator's parameters) and true AAR."""
    import numpy as np
    import pandas as pd

    from glacierfacies.products.regression import select_end_of_season

    truth = pd.read_csv(truth_csv, dtype={"glacier": str, "scene_id": str})
    prod = pd.DataFrame(table).drop(columns="geometry", errors="ignore")
    prod["date"] = pd.to_datetime(prod["date"])
    sel = select_end_of_season(prod, min_observed)
    m = sel.merge(truth, on=["glacier", "scene_id"], suffixes=("", "_true"))
    out: dict[str, Any] = {"n": int(len(m)), "tolerance": TRUTH_TOLERANCE, "rows": []}
    for col, tol in TRUTH_TOLERANCE.items():
        err = (m[col] - m[f"{col}_true"]).to_numpy(float)
        a = np.abs(err)
        unc = m.get(f"{col.removesuffix('_m')}_unc_m" if col != "aar" else "aar_unc")
        out[col] = {
            "max_abs_error": float(np.nanmax(a)) if a.size else float("nan"),
            "median_abs_error": float(np.nanmedian(a)) if a.size else float("nan"),
            "within_tolerance": int((a <= tol).sum()),
            "within_2_unc": (int((a <= 2 * unc.to_numpy(float)).sum())
                             if unc is not None else None),
        }
    for r in m.itertuples():
        out["rows"].append({
            "glacier": r.glacier, "year": int(r.year), "date": f"{r.date:%Y-%m-%d}",
            "sensor": r.sensor, "observed_fraction": float(r.observed_fraction),
            **{f"{c}": float(getattr(r, c)) for c in TRUTH_TOLERANCE},
            **{f"{c}_true": float(getattr(r, f"{c}_true")) for c in TRUTH_TOLERANCE},
            "aar_unc": float(r.aar_unc), "snowline_unc_m": float(r.snowline_unc_m),
            "firnline_unc_m": float(r.firnline_unc_m)})
    out["all_within_tolerance"] = bool(all(out[c]["within_tolerance"] == out["n"]
                                           for c in TRUTH_TOLERANCE)) and out["n"] > 0
    return out


def stage_massbalance(cfg: RunConfig, out: Path, inputs: Inputs) -> dict[str, Any]:
    from glacierfacies.products.regression import run_massbalance
    from glacierfacies.products.table import read_products
    from glacierfacies.products.wgms import read_wgms
    from glacierfacies.workflow.figures import massbalance_figures

    if inputs.wgms is None:
        return {"skipped": "no WGMS folder configured"}
    records = read_wgms(inputs.wgms)
    products_path = get_filepath("products_gpkg", out)
    stats = run_massbalance(read_products(products_path), records, get_filepath("massbalance", out),
                            products_path, min_years=cfg.min_years,
                            min_observed=cfg.min_observed, overwrite=True)
    massbalance_figures(get_filepath("massbalance", out))
    return {"stats": stats}

