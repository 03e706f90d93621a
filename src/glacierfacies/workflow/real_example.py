"""The demo's real glacier: the Athabasca HLS clips shipped in the package, mapped with the
built-in models (no training), with their products and the elevation-zone check.

Runs on a fresh clone without ../shared: the clips, DEM and outline are package data
(`glacierfacies.examples`), the models too (`glacierfacies.model.builtin`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glacierfacies.layout import get_filepath

__all__ = ["REAL_SCENES", "real_section", "stage_real_example"]

#: clip folder -> (built-in model, what it is)
REAL_SCENES: dict[str, tuple[str, str]] = {
    "L30_20200816": ("builtin:landsat", "HLS L30 (Landsat 8), 2020-08-16"),
    "S30_20200909": ("builtin:sentinel2", "HLS S30 (Sentinel-2), 2020-09-09"),
}
ATTRIBUTION = ("Athabasca Glacier (Columbia Icefield, Canadian Rockies): HLS v2.0 clips from "
               "the example data of SatRbedo (github.com/pabl1t0x/SatRbedo, GPL-3.0; Fuchs et "
               "al.), imagery HLS v2.0, NASA LP DAAC; contains modified Copernicus Sentinel "
               "data (2020); outline of 1984. Built-in models trained on Aberle et al.'s points "
               "of four other glaciers (github.com/RaineyAbe/glacier-snow-cover-mapping, MIT).")


def stage_real_example(out: Path, map_config=None) -> dict[str, Any]:
    """Map both clips with their built-in model, compute products and zone shares."""
    import warnings

    from glacierfacies.examples import example_path, zone_shares
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.products.massbalance import ProductConfig
    from glacierfacies.products.table import compute_products, write_products

    ex = example_path("athabasca")
    dem, outlines = ex / "athabasca_dem.tif", ex / "athabasca_outline.shp"
    folder = get_filepath("real", out)
    folder.mkdir(parents=True, exist_ok=True)
    done, maps = [], []
    for stem, (model, what) in REAL_SCENES.items():
        facies = get_filepath("real_map", out, stem=stem)
        with warnings.catch_warnings():  # the clips carry no time of day: the map tags say so
            warnings.simplefilter("ignore", UserWarning)
            res = map_scene(ex / stem, dem, outlines, [model], facies, config=map_config,
                            confidence_out=facies.with_name(f"{stem}_confidence.tif"),
                            probabilities_out=facies.with_name(f"{stem}_probabilities.tif"),
                            overwrite=True, progress=False)
        shares = zone_shares(facies, dem, outlines)
        done.append({"scene": stem, "what": what, "model": model, "map": str(facies),
                     "seconds": round(res.seconds, 2), "zones": shares})
        maps.append(facies)
    table = compute_products(maps, outlines, dem, id_column="ID")
    write_products(table, get_filepath("real_products_csv", out), ProductConfig(),
                   overwrite=True)
    return {"scenes": done, "n_products": int(len(table))}


def real_section(out: Path, summary: dict[str, Any], fig_dir: Path):
    """The report's "Real glacier" section: true colour beside the maps, zone check, products."""
    import warnings

    import pandas as pd

    from glacierfacies.examples import example_path
    from glacierfacies.workflow.figures import quicklook_png
    from glacierfacies.workflow.html import Figure, Section, legend_html, table_html
    from glacierfacies.workflow.report import read_quicklook

    ex = example_path("athabasca")
    figs, zone_rows = [], []
    for s in summary.get("scenes", []):
        with warnings.catch_warnings():  # the clips carry no time of day (stated in the tags)
            warnings.simplefilter("ignore", UserWarning)
            rgb, classes, _, _ = read_quicklook(ex / s["scene"], Path(s["map"]))
        png = quicklook_png(rgb, classes,
                            fig_dir / f"real_{s['scene']}.png",
                            title=f"Athabasca Glacier, {s['what']}: {s['model']}")
        figs.append(Figure(f"{s['what']}, mapped with {s['model']}", png,
                           "true colour beside the facies map inside the 1984 outline"))
        for zone, z in s["zones"].items():
            zone_rows.append({"clip": s["what"], "model": s["model"], "zone": zone,
                              "pixels": z["pixels"], "right share": z["share"],
                              "classes": ", ".join(f"{k} {100 * v:.1f}%"
                                                   for k, v in z["classes"].items())})
    paras = [ATTRIBUTION, "No training by the user: each clip is mapped with the built-in model "
             "of its sensor (<code>glacierfacies map CLIP --model builtin:NAME</code>). The check, "
             "independent of any model: the tongue below 2,300 m is bare ice or debris and the "
             "icefield above 2,700 m snow in late summer (thresholds 85% and 90%).",
             legend_html()]
    tables = [table_html(pd.DataFrame(zone_rows))] if zone_rows else []
    prod_csv = get_filepath("real_products_csv", out)
    if prod_csv.is_file():
        prod = pd.read_csv(prod_csv)
        # two tables, so each fits the page: the products, then the class areas
        products = {"date": "date", "sensor": "sensor", "observed_fraction": "observed",
                    "aar": "AAR", "aar_unc": "± AAR", "snowline_m": "snowline (m)",
                    "snowline_unc_m": "± (m)", "uncertainty_method": "± from",
                    "firn_mapped": "firn mapped", "outline_in_scene": "outline in scene"}
        areas = {"date": "date", "area_km2_ice": "ice km²", "area_km2_snow": "snow km²",
                 "area_km2_debris": "debris km²", "area_km2_shadow": "shadow km²",
                 "area_km2_water": "water km²", "glacier_area_km2": "glacier km²",
                 "product_flags": "flags"}
        for names in (products, areas):
            cols = [c for c in names if c in prod.columns]
            shown = prod[cols].rename(columns=names)
            for c in ("snowline (m)", "± (m)"):
                if c in shown:
                    shown[c] = shown[c].round(0)
            if "flags" in shown:  # long flag names wrap at their words
                shown["flags"] = shown["flags"].fillna("").astype(str).str.replace(
                    "_", " ").str.replace(";", "; ")
            if "± from" in shown:
                shown["± from"] = shown["± from"].astype(str).str.replace("+", " + ")
            tables.append(table_html(shown))
    return Section("Real glacier", paras, tables, figs)
