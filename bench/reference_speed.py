"""Speed of the paper's models with their exact per-patch semantics, three ways, same run.

1. reference way: one 33 x 33 patch per pixel cut by a Python generator, batches of 1024,
   the per-patch network (what the authors' apply.py does);
2. `patch_logits`: the same patches cut on the device in one indexing op (no Python loop);
3. `dense_logits`: the shared exact pass (model/reference.py) over the mapped pixels only,
   fp32 and bf16 (autocast).
Logits of 2 and 3 are compared with 1 on the same patches (max |diff|, % same class). Then
the 6-fold ensemble through `mapping.inference.dense_predict` on a synthetic tile with 5 %
glacier pixels (fp32 vs bf16 class agreement).

Needs torch, numpy and h5py only (the GPU box has them): the weights are read from the
authors' .h5 files (a folder with weights/<SET>/ or the files themselves), e.g.

    python bench/reference_speed.py --weights ../shared/data/reference --device cpu --quick
    python bench/reference_speed.py --weights .bench_data/reference --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glacierfacies.mapping.inference import dense_predict  # noqa: E402
from glacierfacies.model.member import Member  # noqa: E402
from glacierfacies.model.reference import PATCH, ReferenceCNN  # noqa: E402
from glacierfacies.model.reference_h5 import reference_from_h5  # noqa: E402

T0 = time.perf_counter()


def log(*a) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s]", *a, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def load_fold(weights: Path, fs: int, k: int, dev: torch.device) -> ReferenceCNN:
    f = weights / "weights" / str(fs) / f"{k}_cnn_afterconfidentlearning_weights.h5"
    return reference_from_h5(f).to(dev).eval()


def reference_way(model: ReferenceCNN, x: np.ndarray, rows, cols, dev) -> tuple[float, np.ndarray]:
    """apply.py's way: a generator yields one patch per pixel, batched by 1024."""
    def gen():
        for r, c in zip(rows, cols, strict=True):
            yield x[:, r : r + PATCH, c : c + PATCH]

    out, batch = [], []
    sync(dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in gen():
            batch.append(p)
            if len(batch) == 1024:
                out.append(model(torch.from_numpy(np.stack(batch)).to(dev)).float().cpu())
                batch = []
        if batch:
            out.append(model(torch.from_numpy(np.stack(batch)).to(dev)).float().cpu())
    sync(dev)
    return time.perf_counter() - t0, torch.cat(out).numpy()


def world(h: int, w: int, n_feat: int, frac: float, seed: int = 0):
    """A smooth random feature raster in [0, 1] and a blobby mask covering ~frac of it."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((1, n_feat, h // 64 + 2, w // 64 + 2), np.float32))
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear")[0].numpy()
    x += 0.05 * rng.random((n_feat, h, w), np.float32)
    m_low = torch.from_numpy(rng.random((1, 1, h // 256 + 2, w // 256 + 2), np.float32))
    m = torch.nn.functional.interpolate(m_low, size=(h, w), mode="bilinear")[0, 0].numpy()
    thr = np.quantile(m[::16, ::16], 1 - frac)
    return x, m > thr


def timed(fn, dev, repeat: int = 1):
    fn()  # warm-up (cudnn autotune, allocator)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync(dev)
    return (time.perf_counter() - t0) / repeat, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--world", type=int, default=1024, help="side of the one-model raster")
    ap.add_argument("--ref-patches", type=int, default=16384)
    ap.add_argument("--tile", type=int, default=4096, help="side of the ensemble tile")
    ap.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    ap.add_argument("--tf32", action="store_true",
                    help="let cuDNN/cuBLAS use TF32 for fp32 (PyTorch's default for convs); "
                         "off here, so fp32 is fp32 and the exactness check means something")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.world, args.ref_patches, args.tile = 256, 2048, 512
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    # fp32 exactness is measured with TF32 off; "tf32" (PyTorch's default for cuDNN convs,
    # what `map --precision fp32` runs on a GPU) and bf16 are timed beside it
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "args": {k: str(v) for k, v in vars(args).items()}}
    log(res["device"], res["torch"])

    # --- one model, patches/s ------------------------------------------------------------
    model = load_fold(args.weights, 1, 0, dev)
    x, mask = world(args.world + PATCH - 1, args.world + PATCH - 1, 6, 0.5, seed=1)
    inner = mask[16:-16, 16:-16]
    rows, cols = np.nonzero(inner)
    sel = np.sort(np.random.default_rng(0).choice(len(rows), args.ref_patches, replace=False))
    rows, cols = rows[sel], cols[sel]
    reference_way(model, x, rows[:2048], cols[:2048], dev)  # warm-up
    t_ref, l_ref = reference_way(model, x, rows, cols, dev)
    log(f"reference way: {len(rows) / t_ref:,.0f} patches/s")
    xt = torch.from_numpy(x)[None].to(dev)
    rt, ct = torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)
    with torch.inference_mode():
        t_unf, l_unf = timed(lambda: model.patch_logits(xt, rt, ct, batch=8192), dev)
        l_unf = l_unf.float().cpu().numpy()
        log(f"unfold: {len(rows) / t_unf:,.0f} patches/s")
        where = torch.from_numpy(inner)[None].to(dev)
        n_where = int(inner.sum())
        shared = {}
        for prec in ("fp32", "tf32", "bf16") if dev.type == "cuda" else ("fp32", "bf16"):
            def run(prec=prec):
                torch.backends.cudnn.allow_tf32 = prec == "tf32"
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
                    return model.dense_logits(xt, where=where)
            t, dl = timed(run, dev)
            shared[prec] = (t, dl.float()[0][:, rt, ct].T.cpu().numpy())
            log(f"shared {prec}: {n_where / t:,.0f} patches/s over {n_where:,} patches")
    cls = l_ref.argmax(1)
    res["one_model"] = {
        "patches_compared": int(len(rows)), "patches_shared": n_where,
        "reference_way_patches_per_s": len(rows) / t_ref,
        "unfold_patches_per_s": len(rows) / t_unf,
        "shared_fp32_patches_per_s": n_where / shared["fp32"][0],
        "shared_bf16_patches_per_s": n_where / shared["bf16"][0],
        "max_abs_logit_diff_unfold": float(np.abs(l_unf - l_ref).max()),
        "max_abs_logit_diff_shared_fp32": float(np.abs(shared["fp32"][1] - l_ref).max()),
        "class_agreement_shared_fp32": float((shared["fp32"][1].argmax(1) == cls).mean()),
        "class_agreement_shared_bf16": float((shared["bf16"][1].argmax(1) == cls).mean()),
    }
    if "tf32" in shared:
        res["one_model"].update({
            "shared_tf32_patches_per_s": n_where / shared["tf32"][0],
            "max_abs_logit_diff_shared_tf32": float(np.abs(shared["tf32"][1] - l_ref).max()),
            "class_agreement_shared_tf32": float((shared["tf32"][1].argmax(1) == cls).mean())})
    res["one_model"]["speedup_shared_fp32_vs_reference_way"] = (
        res["one_model"]["shared_fp32_patches_per_s"]
        / res["one_model"]["reference_way_patches_per_s"])
    res["one_model"]["speedup_shared_bf16_vs_reference_way"] = (
        res["one_model"]["shared_bf16_patches_per_s"]
        / res["one_model"]["reference_way_patches_per_s"])
    log(json.dumps(res["one_model"], indent=1))
    xt = shared = None  # free the device memory before the tile

    # --- the 6-fold ensemble on a tile, as `map` runs it (PyTorch's default TF32 convs) ----
    torch.backends.cudnn.allow_tf32 = True
    members = [Member(model=load_fold(args.weights, 1, k, dev), feature_index=list(range(6)),
                      minimum=[0.0] * 6, maximum=[1.0] * 6) for k in range(6)]
    xw, mw = world(args.tile, args.tile, 6, 0.05, seed=2)
    res["tile"] = {"shape": [args.tile, args.tile], "glacier_px": int(mw.sum())}
    preds = {}
    for prec in ("fp32", "bf16"):
        sync(dev)
        t0 = time.perf_counter()
        p = dense_predict(members, xw, mask=mw, device=dev, precision=prec)
        sync(dev)
        dt = time.perf_counter() - t0
        preds[prec] = p.classes
        res["tile"][f"{prec}_s"] = dt
        res["tile"][f"{prec}_px_per_s"] = int(mw.sum()) / dt
        res["tile"][f"{prec}_patch_evals_per_s"] = 6 * int(mw.sum()) / dt
        log(f"ensemble {prec}: {dt:.1f} s for {int(mw.sum()):,} px")
    g = mw & (preds["fp32"] != 255)
    res["tile"]["bf16_class_agreement"] = float((preds["fp32"][g] == preds["bf16"][g]).mean())
    log(json.dumps(res["tile"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
