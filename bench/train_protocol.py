"""Wall time of the paper's training protocol through the real `glacierfacies train` command.

Builds a paper-size synthetic PatchSet (137,592 labelled 11 x 33 x 33 patches, float16,
31 glaciers, 92 scenes, 6 folds by glacier, learnable classes with 10% of the facies labels
flipped, so confident learning has work) and runs `glacierfacies train DATASET -o RUN
--preset paper --epochs E --quiet` in a subprocess (6 folds x 2 rounds, cleaning between
them, evaluation and calibration at the end). Every epoch's time (training + validation,
synchronised) is read back from the fold models' cards, so one run gives:

- the time of one epoch of all folds of a round (the sum over folds of each fold's mean
  epoch time, the first epoch left out as warm-up: cuDNN autotuning), per round;
- the fixed costs = the command's wall time - E x (epoch of round 1 + epoch of round 2):
  start-up, loading the PatchSet onto the device, warm-up, cleaning, evaluation, files;
- the 100-epoch protocol extrapolated = fixed costs + 100 x (round 1 + round 2 epochs).

`--baseline` runs the same command with other options in the same process (e.g. the old
default `--batch-size 256 --lr 1e-3`) and reports the ratios.

GPU (H100/H200; one device command may run 10 minutes):
    python bench/train_protocol.py --device cuda --epochs 11 --baseline "--batch-size 256 --lr 1e-3" \
        --baseline-epochs 4 --json $OUT/train_protocol.json
CPU smoke test:
    python bench/train_protocol.py --device cpu --n 3000 --epochs 2 --extra "--width 4"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

N_PAPER = 137_592
CLASS_SHARES = (0.24, 0.22, 0.12, 0.10, 0.10, 0.06, 0.06, 0.10)  # ice snow debris firn ...
N_GLACIERS, N_SCENES, K_FOLDS = 31, 92, 6


def build_synthetic(dest: Path, n: int, seed: int = 0, flip: float = 0.10) -> dict:
    """A learnable synthetic PatchSet of n patches (cached: rebuilt only if n/seed differ).

    Each class has a mean value per feature; a patch is its class mean plus a per-scene
    offset plus per-pixel noise (the centre and its ring carry the class, the rest is
    noise around a random neighbouring class), in float16. A share `flip` of the facies
    labels is replaced by another facies class (the truth is kept in the table).
    """
    import pandas as pd
    import torch

    from glacierfacies.classes import CLASS_NAMES, FACIES_NAMES
    from glacierfacies.data.patchset import PatchSetWriter
    from glacierfacies.features import FEATURE_NAMES

    stamp = {"n": n, "seed": seed, "flip": flip, "version": 2}
    if (dest / "bench.json").is_file() and json.loads((dest / "bench.json").read_text()) == stamp:
        return stamp
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_cls, n_feat, size = len(CLASS_NAMES), len(FEATURE_NAMES), 33
    truth = rng.choice(n_cls, size=n, p=np.asarray(CLASS_SHARES) / sum(CLASS_SHARES))
    glacier = rng.integers(0, N_GLACIERS, n)
    scene = glacier * 3 + rng.integers(0, 3, n)  # 93 scene slots, 3 per glacier
    scene = np.minimum(scene, N_SCENES - 1)
    means = rng.normal(0.0, 1.0, (n_cls, n_feat)).astype(np.float32)
    scene_off = rng.normal(0.0, 0.35, (N_SCENES, n_feat)).astype(np.float32)
    other = rng.integers(0, n_cls, n)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(seed)
    centre = torch.zeros(size, size, dtype=torch.bool, device=dev)
    centre[size // 2 - 3:size // 2 + 4, size // 2 - 3:size // 2 + 4] = True
    means_t, off_t = torch.from_numpy(means).to(dev), torch.from_numpy(scene_off).to(dev)
    with PatchSetWriter(dest, n, FEATURE_NAMES, size, "float16") as w:
        for s in range(0, n, 8192):
            e = min(n, s + 8192)
            c = torch.from_numpy(truth[s:e]).to(dev)
            o = torch.from_numpy(other[s:e]).to(dev)
            sc = torch.from_numpy(scene[s:e]).to(dev)
            core = means_t[c][:, :, None, None]
            ring = means_t[o][:, :, None, None]
            base = torch.where(centre, core, ring) + off_t[sc][:, :, None, None]
            noise = torch.randn((e - s, n_feat, size, size), generator=g, device=dev)
            w.patches[s:e] = (base + 0.9 * noise).half().cpu().numpy()
        labels = truth.copy()
        facies = [CLASS_NAMES.index(f) for f in FACIES_NAMES]
        is_facies = np.isin(truth, facies)
        flipped = is_facies & (rng.random(n) < flip)
        for i in np.flatnonzero(flipped):
            labels[i] = rng.choice([f for f in facies if f != truth[i]])
        table = pd.DataFrame({
            "class": np.asarray(CLASS_NAMES)[labels], "true_class": np.asarray(CLASS_NAMES)[truth],
            "glacier": [f"G{g_:02d}" for g_ in glacier], "scene_id": [f"S{s_:03d}" for s_ in scene],
            "date": "2020-08-15", "sensor": np.where(scene % 2 == 0, "S2", "L8"),
            "region": np.where(glacier < 16, "Alps", "Scandinavia"),
            "fold": glacier % K_FOLDS, "x": rng.random(n), "y": rng.random(n), "crs": "",
            "point_id": [f"p{i}" for i in range(n)], "flipped": flipped,
        })
        w.finish(table, CLASS_NAMES, provenance={"source": "bench/train_protocol.py synthetic"},
                 fold_config={"k": K_FOLDS, "method": "glacier"})
    (dest / "bench.json").write_text(json.dumps(stamp))
    print(f"built {dest}: {n:,} patches in {time.perf_counter() - t0:.1f} s "
          f"({flipped.sum():,} facies labels flipped)", flush=True)
    return stamp


def fold_epochs(run: Path) -> dict[int, list[list[float]]]:
    """Per round, per fold, the seconds of each epoch (from the fold models' cards)."""
    from glacierfacies.layout import models_dir

    out: dict[int, list[list[float]]] = {}
    for r in (1, 2):
        cards = sorted(models_dir(run, r).glob("fold*.json"))
        out[r] = [[h["seconds"] for h in json.loads(c.read_text())["metrics"]["history"]]
                  for c in cards]
    return out


def run_train(dataset: Path, run: Path, epochs: int, device: str, extra: str) -> dict:
    """One `glacierfacies train` command; its wall time, per-epoch times and metrics."""
    import shutil

    if run.exists():
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "glacierfacies.cli", "train", str(dataset), "-o", str(run),
           "--preset", "paper", "--device", device, "--epochs", str(epochs), "--quiet",
           *shlex.split(extra)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], sep="\n")
        raise SystemExit(f"train failed with exit status {res.returncode}")
    print(res.stdout.strip(), flush=True)
    metrics = json.loads((run / "metrics.json").read_text())
    per_fold = fold_epochs(run)
    rounds = {}
    for r, folds in per_fold.items():
        timed = [f[1:] if len(f) > 1 else f for f in folds]  # epoch 0 = warm-up
        rounds[r] = {
            "epoch_all_folds_s": sum(statistics.fmean(f) for f in timed),
            "epoch_all_folds_median_s": sum(statistics.median(f) for f in timed),
            "epochs_timed": min(len(f) for f in timed),
            "first_epoch_all_folds_s": sum(f[0] for f in folds),
            "first_epoch_per_fold_s": [f[0] for f in folds],
            "mean_epoch_per_fold_s": [statistics.fmean(f) for f in timed],
        }
    epoch_pair = rounds[1]["epoch_all_folds_s"] + rounds[2]["epoch_all_folds_s"]
    fixed = wall - epochs * epoch_pair
    cfg = metrics.get("config", {})
    return {
        "command": " ".join(cmd[1:]), "epochs": epochs, "wall_s": wall,
        "batch_size": cfg.get("batch_size"), "lr": cfg.get("lr"),
        "round1": rounds[1], "round2": rounds[2], "fixed_s": fixed,
        "protocol_100_epochs_s": fixed + 100 * epoch_pair,
        "timings": metrics.get("timings"), "n_pruned": metrics.get("n_pruned"),
        "macro_f1_cleaned": metrics.get("macro_f1_cleaned"),
        "macro_f1_unpruned": metrics.get("macro_f1_unpruned"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=N_PAPER, help="patches (paper: 137,592)")
    ap.add_argument("--epochs", type=int, default=11,
                    help="epochs per fold (the first is warm-up, the rest are timed)")
    ap.add_argument("--extra", default="", help="more `train` options, e.g. '--compile'")
    ap.add_argument("--baseline", default=None,
                    help="options of a baseline run in the same process, e.g. "
                         "'--batch-size 256 --lr 1e-3' (the default before issue 15)")
    ap.add_argument("--baseline-epochs", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gf_train_protocol"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    dataset = args.workdir / "dataset"
    t0 = time.perf_counter()
    build_synthetic(dataset, args.n)
    result: dict = {"n_patches": args.n, "build_s": time.perf_counter() - t0}
    try:
        import torch

        result["device"] = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                            else f"cpu ({os.cpu_count()} cores)")
        result["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    runs = {"main": (args.epochs, args.extra)}
    if args.baseline is not None:
        runs["baseline"] = (args.baseline_epochs or args.epochs,
                            (args.extra + " " + args.baseline).strip())
    for name, (epochs, extra) in runs.items():
        result[name] = run_train(dataset, args.workdir / f"run_{name}", epochs, args.device, extra)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    main_ = result["main"]
    if "baseline" in result:
        base = result["baseline"]
        result["speedup"] = {
            f"round{r}_epoch": base[f"round{r}"]["epoch_all_folds_s"]
            / main_[f"round{r}"]["epoch_all_folds_s"] for r in (1, 2)}
        result["speedup"]["protocol"] = (base["protocol_100_epochs_s"]
                                         / main_["protocol_100_epochs_s"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("\n| run | batch | lr | epochs | wall | epoch, all folds r1 / r2 | fixed | "
          "100-epoch protocol | macro F1 cleaned |")
    for name in runs:
        r = result[name]
        print(f"| {name} | {r['batch_size']} | {r['lr']:.2g} | {r['epochs']} | {r['wall_s']:.1f} s"
              f" | {r['round1']['epoch_all_folds_s']:.2f} / {r['round2']['epoch_all_folds_s']:.2f} s"
              f" | {r['fixed_s']:.1f} s | {r['protocol_100_epochs_s'] / 60:.1f} min"
              f" | {r['macro_f1_cleaned']:.4f} |")
    if "speedup" in result:
        print("speed-up over baseline: " + ", ".join(f"{k} {v:.2f}x"
                                                      for k, v in result["speedup"].items()))


if __name__ == "__main__":
    main()
