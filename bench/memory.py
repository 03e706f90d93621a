"""Bench for issue 15: peak RSS of `dataset build` and `map` on a Sentinel-2-sized scene.

Writes a synthetic S2-like scene window by window (bounded RAM): a 6-band float32 GeoTIFF
stack on a 10 m grid, a DEM with ~2 km of relief, glacier outlines covering about 5% of the
scene (GeoPackage) and N labelled points inside the glaciers, plus an untrained
paper-width (64) model. Then runs `glacierfacies dataset build` and `glacierfacies map` as
subprocesses under `/usr/bin/time -v`, with the package from each `--src` folder (old code
and new code, same run), and prints peak RSS and wall time of each as JSON.

  python bench/memory.py --size 5490 --src /work/main/src --src src --workdir /tmp/gf15

A watchdog kills a run whose RSS passes --cap-gb (reported as "over N GB") so a baseline
cannot take the shared box down.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SCENE = "scene_20220708T103629.tif"
EPSG = "EPSG:32632"


def make_world(folder: Path, n: int, n_labels: int, seed: int = 0) -> dict:
    """Scene stack, DEM, outlines (~5% glacier) and labels in `folder`, written by windows."""
    import geopandas as gpd
    from rasterio.transform import from_origin
    from shapely.affinity import rotate
    from shapely.affinity import scale as shp_scale
    from shapely.geometry import Point

    from _synthetic import write_scene_and_dem

    rng = np.random.default_rng(seed)
    x0, y0, res = 300_000.0, 5_200_000.0, 10.0
    transform = from_origin(x0, y0, res, res)
    side = n * res
    glaciers, area = [], 0.0
    while area < 0.05 * side * side:  # ellipses of 1-3 km until 5% of the scene is ice
        cx = x0 + side * (0.05 + 0.9 * rng.random())
        cy = y0 - side * (0.05 + 0.9 * rng.random())
        g = shp_scale(Point(cx, cy).buffer(1000 + 2000 * rng.random()), 1.0,
                      0.5 + 0.8 * rng.random())
        g = rotate(g, 180 * rng.random())
        if any(g.intersects(o) for o in glaciers):
            continue
        glaciers.append(g)
        area += g.area
    outlines = gpd.GeoDataFrame({"rgi_id": [f"G{i:03d}" for i in range(len(glaciers))]},
                                geometry=glaciers, crs=EPSG)
    outlines.to_file(folder / "outlines.gpkg")
    # labels: uniform points inside the glaciers, classes at random
    from glacierfacies.classes import CLASS_NAMES

    pts, gl = [], []
    weights = np.array([g.area for g in glaciers]) / area
    while len(pts) < n_labels:
        i = int(rng.choice(len(glaciers), p=weights))
        minx, miny, maxx, maxy = glaciers[i].bounds
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        inside = (x0 + 200 < p.x < x0 + side - 200) and (y0 - side + 200 < p.y < y0 - 200)
        if inside and glaciers[i].contains(p):
            pts.append(p)
            gl.append(f"G{i:03d}")
    labels = gpd.GeoDataFrame({
        "class": rng.choice(np.array(CLASS_NAMES[:5]), len(pts)), "glacier": gl,
        "scene_id": "synthetic_T32TPS"}, geometry=pts, crs=EPSG)
    labels.to_file(folder / "labels.gpkg")
    write_scene_and_dem(folder, SCENE, n, transform, EPSG, outlines, dem_base=2200,
                        dem_amplitude=900, sun_elevation=35, step=512)
    model_file = folder / "fold0.pt"
    _save_model(model_file, seed)
    return {"glaciers": len(glaciers), "glacier_share": round(area / side / side, 4),
            "labels": len(pts)}


def _save_model(path: Path, seed: int) -> None:
    """An untrained paper-width (64) two-scale CNN on all 11 features, patch 33."""
    import torch

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.features import FEATURE_NAMES
    from glacierfacies.model.card import ModelCard, save_model
    from glacierfacies.model.network import TwoScaleCNN

    torch.manual_seed(seed)
    model = TwoScaleCNN(11, width=64, patch_size=33).eval()
    card = ModelCard(features=list(FEATURE_NAMES), classes=list(CLASS_NAMES), patch_size=33,
                     normalisation={"min": [0] * 6 + [1000, 0, 0, 0, -3000],
                                    "max": [1] * 6 + [3500, 70, 1, 255, 3000]},
                     architecture=model.kwargs, training={})
    save_model(model, card, path)


def _rss_kb(pid: int) -> int:
    """RSS of a process and its children (kB), from /proc."""
    total = 0
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    try:
        m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
        total += int(m.group(1)) if m else 0
    except OSError:
        pass
    return total + sum(_rss_kb(int(k)) for k in kids)


def run_timed(cmd: list[str], env: dict, cap_gb: float, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v; peak RSS (GB), wall s; killed past `cap_gb`."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(["/usr/bin/time", "-v", *cmd], env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
    killed = {"flag": False}

    def watch() -> None:
        while proc.poll() is None:
            if _rss_kb(proc.pid) > cap_gb * 1e6:
                killed["flag"] = True
                for k in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    os.kill(int(k), 9)
                return
            time.sleep(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    rc = proc.wait()
    th.join()
    wall = time.perf_counter() - t0
    text = log.read_text()
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    peak = int(m.group(1)) / 1e6 if m else float("nan")
    out = {"rc": rc, "wall_s": round(wall, 1), "peak_rss_gb": round(peak, 2)}
    if killed["flag"]:
        out["peak_rss_gb"] = f"over {cap_gb:g} GB"
    elif rc != 0:
        out["error"] = text.strip().splitlines()[-30:]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5490)
    ap.add_argument("--labels", type=int, default=5000)
    ap.add_argument("--src", action="append", default=None,
                    help="package source folder to run (repeatable: old, new)")
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--cap-gb", type=float, default=12.0)
    ap.add_argument("--only", choices=["build", "map"], default=None)
    ap.add_argument("--make", action="store_true", help="only write the world (child mode)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.workdir) / f"world_{args.size}"
    if args.make:
        work.mkdir(parents=True, exist_ok=True)
        info = make_world(work, args.size, args.labels)
        (work / "world.json").write_text(json.dumps(info))
        return
    srcs = args.src or [str(Path(__file__).resolve().parents[1] / "src")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": srcs[-1]}
    if not (work / "world.json").exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make", "--size", str(args.size),
                        "--labels", str(args.labels), "--workdir", args.workdir],
                       check=True, env=env)
        print(f"world written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result = {"size": args.size, "world": json.loads((work / "world.json").read_text()),
              "runs": {}}
    cli = [sys.executable, "-m", "glacierfacies.cli"]
    for src in srcs:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
        tag = "old" if src.rstrip("/").startswith("/work/main") else "new"
        runs = {}
        if args.only in (None, "build"):
            runs["dataset_build"] = run_timed(
                [*cli, "dataset", "build", "--scenes", str(work / SCENE), "--dem",
                 str(work / "dem.tif"), "--outlines", str(work / "outlines.gpkg"), "--labels",
                 str(work / "labels.gpkg"), "-o", str(work / f"patches_{tag}"), "--overwrite",
                 "--dtype", "float16"],
                env, args.cap_gb, work / f"build_{tag}.log")
        if args.only in (None, "map"):
            runs["map"] = run_timed(
                [*cli, "map", str(work / SCENE), "--dem", str(work / "dem.tif"), "--outlines",
                 str(work / "outlines.gpkg"), "--model", str(work / "fold0.pt"), "-o",
                 str(work / f"facies_{tag}.tif"), "--confidence",
                 str(work / f"confidence_{tag}.tif"), "--overwrite"],
                env, args.cap_gb, work / f"map_{tag}.log")
        result["runs"][f"{tag} ({src})"] = runs
        print(json.dumps({tag: runs}), file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
