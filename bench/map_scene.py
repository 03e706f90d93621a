"""Bench for issue 6: dense tiled inference vs the per-patch method, and mode smoothing.

Needs only torch + numpy + scipy (the package is imported from ../src), so it runs on a bare
GPU box. All numbers of one invocation come from the same run on the same machine.

  CPU (2 threads):  python bench/map_scene.py --device cpu --size 1024
  GPU (H100):       python bench/map_scene.py --device cuda --size 10980 --precision bf16
  Large scene:      python bench/map_scene.py --large-scene 10980   (needs rasterio etc.)

--large-scene N writes a synthetic N x N Sentinel-2-like scene (6-band GeoTIFF stack, DEM,
outlines of a few glaciers) in a child process, then maps it with `glacierfacies.mapping`
(block-wise reading, small model) in this process and reports the peak RSS (getrusage).

Prints one JSON object (also written to --json): dense px/s, per-patch px/s and their ratio,
the max |p_dense - p_patch| at the per-patch pixels, and (unless --no-smoothing) the
vectorised vs generic_filter mode-smoothing times on a --smooth-size map.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glacierfacies.mapping.inference import DenseOptions, dense_predict, patch_predict
from glacierfacies.model.member import Member
from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.smoothing import mode_filter, mode_filter_reference  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_model(width: int, patch_size: int, seed: int) -> TwoScaleCNN:
    """A TwoScaleCNN with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TwoScaleCNN(11, width=width, patch_size=patch_size)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return model.eval()


# named option sets for --variants (each adds one change to the one before it)
LEGACY = dict(fuse_bn=False, phase_split=False, pad_channels=1, balanced_tiles=False,
              overlap_copies=False)
VARIANTS = {
    "legacy": LEGACY,
    "balanced": {**LEGACY, "balanced_tiles": True},
    "fuse": {**LEGACY, "balanced_tiles": True, "fuse_bn": True},
    "fuse_pad": {**LEGACY, "balanced_tiles": True, "fuse_bn": True, "pad_channels": 8},
    "fuse_pad_phase": {**LEGACY, "balanced_tiles": True, "fuse_bn": True, "pad_channels": 8,
                       "phase_split": True},
    "default": {},
    "default_poolmax": {"pool": "pool"},
    "default_slices": {"pool": "slices"},
    "default_phase": {"phase_split": True},
    "default_nopad": {"pad_channels": 1},
    "default_nofuse": {"fuse_bn": False},
    "default_nooverlap": {"overlap_copies": False},
    "default_compile": {"compile": True},
    "compile_poolmax": {"compile": True, "pool": "pool"},
    "default_compile_max": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"},
}


def options_from_args(args: argparse.Namespace) -> DenseOptions:
    if args.legacy:
        return DenseOptions(**LEGACY)
    opts = DenseOptions(compile=args.compile, compile_mode=args.compile_mode)
    if args.no_fuse_bn:
        opts.fuse_bn = False
    if args.phase_split != "auto":
        opts.phase_split = args.phase_split == "on"
    if args.pad_channels is not None:
        opts.pad_channels = args.pad_channels
    if args.no_balanced_tiles:
        opts.balanced_tiles = False
    if args.no_overlap:
        opts.overlap_copies = False
    if args.pool is not None:
        opts.pool = args.pool
    return opts


def time_dense(member: Member, feats, args: argparse.Namespace, opts: DenseOptions,
               tile_size: int, batch_size: int) -> dict:
    """Warm-up on the whole array (same tile shape: cudnn autotune, compile), then repeats."""
    kw = dict(tile_size=tile_size, device=args.device, precision=args.precision,
              batch_size=batch_size, options=opts)
    t0 = time.perf_counter()
    dense_predict(member, feats, **kw)
    _sync(args.device)
    warm_s = time.perf_counter() - t0
    times = []
    pred = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        pred = dense_predict(member, feats, **kw)
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    n_dense = int((pred.classes != 255).sum())
    return {"dense_s_median": round(med, 4), "dense_s_all": [round(t, 4) for t in times],
            "warmup_s": round(warm_s, 2), "dense_px": n_dense,
            "dense_px_per_s": round(n_dense / med), "tiles": pred.tiles_run,
            "tile_hw": [pred.stats["tile_h"], pred.stats["tile_w"]],
            "classes_sum": int(pred.classes.astype(np.int64).sum())}


