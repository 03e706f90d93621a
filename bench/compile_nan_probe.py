"""Probe: why does `train_throughput.py --compile --batch-size 4096` end with a NaN loss?

Replays the bench's training loop (same data recipe, bf16 autocast, channels-last, focal
loss, fused Adam, cosine schedule, validation between epochs) with the compiled model and
checks after every step and every validation where the first non-finite value appears:
loss, logits, a gradient, a parameter, or a BatchNorm buffer. Step 0 is also compared with
the eager model on the same batch. torch + numpy only.

  python bench/compile_nan_probe.py --batch-size 4096 --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.training.loop import augment_batch, focal_loss


def bad_names(named) -> list[str]:
    return [n for n, t in named if t is not None and not torch.isfinite(t).all()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=137_592)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--mode", default=None, help="torch.compile mode")
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--no-validate", action="store_true")
    ap.add_argument("--budget-s", type=float, default=150)
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    x = torch.rand(args.n, 11, 33, 33, device=dev)
    y = torch.randint(0, 8, (args.n,), device=dev)
    w = torch.rand(args.n, device=dev) + 0.5
    lo = x.amin(dim=(0, 2, 3)).view(1, -1, 1, 1)
    inv = 1.0 / (x.amax(dim=(0, 2, 3)).view(1, -1, 1, 1) - lo)
    model = TwoScaleCNN(n_features=11, width=64, patch_size=33).to(dev)
    model = model.to(memory_format=torch.channels_last)
    eager = copy.deepcopy(model)
    comp = torch.compile(model, mode=args.mode, backend=args.backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    n_train = int(args.n * 4 / 6)
    spe = max(1, n_train // args.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, 100 * spe) / (100 * spe))))
    amp = torch.autocast("cuda", dtype=torch.bfloat16)
    report: dict = {"batch_size": args.batch_size, "mode": args.mode, "backend": args.backend,
                    "steps_per_epoch": spe, "events": []}

    def batch(idx):
        xb = augment_batch((x[idx] - lo) * inv, 0.05, 0.01)
        return xb.contiguous(memory_format=torch.channels_last)

    # step 0: compiled vs eager on the same batch and weights
    idx = torch.arange(args.batch_size, device=dev)
    xb = batch(idx)
    with amp:
        lc = comp(xb)
        le = eager(xb)
    loss_c = focal_loss(lc, y[idx], 2.0, 0.1, w[idx])
    loss_e = focal_loss(le, y[idx], 2.0, 0.1, w[idx])
    loss_c.backward()
    loss_e.backward()
    gdiff = {n: float((p.grad - q.grad).norm() / (q.grad.norm() + 1e-30))
             for (n, p), (_, q) in zip(model.named_parameters(), eager.named_parameters(), strict=True)}
    report["step0"] = {
        "loss_compiled": float(loss_c), "loss_eager": float(loss_e),
        "logit_max_abs_diff": float((lc.float() - le.float()).abs().max()),
        "logits_finite": bool(torch.isfinite(lc).all()),
        "worst_grad_rel_diff": max(gdiff.items(), key=lambda kv: kv[1]),
        "bad_grads": bad_names((n, p.grad) for n, p in model.named_parameters()),
    }
    print(json.dumps(report["step0"]), flush=True)
    opt.zero_grad(set_to_none=True)

    def check(where: str, step: int, loss=None) -> bool:
        ev = {"where": where, "step": step}
        if loss is not None:
            ev["loss"] = float(loss)
        ev["bad_params"] = bad_names(model.named_parameters())
        ev["bad_grads"] = bad_names((n, p.grad) for n, p in model.named_parameters())
        ev["bad_buffers"] = bad_names(model.named_buffers())
        neg = [n for n, b in model.named_buffers() if n.endswith("running_var") and (b <= 0).any()]
        ev["nonpositive_running_var"] = neg
        bad = (loss is not None and not math.isfinite(float(loss))) or any(
            ev[k] for k in ("bad_params", "bad_grads", "bad_buffers", "nonpositive_running_var"))
        if bad and len(report["events"]) < 8:
            report["events"].append(ev)
            print(json.dumps(ev), flush=True)
        return bad

    step_no = 0

    def step(idx) -> torch.Tensor:
        nonlocal step_no
        xb = batch(idx)
        with amp:
            logits = comp(xb)
        loss = focal_loss(logits, y[idx], 2.0, 0.1, w[idx])
        if not torch.isfinite(logits).all():
            report["events"].append({"where": "logits", "step": step_no,
                                     "nonfinite_logits": int((~torch.isfinite(logits)).sum())})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        check("after_backward", step_no, loss)
        opt.step()
        sched.step()
        step_no += 1
        return loss.detach()

    model.train()
    perm = torch.randperm(n_train, device=dev)
    for k in range(min(args.warmup_steps, spe)):
        step(perm[k * args.batch_size:(k + 1) * args.batch_size])
    report["after_warmup_step"] = step_no
    losses = []
    for ep in range(args.epochs):
        if time.perf_counter() - t_start > args.budget_s:
            report["stopped"] = f"budget after epoch {ep}"
            break
        perm = torch.randperm(n_train, device=dev)
        for k in range(spe):
            loss = step(perm[k * args.batch_size:(k + 1) * args.batch_size])
        losses.append(float(loss))
        if not args.no_validate:
            model.eval()
            with torch.no_grad():
                for s0 in range(0, args.n // 6, 4 * args.batch_size):
                    xv = ((x[s0:s0 + 4 * args.batch_size] - lo) * inv).contiguous(
                        memory_format=torch.channels_last)
                    with amp:
                        out = comp(xv)
                    if not torch.isfinite(out).all():
                        report["events"].append({"where": "validate_out", "epoch": ep})
                        break
            model.train()
            check(f"after_validate_epoch{ep}", step_no)
        if len(report["events"]) > 6:
            break
    report["epoch_final_losses"] = losses
    report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    print("PROBE", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
