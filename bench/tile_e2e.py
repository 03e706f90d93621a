"""Bench for issue 21: the whole `glacierfacies map` command on a synthetic Sentinel-2-size
tile, old code and new code in the same run, with a per-stage breakdown and peak RSS.

The world is `bench/memory.py`'s (6-band float32 stack, DEM with 1,840 m of relief, ~5% ice
in 1-3 km elliptic glaciers, untrained paper-width model). Each `--src` folder runs
`glacierfacies map SCENE --dem --outlines --model --confidence --device D` in a fresh
process (start-up included in the wall time). The child wraps the stage functions of that
code with timers (summed over calls, threads included, so stages overlap the wall time
where the new code reads and writes in threads) and reports its own peak RSS
(`getrusage`). The maps of the runs are then compared on every pixel either classified.

  python bench/tile_e2e.py --size 5490 --src /work/main/src --src src --workdir /tmp/gf21
  python bench/tile_e2e.py --size 10980 --src src --device cuda --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENE = "scene_20220708T103629.tif"

# stage -> (module, attribute) wrapped in the child; missing ones are skipped (old code)
STAGES = {
    "read_scene": [("glacierfacies.scenes.reader", "read_scene")],
    "read_dem": [("glacierfacies.stack", "_read_dem")],
    "outlines": [("glacierfacies.outlines", "rasterise_outlines"),
                 ("glacierfacies.outlines", "read_outlines")],
    "context": [("glacierfacies.stack", "terrain_context")],
    "shadow": [("glacierfacies.terrain", "cast_shadow"),
               ("glacierfacies.terrain_torch", "cast_shadow")],
    "slope_hillshade": [("glacierfacies.terrain", "horn_gradients"),
                        ("glacierfacies.terrain", "hillshade"),
                        ("glacierfacies.terrain", "slope_from_gradients"),
                        ("glacierfacies.terrain_torch", "horn_gradients"),
                        ("glacierfacies.terrain_torch", "hillshade"),
                        ("glacierfacies.terrain_torch", "slope_from_gradients")],
    "proximity": [("glacierfacies.terrain", "proximity")],
    "features": [("glacierfacies.stack", "build_feature_stack"),
                 ("glacierfacies.mapping.scene_features", "SceneFeatures.window")],
    "inference": [("glacierfacies.mapping.inference", "dense_predict")],
    "write_blocks": [("glacierfacies.mapping.blockwrite", "BlockMapWriter.write")],
    "smoothing": [("glacierfacies.mapping.blockwrite", "BlockMapWriter._smooth")],
    "cog": [("glacierfacies.mapping.blockwrite", "copy_cog")],
}


def _child(argv: list[str]) -> None:
    """Run the CLI in this process with the stage functions timed; print one JSON line."""
    import importlib
    import threading

    t_start = time.perf_counter()
    totals: dict[str, float] = {}
    lock = threading.Lock()
    depth = threading.local()

    def wrap(stage: str, fn):
        def timed(*a, **k):
            outer = getattr(depth, stage, 0) == 0  # count nested calls once
            setattr(depth, stage, getattr(depth, stage, 0) + 1)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                setattr(depth, stage, getattr(depth, stage, 0) - 1)
                if outer:
                    with lock:
                        totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - t0
        timed.__wrapped__ = fn
        return timed

    for stage, targets in STAGES.items():
        for mod_name, attr in targets:
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                continue
            owner, name = mod, attr
            if "." in attr:
                cls_name, name = attr.split(".")
                owner = getattr(mod, cls_name, None)
            if owner is None or not hasattr(owner, name):
                continue
            setattr(owner, name, wrap(stage, getattr(owner, name)))
    from glacierfacies.cli import main

    t_imports = time.perf_counter() - t_start
    rc = 0
    sys.argv = ["glacierfacies", *argv]
    try:
        main()
    except SystemExit as exc:
        rc = int(exc.code or 0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB
    print("TILE_E2E " + json.dumps({"rc": rc, "stages_s": {k: round(v, 2) for k, v in
                                                          totals.items()},
                                    "imports_s": round(t_imports, 2),
                                    "in_process_s": round(time.perf_counter() - t_start, 2),
                                    "peak_rss_gb": round(rss, 3)}), flush=True)


def _path(*first: str) -> str:
    """PYTHONPATH with `first` ahead of the caller's own entries (e.g. carried wheels)."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join([*first, *rest])


