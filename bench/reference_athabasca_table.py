"""Score the Athabasca maps of `bench/reference_athabasca.py`: the zone criteria, the eight
class fractions and the products (AAR of snow and of snow + firn, snowline, firn line, with
the uncertainties `products --probabilities` gives), as a Markdown table, plus a figure with
the maps of each clip side by side.

    python bench/reference_athabasca_table.py MAPS_DIR --figure docs/img/athabasca_reference.png
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "src" / "glacierfacies" / "examples" / "athabasca"
SCENES = {"L30_20200816": "L30 2020-08-16", "S30_20200909": "S30 2020-09-09"}
MODELS = {"builtin_landsat": "builtin:landsat", "builtin_sentinel2": "builtin:sentinel2",
          "reference_set1": "paper set 1 (optical)", "reference_set4": "paper set 4 (+terrain)",
          "reference_set1_dense": "paper set 1, dense", "reference_set4_dense": "paper set 4, dense"}


def products_row(maps: Path, stem: str) -> dict[str, str]:
    out = maps / f"{stem}_products.csv"
    subprocess.run([sys.executable, "-m", "glacierfacies.cli", "products",
                    str(maps / f"{stem}_facies.tif"), "--outlines",
                    str(EX / "athabasca_outline.shp"), "--id-column", "ID",
                    "--dem", str(EX / "athabasca_dem.tif"), "--probabilities",
                    str(maps / f"{stem}_probabilities.tif"), "-o", str(out), "--overwrite"],
                   check=True, capture_output=True)
    return next(csv.DictReader(out.open()))


def fmt(v: str, unc: str, digits: int) -> str:
    x = float(v) if v not in ("", None) else float("nan")
    if not np.isfinite(x):
        return "n/a"
    u = float(unc) if unc not in ("", None) else float("nan")
    s = f"{x:,.{digits}f}"
    return s if not np.isfinite(u) else f"{s} ± {u:,.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("maps", type=Path)
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args()
    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.examples import zone_shares

    short = {"refrozen-like": "refr.", "shadow": "shad."}
    head = ["clip", "model", "< 2,300 m ice/debris", "> 2,700 m snow/firn/shadow",
            *[short.get(c, c) + " %" for c in CLASS_NAMES], "AAR snow", "AAR snow+firn",
            "snowline m", "firn line m"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |")
    for scene, label in SCENES.items():
        for tag, name in MODELS.items():
            stem = f"{scene}_{tag}"
            if not (args.maps / f"{stem}_facies.tif").exists():
                continue
            z = zone_shares(args.maps / f"{stem}_facies.tif", EX / "athabasca_dem.tif",
                            EX / "athabasca_outline.shp")
            r = products_row(args.maps, stem)
            areas = np.array([float(r[f"area_km2_{c}"] or "nan") for c in CLASS_NAMES])
            frac = 100 * areas / np.nansum(areas)  # NaN: a class the model cannot map
            cells = [label, name, f"{100 * z['below 2300 m']['share']:.1f}%",
                     f"{100 * z['above 2700 m']['share']:.1f}%",
                     *[f"{f:.1f}" if np.isfinite(f) else "n/a" for f in frac],
                     fmt(r["aar"], r["aar_unc"], 3), fmt(r["aar_snow_firn"],
                                                         r["aar_snow_firn_unc"], 3),
                     fmt(r["snowline_m"], r["snowline_unc_m"], 0),
                     fmt(r["firnline_m"], r["firnline_unc_m"], 0)]
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.figure:
        figure(args.maps, args.figure)


def figure(maps: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from glacierfacies.classes import CLASS_COLOURS, CLASS_NAMES

    cmap = ListedColormap([np.array(CLASS_COLOURS[c]) / 255 for c in CLASS_NAMES])
    cols = [("builtin", "built-in model of the sensor"), ("reference_set1", "paper, set 1"),
            ("reference_set4", "paper, set 4")]
    fig, axes = plt.subplots(len(SCENES), 3, figsize=(12, 4.3 * len(SCENES)))
    for i, (scene, label) in enumerate(SCENES.items()):
        for j, (tag, title) in enumerate(cols):
            if tag == "builtin":
                tag = "builtin_landsat" if scene.startswith("L30") else "builtin_sentinel2"
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#9a9a9a")  # snow is white: off-glacier grey
            f = maps / f"{scene}_{tag}_facies.tif"
            if not f.exists():
                continue
            with rasterio.open(f) as ds:
                a = ds.read(1)
            rows, cols_ = np.nonzero(a != 255)
            a = a[rows.min(): rows.max() + 1, cols_.min(): cols_.max() + 1]
            ax.imshow(np.ma.masked_equal(a, 255), cmap=cmap, vmin=-0.5,
                      vmax=len(CLASS_NAMES) - 0.5, interpolation="nearest")
            ax.set_title(f"{label}\n{title}" + (f" ({MODELS[tag]})" if j == 0 else ""),
                         fontsize=10)
    fig.legend(handles=[Patch(color=np.array(CLASS_COLOURS[c]) / 255, label=c)
                        for c in CLASS_NAMES], loc="lower center", ncol=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"figure -> {out}")


if __name__ == "__main__":
    main()
