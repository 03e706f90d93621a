"""The run report: sections built from the stages' summaries, rendered to one HTML page."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import write_text
from glacierfacies.layout import get_filepath
from glacierfacies.workflow.config import Inputs, RunConfig, versions

__all__ = ["html_path", "stage_report"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _metrics_tables(metrics: dict[str, Any]) -> list[str]:
    import pandas as pd

    from glacierfacies.workflow.html import table_html

    tables = []
    rows = []
    for name in ("cleaned", "unpruned"):
        m = metrics.get(name) or {}
        gw = m.get("glacier_wise") or {}
        rows.append({"test folds": name, "n": m.get("n"), "macro F1": m.get("macro_f1"),
                     "accuracy": m.get("accuracy"), "mean IoU": m.get("mean_iou"),
                     "glacier-wise macro F1": f"{_fmt(gw.get('macro_f1_mean'))} ± "
                                              f"{_fmt(gw.get('macro_f1_std'))}",
                     "ECE (100 bins)": m.get("ece")})
    tables.append(table_html(pd.DataFrame(rows)))
    cleaned = metrics.get("cleaned") or {}
    per_class = pd.DataFrame(cleaned.get("per_class") or {}).T
    if len(per_class):
        per_class.index.name = "class (cleaned test folds)"
        tables.append(table_html(per_class))
    for group in ("per_sensor", "per_region"):
        g = cleaned.get(group) or (metrics.get("unpruned") or {}).get(group)
        if g:
            df = pd.DataFrame({k: {"macro F1": v.get("macro_f1"), "n": v.get("n")}
                               for k, v in g.items()}).T
            df.index.name = group.replace("_", " ") + " (cleaned)"
            tables.append(table_html(df))
    return tables


#: Columns of the products table in the report, with their short headers (units in them).
PRODUCT_HEADERS = {"glacier": "glacier", "date": "date", "sensor": "sensor",
                   "observed_fraction": "observed", "aar": "AAR", "aar_unc": "AAR ±",
                   "aar_snow_firn": "AAR snow+firn", "snowline_m": "snowline (m)",
                   "snowline_unc_m": "snowline ± (m)", "firnline_m": "firn line (m)",
                   "firnline_unc_m": "firn line ± (m)", "glacier_area_km2": "area (km2)",
                   "mean_confidence": "confidence (%)",
                   "uncertainty_method": "uncertainty from", "product_flags": "flags"}

QUICKLOOK_PX = 1200  # longest side of a quicklook read (map from overviews, scene onto it)


def read_quicklook(scene: Path, facies: Path, read_options: Any = None
                   ) -> tuple[np.ndarray, np.ndarray, Any, dict[str, str]]:
    """(true-colour RGB, classes, scene, map tags) for a quicklook of a mapped scene, at most
    QUICKLOOK_PX a side: the map from its COG overviews, the scene read decimated onto the
    same grid with a bounded GDAL cache; never a full-size array of a large tile."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import Affine

    from glacierfacies.scenes.grid import Grid, decimated_reads
    from glacierfacies.scenes.reader import read_scene

    with rasterio.open(facies) as ds:
        k = max(1, -(-max(ds.height, ds.width) // QUICKLOOK_PX))
        shape = (-(-ds.height // k), -(-ds.width // k))
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        tags = ds.tags()
        grid = Grid(ds.crs, ds.transform @ Affine.scale(ds.width / shape[1],
                                                        ds.height / shape[0]), *shape)
    with decimated_reads(), rasterio.Env(GDAL_CACHEMAX=128):
        sc = read_scene(scene, grid=grid, options=read_options)
    return sc.reflectance[[2, 1, 0]], classes, sc, tags


def _quicklooks(out: Path, inputs: Inputs, fig_dir: Path, read_options: Any = None) -> list:
    import pandas as pd

    from glacierfacies.mapping.scene_map import scene_stem
    from glacierfacies.workflow.figures import quicklook_png
    from glacierfacies.workflow.html import Figure

    products_csv = get_filepath("products_csv", out)
    rows = pd.read_csv(products_csv, dtype={"glacier": str, "scene_id": str}) \
        if products_csv.is_file() else None
    figs = []
    for scene in inputs.scenes:
        stem = scene_stem(scene)
        facies = get_filepath("facies_map", out, stem=stem)
        if not facies.is_file():
            continue
        rgb, classes, sc, tags = read_quicklook(scene, facies, read_options)
        elevation, index, lines = _scene_lines(out, inputs, sc, rows)
        path = quicklook_png(rgb, classes, fig_dir / f"quicklook_{stem}.png",
                             title=f"{sc.scene_id[:60]} ({sc.sensor}, {sc.acquired:%Y-%m-%d})",
                             elevation=elevation, glacier_index=index, lines=lines)
        figs.append(Figure(f"{sc.sensor} {sc.acquired:%Y-%m-%d}", path,
                           f"{stem}: true colour and facies map ({tags.get('SCENE_ID', '')})"
                           + ("; each glacier's snowline (red) and firn line (orange, dashed)"
                              " from the products table" if lines else "")))
    return figs


def _on_grid(path: Path, grid: Any) -> np.ndarray:
    """A single-band raster (the DEM) read bilinearly onto `grid`, NaN outside."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    dst = np.full(grid.shape, np.nan, np.float32)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), dst, dst_transform=grid.transform, dst_crs=grid.crs,
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
    return dst


def _scene_lines(out: Path, inputs: Inputs, sc: Any, rows: Any
                 ) -> tuple[np.ndarray | None, np.ndarray | None, list]:
    """(DEM on the quicklook grid, glacier index, [(index, snowline, firn line)]) of the
    products rows of this scene; (None, None, []) without products or DEM."""
    from glacierfacies.outlines import find_id_column, rasterise_outlines, read_outlines

    if rows is None or not len(rows) or inputs.dem is None:
        return None, None, []
    mine = rows[rows["scene_id"].astype(str) == str(sc.scene_id)]
    if not len(mine):
        return None, None, []
    try:
        gdf = read_outlines(inputs.outlines, grid=sc.grid)
        ids = gdf[find_id_column(gdf, path=inputs.outlines)].astype(str).tolist()
        index = rasterise_outlines(sc.grid, gdf)
        elevation = _on_grid(inputs.dem, sc.grid)
    except Exception:  # a figure is not worth failing the report for
        return None, None, []
    lines = []
    for _, r in mine.iterrows():
        if str(r["glacier"]) in ids:
            lines.append((ids.index(str(r["glacier"])) + 1, float(r.get("snowline_m", np.nan)),
                          float(r.get("firnline_m", np.nan))))
    return elevation, index, lines


def _hypsometry_figures(out: Path, inputs: Inputs, prod: Any, fig_dir: Path,
                        min_observed: float) -> list:
    """Per glacier: area per 50 m altitude band coloured by facies, on its latest scene that
    is observed >= `min_observed` (the end of its last season)."""
    import rasterio

    from glacierfacies.mapping.scene_map import scene_stem
    from glacierfacies.outlines import find_id_column, rasterise_outlines, read_outlines
    from glacierfacies.scenes.grid import Grid
    from glacierfacies.workflow.figures import hypsometry_png
    from glacierfacies.workflow.html import Figure

    if inputs.dem is None or not len(prod):
        return []
    maps = {}
    for scene in inputs.scenes:
        facies = get_filepath("facies_map", out, stem=scene_stem(scene))
        if facies.is_file():
            with rasterio.open(facies) as ds:
                maps[ds.tags().get("SCENE_ID", "")] = facies
    figs = []
    for glacier, g in prod.sort_values("date").groupby(prod["glacier"].astype(str), sort=True):
        pick = g[g["scene_id"].astype(str).isin(maps)]
        if not len(pick):
            continue
        seen = pick[pick["observed_fraction"] >= min_observed]
        # the end of its last season; else its best observed scene
        row = seen.iloc[-1] if len(seen) else pick.loc[pick["observed_fraction"].idxmax()]
        facies = maps[str(row["scene_id"])]
        try:
            with rasterio.open(facies) as ds:
                grid = Grid(ds.crs, ds.transform, ds.height, ds.width)
                gdf = read_outlines(inputs.outlines, grid=grid)
                ids = gdf[find_id_column(gdf, path=inputs.outlines)].astype(str).tolist()
                if glacier not in ids:
                    continue
                geom = gdf.iloc[[ids.index(glacier)]]
                from rasterio.windows import from_bounds

                bounds = geom.to_crs(ds.crs).total_bounds
                win = from_bounds(*bounds, transform=ds.transform).round_offsets() \
                    .round_lengths()
                sub = Grid(ds.crs, ds.window_transform(win), int(win.height), int(win.width))
                classes = ds.read(1, window=win, boundless=True, fill_value=255)
            inside = rasterise_outlines(sub, geom, as_mask=True)
            elevation = np.where(inside, _on_grid(inputs.dem, sub), np.nan)
        except Exception:
            continue
        px_km2 = abs(grid.transform.a * grid.transform.e) / 1e6
        path = hypsometry_png(elevation, np.where(inside, classes, 255), px_km2,
                              fig_dir / f"hypsometry_{_safe(glacier)}.png",
                              title=f"{glacier}: {row['date']!s:.10} ({row['sensor']})")
        figs.append(Figure(f"Hypsometry of {glacier}", path,
                           f"area per 50 m altitude band by facies, scene "
                           f"{row['scene_id']}; snowline {row['snowline_m']:.0f} m"))
    return figs


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^0-9A-Za-z._-]", "_", str(name))


def stage_report(cfg: RunConfig, out: Path, inputs: Inputs, timings: dict[str, float],
                  products_summary: dict[str, Any], real: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    import shutil

    import numpy as np
    import pandas as pd

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.workflow.figures import bar_counts_png, timeseries_png
    from glacierfacies.workflow.html import (
        Figure,
        Section,
        json_block,
        legend_html,
        render_html,
        table_html,
    )

    fig_dir = get_filepath("figures", out)
    fig_dir.mkdir(exist_ok=True)
    sections: list[Section] = []

    # dataset
    table = pd.read_parquet(get_filepath("dataset_table", out))
    train_dir = get_filepath("train", out)
    flagged_path = get_filepath("flagged", train_dir)
    flagged = np.load(flagged_path) if flagged_path.is_file() else np.zeros(len(table), bool)
    per_class = table["class"].value_counts().reindex(CLASS_NAMES, fill_value=0)
    pruned = table.loc[flagged, "class"].value_counts().reindex(CLASS_NAMES, fill_value=0)
    ds = pd.DataFrame({"patches": per_class, "pruned by confident learning": pruned,
                       "pruned %": (100 * pruned / per_class.clip(lower=1)).round(1)})
    ds.index.name = "class"
    by_glacier = table.groupby(["glacier", "fold"]).size().rename("patches").reset_index()
    by_sensor = table["sensor"].value_counts().rename("patches")
    by_sensor.index.name = "sensor"
    f1 = bar_counts_png(per_class, fig_dir / "patches_per_class.png", "labelled patches per class")
    sections.append(Section(
        "Dataset",
        [f"{len(table):,} labelled patches of {table['glacier'].nunique()} glaciers in "
         f"{table['scene_id'].nunique()} scenes; {int(flagged.sum()):,} labels "
         f"({100 * flagged.mean():.1f}%) pruned by confident learning (facies classes only)."],
        [table_html(ds), table_html(by_sensor.to_frame()), table_html(by_glacier)],
        [Figure("Patches per class", f1)],
    ))

    # accuracy and calibration
    metrics_path = get_filepath("metrics", train_dir)
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    clean = metrics.get("cleaning") or {}
    paras = [f"Out-of-fold scores of the second-round models ({cfg.k_folds} folds by glacier; "
             "validation fold = test fold − 1). Macro F1 on cleaned test folds "
             f"<b>{_fmt(metrics.get('macro_f1_cleaned'))}</b>, on unpruned test folds "
             f"<b>{_fmt(metrics.get('macro_f1_unpruned'))}</b>."]
    if "flipped_facies_flagged_recall" in clean:
        paras.append(f"Confident learning found {100 * clean['flipped_facies_flagged_recall']:.0f}"
                     f"% of the sample's deliberately flipped facies labels with precision "
                     f"{100 * clean['flag_precision']:.0f}%.")
    figs = []
    for key, title in (("confusion_cleaned", "Confusion matrix, cleaned test folds"),
                       ("confusion_unpruned", "Confusion matrix, unpruned test folds")):
        png = get_filepath(key, train_dir)  # drawn by workflow.figures.training_figures
        if png.is_file():
            figs.append(Figure(title, shutil.copy(png, fig_dir / png.name)))
    sections.append(Section("Accuracy", paras, _metrics_tables(metrics), figs))
    cal = metrics.get("calibration") or {}
    cal_figs = []
    reliability_png = get_filepath("reliability", train_dir)
    if reliability_png.is_file():
        cal_figs.append(Figure("Reliability before and after temperature scaling",
                               shutil.copy(reliability_png, fig_dir / reliability_png.name)))
    sections.append(Section(
        "Calibrated confidence",
        [f"{cal.get('method', 'temperature scaling')}: ECE (100 bins) "
         f"{_fmt(cal.get('ece_before'))} before, {_fmt(cal.get('ece_after'))} after on the "
         "cleaned test folds"
         + (f", {_fmt(cal.get('ece_before_unpruned'))} before, "
            f"{_fmt(cal.get('ece_after_unpruned'))} after on the unpruned ones"
            if "ece_after_unpruned" in cal else "")
         + f"; temperatures {', '.join(_fmt(t, 2) for t in cal.get('temperatures', []))}. "
         "A calibration is kept only where it lowers the validation fold's ECE"
         + (": identity kept in fold(s) "
            + ", ".join(str(f["fold"]) for f in cal.get("folds", []) if f["method"] == "none")
            + "." if any(f["method"] == "none" for f in cal.get("folds", [])) else ".")],
        [], cal_figs))

    # maps
    sections.append(Section("Facies maps",
                            ["Every scene mapped with the mean probabilities of the fold models "
                             "inside the glacier outlines, 3×3 mode smoothing; Cloud-Optimised "
                             f"GeoTIFFs in <code>{html_path(get_filepath('maps', out))}</code>.", legend_html()],
                            [], _quicklooks(out, inputs, fig_dir, cfg.read_options)))

    # products
    products_csv = get_filepath("products_csv", out)
    if products_csv.is_file():
        prod = pd.read_csv(products_csv, dtype={"glacier": str})
        ts = timeseries_png(prod, fig_dir / "aar_snowline_timeseries.png", cfg.min_observed)
        acc = "snow" if cfg.accumulation == "snow" else "snow + firn"
        paras = [f"AAR = {acc} / observed glacier area (end-of-season snow cover: firn exposed "
                 "below the snowline is ablation area; <code>aar_snow_firn</code> counts both); "
                 "snowline = lower limit of snow, firn line = lower limit of snow + firn; "
                 "shadowed glacier pixels take the side of the line they lie on; cloud and "
                 "nodata are unobserved. Uncertainties (one standard uncertainty) from the "
                 "calibrated class probabilities, drawn with errors correlated over 330 m "
                 "blocks, and the spread of the fold models' own maps "
                 "(<code>uncertainty_method</code> says which; docs/massbalance.md)."]
        truth = products_summary.get("aar_vs_truth")
        if truth:
            paras.append(f"Against the sample's true AAR where ≥ {cfg.min_observed:.0%} of the "
                         f"glacier is observed: {truth['within_0.05']} of {truth['n']} "
                         f"glacier-scenes within 0.05, median error "
                         f"{_fmt(truth['median_abs_error'])}, max {_fmt(truth['max_abs_error'])}"
                         + (f"; {truth['within_2_unc']} within twice their uncertainty."
                            if "within_2_unc" in truth else "."))
        eos = products_summary.get("end_of_season_vs_truth")
        eos_tables = []
        if eos and eos.get("n"):
            parts = []
            for col, label, unit in (("snowline_m", "snowline", " m"),
                                     ("firnline_m", "firn line", " m"), ("aar", "AAR", "")):
                e = eos[col]
                parts.append(f"{label} {e['within_tolerance']}/{eos['n']} within "
                             f"{_fmt(eos['tolerance'][col], 2 if col == 'aar' else 0)}{unit} "
                             f"(max error {_fmt(e['max_abs_error'], 3 if col == 'aar' else 1)}"
                             f"{unit})")
            paras.append("End of season (one scene per glacier and balance year, observed "
                         f"≥ {cfg.min_observed:.0%}, chosen by the robust rule) against the "
                         "sample's own snowline and firn line (the generator's parameters) and "
                         "its true snow-only AAR: " + "; ".join(parts) + ".")
            rows = pd.DataFrame(eos["rows"])
            if len(rows):
                rows["snowline error (m)"] = rows["snowline_m"] - rows["snowline_m_true"]
                rows["firn-line error (m)"] = rows["firnline_m"] - rows["firnline_m_true"]
                rows["AAR error"] = rows["aar"] - rows["aar_true"]
                keep = {"glacier": "glacier", "year": "year", "date": "date",
                        "observed_fraction": "observed", "snowline_m": "snowline (m)",
                        "snowline error (m)": "snowline error (m)",
                        "snowline_unc_m": "snowline ± (m)", "firnline_m": "firn line (m)",
                        "firn-line error (m)": "firn-line error (m)",
                        "firnline_unc_m": "firn line ± (m)", "aar": "AAR",
                        "AAR error": "AAR error", "aar_unc": "AAR ±"}
                eos_tables.append(table_html(rows[list(keep)].rename(columns=keep).round(3)))
        cols = {c: h for c, h in PRODUCT_HEADERS.items() if c in prod.columns}
        shown = prod[list(cols)].sort_values(["glacier", "date"]).rename(columns=cols)
        figs = [Figure("AAR and snowline altitude", ts,
                       "one line per glacier and ablation season")]
        figs += _hypsometry_figures(out, inputs, prod, fig_dir, cfg.min_observed)
        sections.append(Section("Glacier products", paras, [*eos_tables, table_html(shown)],
                                figs))

    # mass balance
    stats_path = get_filepath("massbalance_stats", out)
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        rows = []
        for product, r in stats.get("regressions", {}).items():
            for key, label in (("global_leave_one_glacier_out", "global, leave-one-glacier-out"),
                               ("per_glacier_leave_one_year_out",
                                "per glacier, leave-one-year-out")):
                s = r.get(key) or {}
                rows.append({"product": product, "model": label, "n": s.get("n"),
                             "r": s.get("r"), "r 95%": _interval(s.get("r_ci95")),
                             "RMSE (m w.e.)": s.get("rmse_mwe"),
                             "RMSE 95%": _interval(s.get("rmse_mwe_ci95")),
                             "slope": s.get("slope"), "intercept": s.get("intercept"),
                             "p-value": s.get("p_value")})
        mfigs, empty = _scatter_figures(get_filepath("massbalance", out), fig_dir)
        paras = [f"{stats.get('n_glacier_years')} glacier-years of {stats.get('n_glaciers')} "
                 "glaciers: the end-of-season scene of each glacier and balance year against "
                 "the WGMS annual balance. Scores are cross-validated (held-out predictions), "
                 "with 95% bootstrap intervals over glacier-years."]
        if empty:
            paras.append("No held-out predictions, hence no scatter plot, for "
                         + "; ".join(empty) + ".")
        sections.append(Section("Mass balance", paras, [table_html(pd.DataFrame(rows))],
                                mfigs))

    if real and real.get("scenes"):  # the demo's real glacier (workflow.real_example)
        from glacierfacies.workflow.real_example import real_section

        sections.append(real_section(out, real, fig_dir))

    # configuration
    sections.append(Section("Configuration and versions", [
        "Rerun with <code>glacierfacies run -o " + html_path(out) + "</code>: finished stages "
        "are skipped."], [json_block(dataclasses.asdict(cfg)), json_block(versions()),
                          json_block({"stage_seconds": timings})]))
    html_text = render_html(
        "glacierfacies run report",
        f"Surface facies of {table['glacier'].nunique()} glaciers from "
        f"{len(inputs.scenes)} scenes{' (built-in sample)' if cfg.uses_sample else ''}; "
        f"generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.", sections)
    dest = write_text(get_filepath("report", out), html_text)
    return {"report": str(dest), "figures": len(list(fig_dir.glob("*.png")))}


def _scatter_figures(mb_dir: Path, fig_dir: Path) -> tuple[list, list[str]]:
    """(figures of the scatter plots that have points, a phrase for each that has none:
    a sentence says why, instead of an empty plot)."""
    import shutil

    import pandas as pd

    from glacierfacies.workflow.html import Figure

    n_points: dict[str, int] = {}
    try:  # the panels' points, as `products.regression.scatter_panels` reads them
        table = pd.read_csv(mb_dir / "glacier_years.csv")
        observed = pd.to_numeric(table["annual_balance_mwe"], errors="coerce")
        for col in table.columns:
            if col.startswith(("pred_global_", "pred_glacier_")):
                kind, product = col.removeprefix("pred_").split("_", 1)
                ok = observed.notna() & pd.to_numeric(table[col], errors="coerce").notna()
                n_points[f"scatter_{product}_{kind}"] = int(ok.sum())
    except (OSError, KeyError, ValueError):
        pass
    figs, empty = [], []
    for png in sorted(mb_dir.glob("scatter_*.png")):
        label = png.stem.removeprefix("scatter_").replace("_", " ")
        if n_points.get(png.stem, 1) == 0:
            kind = ("no glacier has the years its own line needs (--min-years)"
                    if png.stem.endswith("_glacier") else "too few glaciers to leave one out")
            empty.append(f"{label.replace(' glacier', ', per glacier').replace(' global', ', global')}"
                         f" ({kind})")
            continue
        figs.append(Figure(png.stem.replace("_", " "), shutil.copy(png, fig_dir / png.name)))
    return figs, empty


def html_path(p: Path) -> str:
    import html

    return html.escape(str(p))


def _interval(ci) -> str:
    return "" if not ci or ci[0] is None else f"{ci[0]:.3f} – {ci[1]:.3f}"