def compare(a: Path, b: Path) -> dict:
    """Pixels classified in either map; share of them with the same class."""
    import rasterio
    from rasterio.windows import Window

    n_any = n_same = n_a = n_b = 0
    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        h, w = sa.shape
        for r in range(0, h, 2048):
            win = Window(0, r, w, min(2048, h - r))
            x, y = sa.read(1, window=win), sb.read(1, window=win)
            m = (x != 255) | (y != 255)
            n_any += int(m.sum())
            n_same += int((x[m] == y[m]).sum())
            n_a += int((x != 255).sum())
            n_b += int((y != 255).sum())
    return {"classified_a": n_a, "classified_b": n_b, "either": n_any,
            "identical_share": round(n_same / max(n_any, 1), 7), "differ": n_any - n_same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5490)
    ap.add_argument("--src", action="append", default=None,
                    help="package source folder to run (repeatable: old, new)")
    ap.add_argument("--workdir", default="/tmp/gf21")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--busy", type=int, default=0,
                    help="busy-loop processes (python -c 'while True: pass') during the runs")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each --src")
    ap.add_argument("--last-repeat", type=int, default=1,
                    help="runs of the last --src (the new code) in each repeat")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=argparse.REMAINDER, default=None)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    srcs = args.src or [str(HERE.parent / "src")]
    work = Path(args.workdir) / f"world_{args.size}"
    if not (work / "world.json").exists():
        t0 = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": _path(srcs[-1], str(HERE))}
        subprocess.run([sys.executable, str(HERE / "memory.py"), "--make", "--size",
                        str(args.size), "--workdir", args.workdir], check=True, env=env)
        print(f"world written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    result = {"size": args.size, "device": args.device, "precision": args.precision,
              "busy": args.busy, "load_before": os.getloadavg(),
              "world": json.loads((work / "world.json").read_text()), "runs": []}
    try:
        for rep in range(args.repeat):
            order = list(enumerate(srcs)) + [(len(srcs) - 1, srcs[-1])] * (args.last_repeat - 1)
            for i, src in order:
                out = work / f"facies_{i}.tif"
                cmd = ["map", str(work / SCENE), "--dem", str(work / "dem.tif"), "--outlines",
                       str(work / "outlines.gpkg"), "--model", str(work / "fold0.pt"), "-o",
                       str(out), "--confidence", str(work / f"confidence_{i}.tif"),
                       "--overwrite", "--device", args.device, "--precision", args.precision]
                env = {**os.environ, "PYTHONPATH": _path(src)}
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "--child", *cmd], env=env,
                                   capture_output=True, text=True)
                wall = time.perf_counter() - t0
                line = [x for x in p.stdout.splitlines() if x.startswith("TILE_E2E ")]
                run = {"src": src, "rep": rep, "wall_s": round(wall, 2),
                       "load": os.getloadavg()}
                if line:
                    run.update(json.loads(line[-1][len("TILE_E2E "):]))
                if p.returncode or not line:
                    run["error"] = (p.stdout + p.stderr).strip().splitlines()[-20:]
                result["runs"].append(run)
                print(json.dumps(run), file=sys.stderr, flush=True)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    maps = [work / f"facies_{i}.tif" for i in range(len(srcs))]
    if len(maps) > 1 and all(m.exists() for m in maps):
        result["identical"] = compare(maps[0], maps[-1])
    walls = {}
    for r in result["runs"]:
        walls.setdefault(r["src"], []).append(r["wall_s"])
    if len(srcs) > 1:
        best = [min(walls[s]) for s in srcs]
        result["ratio_first_over_last"] = round(best[0] / best[-1], 2)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