def profile_tile(member: Member, feats, args: argparse.Namespace, opts: DenseOptions) -> str:
    """Top CUDA kernels of one whole-array dense_predict (already warm)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        dense_predict(member, feats, tile_size=args.tile_size, device=args.device,
                      precision=args.precision, batch_size=args.batch_size, options=opts)
        _sync(args.device)
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)


def bench_inference(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    model = make_model(args.width, args.patch_size, args.seed)
    member = Member(model, temperature=1.3)
    n = args.size
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):  # numpy's generator takes ~20 s for 10980^2 x 11
        gen = torch.Generator(args.device).manual_seed(args.seed)
        feats = torch.randn((11, n, n), device=args.device, generator=gen)
        features = feats.cpu().numpy()
        if args.features_on_host:
            feats = torch.from_numpy(features)
        # else: "features already in memory" on the device
    else:
        features = rng.standard_normal((11, n, n), dtype=np.float32)
        feats = torch.from_numpy(features)
    make_s = time.perf_counter() - t0
    out: dict = {"size": n, "features_make_s": round(make_s, 2)}
    opts = options_from_args(args)
    out["options"] = opts.__dict__.copy()
    if args.variants:
        table = {}
        for name in args.variants.split(","):
            name, _, tile = name.partition("@")  # e.g. default@4096 or default@2048x2
            tile, _, bs = tile.partition("x")
            vopts = DenseOptions(**VARIANTS[name])
            try:
                r = time_dense(member, feats, args, vopts, int(tile or args.tile_size), int(bs or 1))
            except Exception as exc:  # report and go on (e.g. a compile failure)
                r = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            key = name + (f"@{tile}" if tile else "") + (f"x{bs}" if bs else "")
            table[key] = r
            print(key, json.dumps(r), flush=True)
        out["variants"] = table
    if args.profile:
        for name in args.profile.split(","):
            print(f"--- profile {name}", flush=True)
            print(profile_tile(member, feats, args, DenseOptions(**VARIANTS[name])), flush=True)
    r = time_dense(member, feats, args, opts, args.tile_size, args.batch_size)
    out.update(r)

    # per-patch method: the same model, one S x S window per pixel, batched forward
    halo = args.patch_size // 2
    k = args.patch_pixels
    rows = rng.integers(halo, n - halo, k)
    cols = rng.integers(halo, n - halo, k)
    patch_predict(member, features, rows[: args.patch_batch], cols[: args.patch_batch],
                  batch_size=args.patch_batch, device=args.device)  # warm-up
    _sync(args.device)
    t0 = time.perf_counter()
    p_patch = patch_predict(member, features, rows, cols, batch_size=args.patch_batch,
                            device=args.device)
    _sync(args.device)
    patch_s = time.perf_counter() - t0
    # exactness at those pixels (fp32 dense on a small window around them is enough), with
    # the timed run's options and with the legacy (unfused, dilated) path
    sub = min(n, 2048 if args.device.startswith("cuda") else 512)
    inside = (rows < sub - halo) & (cols < sub - halo)
    diffs = {}
    # true fp32 for the check: TF32 (cuDNN's default) rounds conv inputs to 10-bit
    # mantissas in both paths, which alone moves probabilities by ~1e-5
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    p_patch = np.zeros_like(p_patch)
    if inside.any():
        p_patch[inside] = patch_predict(member, features, rows[inside], cols[inside],
                                        batch_size=args.patch_batch, device=args.device)
    checks = [("options", DenseOptions(**{**opts.__dict__, "compile": False})),
              ("legacy", DenseOptions(**LEGACY))]
    if args.exact_compile:
        checks.append(("compiled", DenseOptions(**{**opts.__dict__, "compile": True})))
    for name, o in checks:
        ref = dense_predict(member, features[:, :sub, :sub], tile_size=256, device=args.device,
                            return_probs=True, options=o)
        diffs[name] = float(np.abs(ref.probs[:, rows[inside], cols[inside]].T
                                   - p_patch[inside]).max()) if inside.any() else float("nan")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    dense_rate = out["dense_px_per_s"]
    patch_rate = k / patch_s
    out.update({
        "patch_px": k, "patch_s": round(patch_s, 3), "patch_px_per_s": round(patch_rate, 1),
        "ratio_dense_vs_patch": round(dense_rate / patch_rate, 1),
        "max_abs_prob_diff_fp32_dense_vs_patch": diffs["options"],
        "max_abs_prob_diff_fp32_legacy_dense_vs_patch": diffs["legacy"],
        "max_abs_prob_diff_fp32_compiled_dense_vs_patch": diffs.get("compiled"),
        "exactness_pixels": int(inside.sum()),
    })
    return out


def bench_smoothing(size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 8, (size, size)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.2] = 255
    fast_s = float("inf")
    for _ in range(5):  # best of 5: the box is shared, the fast path is short
        t0 = time.perf_counter()
        fast = mode_filter(classes)
        fast_s = min(fast_s, time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = mode_filter_reference(classes)
    ref_s = time.perf_counter() - t0
    return {
        "smooth_size": size, "vectorised_best_of_5_s": round(fast_s, 4), "generic_filter_s": round(ref_s, 2),
        "ratio": round(ref_s / fast_s, 1), "identical": bool((fast == ref).all()),
    }


def make_large_scene(folder: Path, n: int, seed: int = 0) -> None:
    """Synthetic N x N 10 m scene, DEM and outlines, written window by window (bounded RAM)."""
    import geopandas as gpd
    from rasterio.transform import from_origin
    from shapely.affinity import scale as shp_scale
    from shapely.geometry import Point

    from _synthetic import write_scene_and_dem

    rng = np.random.default_rng(seed)
    x0, y0, res = 300_000.0, 5_200_000.0, 10.0
    transform = from_origin(x0, y0, res, res)
    glaciers = []
    for _ in range(8):  # a few glaciers spread over the tile (most blocks hold none)
        cx = x0 + res * n * (0.1 + 0.8 * rng.random())
        cy = y0 - res * n * (0.1 + 0.8 * rng.random())
        glaciers.append(shp_scale(Point(cx, cy).buffer(1000 + 1500 * rng.random()),
                                  1.0, 0.6 + 0.8 * rng.random()))
    outline_table = gpd.GeoDataFrame({"rgi_id": [f"G{i}" for i in range(len(glaciers))]},
                                     geometry=glaciers, crs="EPSG:32632")
    outline_table.to_file(folder / "outlines.gpkg")
    write_scene_and_dem(folder, "scene_20220708T103629.tif", n, transform, "EPSG:32632",
                        outline_table, dem_base=2600, dem_amplitude=250, sun_elevation=50,
                        step=1024)


def bench_large_scene(args: argparse.Namespace) -> dict:
    """Map a synthetic N x N scene block-wise; peak RSS of this process (the mapping only)."""
    import resource
    import subprocess
    import tempfile

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.features import FEATURE_NAMES
    from glacierfacies.mapping.config import MapConfig
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.model.card import ModelCard, save_model

    work = Path(tempfile.mkdtemp(prefix="gf_large_", dir=args.workdir))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--make-large", str(work),
                    "--large-scene", str(args.large_scene)], check=True)
    make_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    model = make_model(8, args.patch_size, args.seed)
    card = ModelCard(features=list(FEATURE_NAMES), classes=list(CLASS_NAMES),
                     patch_size=args.patch_size,
                     normalisation={"min": [0] * 6 + [2000, 0, 0, 0, -2000],
                                    "max": [1] * 6 + [3500, 60, 1, 255, 2000]},
                     architecture=model.kwargs, training={})
    save_model(model, card, work / "fold0.pt")
    t0 = time.perf_counter()
    res = map_scene(work / "scene_20220708T103629.tif", work / "dem.tif", work / "outlines.gpkg",
                    [work / "fold0.pt"], work / "facies.tif",
                    confidence_out=work / "confidence.tif",
                    config=MapConfig(tile_size=1024, device=args.device), progress=True)
    map_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB (Linux)
    out = {
        "scene_px": args.large_scene, "model_width": 8, "make_s": round(make_s, 1), "map_s": round(map_s, 1),
        "classified_px": res.n_classified, **res.extra,
        "peak_rss_gb": round(peak, 2), "rss_before_map_gb": round(rss_before, 2),
        "workdir": str(work),
    }
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=1024, help="feature raster side (pixels)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=33)
    ap.add_argument("--tile-size", type=int, default=None, help="default 1024 cpu / 2048 cuda")
    ap.add_argument("--batch-size", type=int, default=1, help="tiles per forward")
    ap.add_argument("--repeats", type=int, default=3, help="timed dense runs (median)")
    ap.add_argument("--legacy", action="store_true", help="the first version (no speed options)")
    ap.add_argument("--no-fuse-bn", action="store_true")
    ap.add_argument("--phase-split", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--pad-channels", type=int, default=None)
    ap.add_argument("--no-balanced-tiles", action="store_true")
    ap.add_argument("--no-overlap", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the dense network")
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--pool", choices=["pool", "window", "slices"], default=None)
    ap.add_argument("--exact-compile", action="store_true",
                    help="also check the exactness of the compiled fp32 path (one more compile)")
    ap.add_argument("--variants", default="",
                    help="comma list of VARIANTS names (name@TILE or name@TILExBATCH) timed first")
    ap.add_argument("--profile", default="", help="comma list of VARIANTS names to profile")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--patch-pixels", type=int, default=None, help="default 1024 cpu / 65536 cuda")
    ap.add_argument("--patch-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--features-on-host", action="store_true",
                    help="cuda: keep features in host memory (tiles copied per forward)")
    ap.add_argument("--smooth-size", type=int, default=2000)
    ap.add_argument("--no-smoothing", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--large-scene", type=int, default=0,
                    help="map a synthetic N x N scene block-wise and report peak RSS")
    ap.add_argument("--make-large", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help="where the synthetic scene goes")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic scene and maps")
    args = ap.parse_args()
    if args.make_large is not None:
        make_large_scene(args.make_large, args.large_scene, args.seed)
        return
    cuda = args.device.startswith("cuda")
    args.tile_size = args.tile_size or (2048 if cuda else 1024)
    args.patch_pixels = args.patch_pixels or (65536 if cuda else 1024)
    torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    result = {
        "machine": platform.node(), "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "date": time.strftime("%Y-%m-%d %H:%M"), "argv": " ".join(sys.argv),
        "model": {"width": args.width, "patch_size": args.patch_size},
        "precision": args.precision, "tile_size": args.tile_size,
    }
    if args.large_scene:
        result["large_scene"] = bench_large_scene(args)
        text = json.dumps(result, indent=1)
        print(text)
        if args.json:
            args.json.write_text(text)
        return
    result["inference"] = bench_inference(args)
    print(json.dumps(result["inference"]), flush=True)
    if not args.no_smoothing:
        result["smoothing"] = bench_smoothing(args.smooth_size, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
