"""Speed of the paper's models on whole scenes: exact per-patch semantics, three ways.

1. reference way: one 33 x 33 patch per pixel cut by a Python generator, batches of 1024,
   the per-patch network (what the authors' apply.py does);
2. `patch_logits`: the same patches cut on the device in one indexing op (no Python loop);
3. `dense_logits`: the shared exact pass (model/reference.py), only the mapped pixels.
All three give the same logits (checked here on a sample). Then the whole ensemble of 6
folds through `mapping.inference.dense_predict` on a synthetic 10980 x 10980 tile with
~6 M glacier pixels (fp32 and bf16: class agreement), and the Athabasca clips.

Runs with torch + numpy only (the GPU box). Inputs: `.bench_data/` (gitignored) with
ref_set{1,4}_fold{K}.pt state dicts (converted from the authors' .h5 here by
`python bench/reference_speed.py --prepare`) and the Athabasca feature stacks as .npz.

    python bench/reference_speed.py --prepare        # on the dev box: writes .bench_data/
    python bench/reference_speed.py --device cuda    # on the GPU box; prints JSON
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

DATA = ROOT / ".bench_data"
N_FEAT = {1: 6, 4: 11}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def load_fold(fs: int, k: int, dev: torch.device) -> ReferenceCNN:
    m = ReferenceCNN(N_FEAT[fs])
    m.load_state_dict(torch.load(DATA / f"ref_set{fs}_fold{k}.pt", map_location="cpu"))
    return m.to(dev).eval()


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


def world(h: int, w: int, n_feat: int, frac: float, dev, seed: int = 0):
    """A smooth random feature raster in [0, 1] and a blobby mask covering ~frac of it."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    low = torch.rand((1, n_feat, h // 64 + 2, w // 64 + 2), generator=g)
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear")[0]
    x += 0.05 * torch.rand((n_feat, h, w), generator=g)
    m_low = torch.rand((1, 1, h // 256 + 2, w // 256 + 2), generator=g)
    m = torch.nn.functional.interpolate(m_low, size=(h, w), mode="bilinear")[0, 0]
    thr = torch.quantile(m[::16, ::16].reshape(-1), 1 - frac)
    return x.numpy(), (m > thr).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tile", type=int, default=10980)
    ap.add_argument("--ref-patches", type=int, default=65536)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-athabasca", action="store_true")
    ap.add_argument("--world", type=int, default=1024)
    args = ap.parse_args()
    dev = torch.device(args.device)
    res: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__}
    torch.backends.cudnn.benchmark = True

    # --- 1-3: one model, patches/s -----------------------------------------------------
    model = load_fold(1, 0, dev)
    x, mask = world(args.world + 32, args.world + 32, 6, 0.5, dev, seed=1)
    rows, cols = np.nonzero(mask[16:-16, 16:-16])
    sel = np.random.default_rng(0).choice(len(rows), args.ref_patches, replace=False)
    rows, cols = rows[sel], cols[sel]
    reference_way(model, x, rows[:2048], cols[:2048], dev)  # warm-up
    t_ref, l_ref = reference_way(model, x, rows, cols, dev)
    xt = torch.from_numpy(x)[None].to(dev)
    with torch.inference_mode():
        model.patch_logits(xt, torch.from_numpy(rows[:4096]), torch.from_numpy(cols[:4096]))
        sync(dev)
        t0 = time.perf_counter()
        l_unf = model.patch_logits(xt, torch.from_numpy(rows), torch.from_numpy(cols),
                                   batch=8192).float().cpu().numpy()
        sync(dev)
        t_unf = time.perf_counter() - t0
        where = torch.from_numpy(mask[16:-16, 16:-16])[None].to(dev)
        n_where = int(where.sum())
        timings = {}
        for prec in ("fp32", "bf16"):
            ctx = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16")
            with ctx:
                model.dense_logits(xt, where=where)
                sync(dev)
                t0 = time.perf_counter()
                dl = model.dense_logits(xt, where=where)
                sync(dev)
            timings[prec] = (time.perf_counter() - t0, dl.float().cpu().numpy())
    dense_sel = timings["fp32"][1][0][:, rows, cols].T
    bf_sel = timings["bf16"][1][0][:, rows, cols].T
    res["one_model"] = {
        "patches": int(len(rows)),
        "reference_way_patches_per_s": len(rows) / t_ref,
        "unfold_patches_per_s": len(rows) / t_unf,
        "shared_fp32_patches_per_s": n_where / timings["fp32"][0],
        "shared_bf16_patches_per_s": n_where / timings["bf16"][0],
        "max_abs_logit_diff_unfold_vs_reference": float(np.abs(l_unf - l_ref).max()),
        "max_abs_logit_diff_shared_vs_reference": float(np.abs(dense_sel - l_ref).max()),
        "bf16_class_agreement": float((bf_sel.argmax(1) == l_ref.argmax(1)).mean()),
    }
    print(json.dumps(res["one_model"], indent=1), flush=True)
    del xt, timings

    # --- 4: whole tile, 6-fold ensemble -----------------------------------------------
    members = [Member(model=load_fold(1, k, dev), feature_index=list(range(6)),
                      minimum=[0.0] * 6, maximum=[1.0] * 6) for k in range(6)]
    h = w = args.tile
    xw, mw = world(h, w, 6, 0.05, dev, seed=2)
    res["tile"] = {"shape": [h, w], "glacier_px": int(mw.sum())}
    preds = {}
    for prec in ("fp32", "bf16"):
        sync(dev)
        t0 = time.perf_counter()
        p = dense_predict(members, xw, mask=mw, tile_size=2048, device=dev, precision=prec)
        sync(dev)
        dt = time.perf_counter() - t0
        preds[prec] = p.classes
        res["tile"][f"{prec}_s"] = dt
        res["tile"][f"{prec}_patches_per_s"] = int(mw.sum()) / dt
        print(prec, dt, flush=True)
    g = mw & (preds["fp32"] != 255)
    res["tile"]["bf16_class_agreement"] = float((preds["fp32"][g] == preds["bf16"][g]).mean())
    del xw, mw, preds

    # --- 5: Athabasca, both feature sets --------------------------------------------------
    res["athabasca"] = {}
    for scene in ("L30_20200816", "S30_20200909"):
        f = DATA / f"{scene}.npz"
        if args.skip_athabasca or not f.exists():
            continue
        d = np.load(f)
        for fs in (1, 4):
            idx = list(range(N_FEAT[fs]))
            mem = [Member(model=load_fold(fs, k, dev), feature_index=idx,
                          minimum=[0.0] * len(idx), maximum=[2.5] * 6 + [1.0] * (len(idx) - 6))
                   for k in range(6)]
            out = {}
            for prec in ("fp32", "bf16"):
                sync(dev)
                t0 = time.perf_counter()
                p = dense_predict(mem, d["features"], mask=d["mask"], device=dev, precision=prec)
                sync(dev)
                out[prec] = (time.perf_counter() - t0, p.classes)
            ok = out["fp32"][1] != 255
            res["athabasca"][f"{scene}_set{fs}"] = {
                "px": int(ok.sum()), "fp32_s": out["fp32"][0], "bf16_s": out["bf16"][0],
                "bf16_class_agreement": float((out["fp32"][1][ok] == out["bf16"][1][ok]).mean()),
            }
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
