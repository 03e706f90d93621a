"""Bench for issue 6: dense tiled inference vs the per-patch method, and mode smoothing.

Needs only torch + numpy + scipy (the package is imported from ../src), so it runs on a bare
GPU box. All numbers of one invocation come from the same run on the same machine.

  CPU (2 threads):  python bench/map_scene.py --device cpu --size 1024
  GPU (H100):       python bench/map_scene.py --device cuda --size 10980 --precision bf16

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

from glacierfacies.inference import Member, dense_predict, patch_predict  # noqa: E402
from glacierfacies.model import TwoScaleCNN  # noqa: E402
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


def bench_inference(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    model = make_model(args.width, args.patch_size, args.seed)
    member = Member(model, temperature=1.3)
    n = args.size
    t0 = time.perf_counter()
    features = rng.standard_normal((11, n, n), dtype=np.float32)
    make_s = time.perf_counter() - t0
    feats = torch.from_numpy(features)
    if args.device.startswith("cuda") and not args.features_on_host:
        feats = feats.to(args.device)  # "features already in memory" on the device
    # warm-up (cudnn autotune, allocator) on a small corner
    warm = min(n, args.tile_size + 64)
    dense_predict(member, feats[:, :warm, :warm], tile_size=args.tile_size, device=args.device,
                  precision=args.precision, batch_size=args.batch_size)
    _sync(args.device)
    t0 = time.perf_counter()
    pred = dense_predict(member, feats, tile_size=args.tile_size, device=args.device,
                         precision=args.precision, batch_size=args.batch_size)
    _sync(args.device)
    dense_s = time.perf_counter() - t0
    n_dense = int((pred.classes != 255).sum())

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
    # exactness at those pixels (fp32 dense on a small window around them is enough)
    sub = min(n, 512)
    inside = (rows < sub - halo) & (cols < sub - halo)
    ref = dense_predict(member, features[:, :sub, :sub], tile_size=256, device=args.device,
                        return_probs=True)
    diff = float(np.abs(ref.probs[:, rows[inside], cols[inside]].T - p_patch[inside]).max()) \
        if inside.any() else float("nan")
    dense_rate = n_dense / dense_s
    patch_rate = k / patch_s
    return {
        "size": n, "features_make_s": round(make_s, 2), "dense_s": round(dense_s, 3),
        "dense_px": n_dense, "dense_px_per_s": round(dense_rate), "tiles": pred.tiles_run,
        "patch_px": k, "patch_s": round(patch_s, 3), "patch_px_per_s": round(patch_rate, 1),
        "ratio_dense_vs_patch": round(dense_rate / patch_rate, 1),
        "max_abs_prob_diff_fp32_dense_vs_patch": diff,
    }


def bench_smoothing(size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 8, (size, size)).astype(np.uint8)
    classes[rng.random(classes.shape) < 0.2] = 255
    t0 = time.perf_counter()
    fast = mode_filter(classes)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = mode_filter_reference(classes)
    ref_s = time.perf_counter() - t0
    return {
        "smooth_size": size, "vectorised_s": round(fast_s, 4), "generic_filter_s": round(ref_s, 2),
        "ratio": round(ref_s / fast_s, 1), "identical": bool((fast == ref).all()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=1024, help="feature raster side (pixels)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--patch-size", type=int, default=33)
    ap.add_argument("--tile-size", type=int, default=None, help="default 512 cpu / 2048 cuda")
    ap.add_argument("--batch-size", type=int, default=1, help="tiles per forward")
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
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.tile_size = args.tile_size or (2048 if cuda else 512)
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
