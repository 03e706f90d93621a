"""Bench for issue 21: training steps of the demo's network on a busy CPU, by thread count and
OpenMP wait policy.

Each configuration runs in a fresh process (libgomp reads OMP_WAIT_POLICY at start-up):
`--seconds` of training steps of the demo's model (TwoScaleCNN, 11 features, width 16,
patch 33, batch 64, Adam, float32 on the CPU), as `make demo`'s training does them, and
reports steps/s. With `--busy N`, N busy-loop processes (`python -c "while True: pass"`)
run beside every configuration, started by the bench and killed after.

  python bench/busy_threads.py --busy 2 --json busy.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _child(threads: int, seconds: float, batch: int, width: int) -> None:
    import torch

    sys.path.insert(0, str(SRC))
    from glacierfacies.model.network import TwoScaleCNN

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = TwoScaleCNN(11, width=width, patch_size=33)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.rand(batch, 11, 33, 33)
    y = torch.randint(0, 8, (batch,))
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):  # warm-up
        step()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"steps": steps, "seconds": round(dt, 2),
                      "steps_per_s": round(steps / dt, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--policies", default="ACTIVE,PASSIVE")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        _child(args.child, args.seconds, args.batch, args.width)
        return
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    rows = []
    try:
        time.sleep(1.0)
        for policy in args.policies.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                env.pop("OMP_NUM_THREADS", None)
                load = os.getloadavg()[0]
                p = subprocess.run([sys.executable, __file__, "--child", str(threads),
                                    "--seconds", str(args.seconds), "--batch", str(args.batch),
                                    "--width", str(args.width)], env=env,
                                   capture_output=True, text=True, check=True)
                row = {"policy": policy, "threads": threads, "load_1min": round(load, 2),
                       **json.loads(p.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    out = {"busy": args.busy, "cpus": os.cpu_count(), "rows": rows}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
