"""The paper's fold models on the real Athabasca HLS clips, through the `map` command itself.

Imports feature sets 1 and 4 from the authors' weights (`models import-reference`), then
maps both clips (L30 2020-08-16, S30 2020-09-09) with each imported ensemble and with the
two built-in models, writing classes, confidence and probabilities to OUT, and the wall time
of every command to OUT/timings.json. Runs where rasterio/geopandas import (the GPU box
with the carried wheels too); `bench/reference_athabasca_table.py` scores the maps.

    python bench/reference_athabasca.py --weights ../shared/data/reference -o OUT --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "src" / "glacierfacies" / "examples" / "athabasca"
SCENES = ("L30_20200816", "S30_20200909")


def glacierfacies(*args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "glacierfacies.cli", *args],
                         capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode:
        sys.exit(f"glacierfacies {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    print(f"{dt:7.1f} s  glacierfacies {' '.join(args[:2])} ...", flush=True)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="the authors' repository")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--sets", default="1,4")
    ap.add_argument("--mode", default="exact", choices=("exact", "dense"),
                    help="the imported network: exact per-patch or the dense approximation")
    ap.add_argument("--no-builtin", action="store_true", help="map with the paper's only")
    ap.add_argument("--scenes", default=",".join(SCENES), help="clips to map")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    models = {} if args.no_builtin else {"builtin:landsat": "builtin_landsat",
                                         "builtin:sentinel2": "builtin_sentinel2"}
    suffix = "" if args.mode == "exact" else f"_{args.mode}"
    for s in args.sets.split(","):
        card = args.out / f"reference_set{s}{suffix}"
        timings[f"import set {s}"] = glacierfacies(
            "models", "import-reference", str(args.weights), "-o", str(card),
            "--feature-set", s, "--mode", args.mode, "--overwrite")
        models[str(card)] = f"reference_set{s}{suffix}"
    scenes = args.scenes.split(",")
    for scene in scenes:
        for model, tag in models.items():
            stem = args.out / f"{scene}_{tag}"
            timings[f"{scene} {tag}"] = glacierfacies(
                "map", str(EX / scene), "--dem", str(EX / "athabasca_dem.tif"),
                "--outlines", str(EX / "athabasca_outline.shp"), "--model", model,
                "-o", f"{stem}_facies.tif", "--confidence", f"{stem}_confidence.tif",
                "--probabilities", f"{stem}_probabilities.tif", "--device", args.device,
                "--precision", args.precision, "--overwrite")
    name = f"timings{suffix}_{'_'.join(s[:3] for s in scenes)}.json"
    (args.out / name).write_text(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
