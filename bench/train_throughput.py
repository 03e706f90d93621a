"""Training throughput of the two-scale CNN, end to end on the device (torch + numpy only).

Holds N random 11 x 33 x 33 patches in device memory (the paper's 137,592 by default) and runs
full training steps exactly as `glacierfacies.training` does them: gather a batch, min-max
normalise, augment (flips/rot90, contrast, brightness) on the device, forward under bf16
autocast with channels-last, focal loss with label smoothing and sample weights, backward,
Adam step, cosine schedule. Reports patches/s over timed epochs and the extrapolated time
of the paper protocol (6 folds x 2 rounds x 100 epochs, each fold training on 4/6 of the
patches and validating on 1/6 once per epoch).

GPU run (H100):
    python bench/train_throughput.py --device cuda --batch-size 1024 --epochs 3
    python bench/train_throughput.py --device cuda --batch-size 1024 --epochs 3 --compile
CPU smoke test:
    python bench/train_throughput.py --device cpu --n 2000 --epochs 1 --width 16
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.training.loop import augment_batch, focal_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=137_592, help="patches held on the device")
    ap.add_argument("--features", type=int, default=11)
    ap.add_argument("--patch-size", type=int, default=33)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--no-bf16", action="store_true", help="float32 instead of bf16 autocast")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    ap.add_argument("--baseline-steps", type=int, default=0,
                    help="also time N steps of the reference-style loop in the same run "
                         "(patches in host memory, per-patch numpy augmentation, batch 256, "
                         "float32) and report the speed-up over it")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    s, f = args.patch_size, args.features
    x = torch.rand(args.n, f, s, s, device=device)  # raw features, on the device
    y = torch.randint(0, 8, (args.n,), device=device)
    w = torch.rand(args.n, device=device) + 0.5
    lo = x.amin(dim=(0, 2, 3)).view(1, -1, 1, 1)
    inv = 1.0 / (x.amax(dim=(0, 2, 3)).view(1, -1, 1, 1) - lo)

    model = TwoScaleCNN(n_features=f, width=args.width, patch_size=s).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=cuda)
    n_train = int(args.n * 4 / 6)  # one fold's training share
    steps_per_epoch = max(1, n_train // args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, 100 * steps_per_epoch) / (100 * steps_per_epoch))))
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and not args.no_bf16)

    def step(idx: torch.Tensor) -> torch.Tensor:
        xb = augment_batch((x[idx] - lo) * inv, 0.05, 0.01)
        if cuda:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with amp:
            logits = step_model(xb)
        loss = focal_loss(logits, y[idx], 2.0, 0.1, w[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss.detach()

    @torch.no_grad()
    def validate(n_val: int) -> None:
        model.eval()
        for start in range(0, n_val, 4 * args.batch_size):
            xb = (x[start:start + 4 * args.batch_size] - lo) * inv
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with amp:
                step_model(xb).argmax(1)
        model.train()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model.train()
    perm = torch.randperm(n_train, device=device)
    for k in range(min(args.warmup_steps, steps_per_epoch)):  # cudnn autotune, compile
        step(perm[k * args.batch_size:(k + 1) * args.batch_size])
    sync()
    epoch_times, val_times = [], []
    for _ in range(args.epochs):
        perm = torch.randperm(n_train, device=device)
        sync()
        t0 = time.perf_counter()
        loss = None
        for k in range(steps_per_epoch):
            loss = step(perm[k * args.batch_size:(k + 1) * args.batch_size])
        sync()
        epoch_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        validate(args.n // 6)
        sync()
        val_times.append(time.perf_counter() - t0)
    epoch_s = sorted(epoch_times)[len(epoch_times) // 2]
    val_s = sorted(val_times)[len(val_times) // 2]
    throughput = steps_per_epoch * args.batch_size / epoch_s
    protocol_s = 6 * 2 * 100 * (epoch_s + val_s)
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({args.threads} threads)",
        "torch": torch.__version__, "n_patches": args.n, "patch": [f, s, s], "width": args.width,
        "batch_size": args.batch_size, "bf16": cuda and not args.no_bf16, "compile": args.compile,
        "train_patches_per_epoch": steps_per_epoch * args.batch_size,
        "epoch_train_s": epoch_s, "epoch_val_s": val_s,
        "train_patches_per_s": throughput,
        "paper_protocol_hours": protocol_s / 3600,
        "final_loss": float(loss) if loss is not None else None,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
    }
    if args.baseline_steps:
        base = baseline_throughput(args, device)
        result["baseline"] = base
        result["speedup_vs_baseline"] = throughput / base["patches_per_s"]
    print(json.dumps(result, indent=2))
    print(f"training throughput: {throughput:,.0f} patches/s; paper protocol (6 folds x 2 rounds"
          f" x 100 epochs on {args.n:,} patches) extrapolated: {protocol_s / 3600:.2f} h")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def baseline_throughput(args: argparse.Namespace, device: torch.device) -> dict:
    """The reference implementation's way: a host-side generator augments each patch in
    numpy, batches of 256 are copied to the device, float32 training step."""
    import numpy as np

    rng = np.random.default_rng(0)
    s, f, batch = args.patch_size, args.features, 256
    n_host = min(args.n, 20_000)
    x = rng.random((n_host, f, s, s), dtype=np.float32)
    y = rng.integers(0, 8, n_host)
    lo, hi = x.min(axis=(0, 2, 3))[:, None, None], x.max(axis=(0, 2, 3))[:, None, None]
    model = TwoScaleCNN(n_features=f, width=args.width, patch_size=s).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def batches():
        while True:
            idx = rng.integers(0, n_host, batch)
            out = np.empty((batch, f, s, s), np.float32)
            for j, i in enumerate(idx):  # per-patch augmentation, as a Python generator does
                p = (x[i] - lo) / (hi - lo)
                if rng.random() < 0.5:
                    p = p[:, :, ::-1]
                if rng.random() < 0.5:
                    p = p[:, ::-1, :]
                p = np.rot90(p, rng.integers(0, 4), axes=(1, 2))
                p = p * rng.uniform(0.95, 1.05) + rng.uniform(-0.01, 0.01)
                out[j] = p
            yield torch.from_numpy(out).to(device), torch.from_numpy(y[idx]).to(device)

    gen = batches()
    model.train()

    def one() -> None:
        xb, yb = next(gen)
        loss = focal_loss(model(xb), yb, 2.0, 0.1, torch.ones(batch, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.baseline_steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"steps": args.baseline_steps, "batch_size": batch, "seconds": dt,
            "patches_per_s": args.baseline_steps * batch / dt}


if __name__ == "__main__":
    main()
