"""Map Athabasca Glacier end to end with the command line, as docs/real-data.md shows.

    PYTHONPATH=src python scripts/athabasca_example.py OUT_DIR [--figures docs/img]

Trains a spectral model (patch size 1) on ../shared/data/aberle/Landsat_training_data.csv
(preset "sample"), maps the two HLS clips shipped in glacierfacies.examples, computes the
products, prints the elevation-zone check and writes true-colour + map figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENES = ("L30_20200816", "S30_20200909")


def glacierfacies(*args) -> None:
    cmd = [sys.executable, "-m", "glacierfacies.cli", *map(str, args)]
    print("$ glacierfacies " + " ".join(map(str, args)), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def figure(scene_dir: Path, facies: Path, dest: Path, title: str) -> None:
    """True colour beside the facies map, small (for the docs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio
    from matplotlib.patches import Patch

    from glacierfacies.classes import CLASSES, NODATA_CLASS
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.workflow.figures import class_colormap, rgb_composite

    with rasterio.open(facies) as src:
        classes = src.read(1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc = read_scene(scene_dir, grid=facies)
    rgb = rgb_composite(sc.reflectance[[2, 1, 0]], percentile=99.5)
    fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.9), constrained_layout=True)
    axes[0].imshow(rgb)
    axes[0].set_title("true colour (red, green, blue)", fontsize=9)
    axes[1].imshow(rgb * 0.4)
    axes[1].imshow(np.ma.masked_equal(classes, NODATA_CLASS), cmap=class_colormap(),
                   vmin=-0.5, vmax=len(CLASSES) - 0.5, interpolation="nearest")
    axes[1].set_title("facies map (inside the 1984 outline)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    present = set(np.unique(classes).tolist())
    handles = [Patch(facecolor=np.array(c.colour) / 255.0, edgecolor="k", label=c.name)
               for c in CLASSES if c.code in present]
    axes[1].legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(dest, dpi=72)
    plt.close(fig)
    from PIL import Image  # a palette PNG: a third of the size, same look

    Image.open(dest).convert("RGB").quantize(colors=128).save(dest, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--figures", type=Path, default=None)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    a = ap.parse_args()
    from glacierfacies.examples import example_path, zone_shares

    ex = example_path("athabasca")
    dem, outl = ex / "athabasca_dem.tif", ex / "athabasca_outline.shp"
    out = a.out
    (out / "maps").mkdir(parents=True, exist_ok=True)
    glacierfacies("dataset", "import-points", a.shared / "aberle" / "Landsat_training_data.csv",
                  "--bands", "landsat89", "--offset", "-0.2", "--glacier-column", "site_name",
                  "--folds", "4", "--class-map", "1=snow,2=shadow,3=ice,4=debris,5=water",
                  "-o", out / "points", "--overwrite")
    glacierfacies("train", out / "points", "-o", out / "run", "--preset", "sample",
                  "--threads", "1", "--quiet")
    models = [a for m in sorted((out / "run" / "models").glob("fold*.pt")) for a in ("--model", m)]
    for s in SCENES:
        glacierfacies("map", ex / s, "--dem", dem, "--outlines", outl, *models,
                      "-o", out / "maps" / f"{s}_facies.tif", "--confidence",
                      out / "maps" / f"{s}_confidence.tif", "--overwrite")
    glacierfacies("products", *[out / "maps" / f"{s}_facies.tif" for s in SCENES],
                  "--outlines", outl, "--dem", dem, "--id-column", "ID",
                  "-o", out / "products.csv")
    shares = {s: zone_shares(out / "maps" / f"{s}_facies.tif", dem, outl) for s in SCENES}
    print(json.dumps(shares, indent=1))
    (out / "zone_shares.json").write_text(json.dumps(shares, indent=1))
    if a.figures:
        a.figures.mkdir(parents=True, exist_ok=True)
        for s, title in zip(SCENES, ("HLS L30 (Landsat 8), 2020-08-16",
                                     "HLS S30 (Sentinel-2), 2020-09-09"), strict=True):
            figure(ex / s, out / "maps" / f"{s}_facies.tif", a.figures / f"athabasca_{s}.png",
                   f"Athabasca Glacier, {title}")


if __name__ == "__main__":
    main()
