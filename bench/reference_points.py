"""The paper's set-1 fold models on the Aberle training points, with the recovered normalisation.

    PYTHONPATH=src python bench/reference_points.py [--fit] [--quick] [--out scores.json]
        [--reference ../shared/data/reference] [--data ../shared/data/aberle]

Each point's six reflectances (Sentinel-2: B2, B3, B4, B8, B11, B12; Landsat: SR_B2..SR_B7
minus 0.2) as a uniform 33 x 33 patch, normalised with `recovered_minmax` (min 0, max_c =
k m_c / mu_c), through the 6 imported set-1 fold models (mean of the softmax). Only the
training files of ../shared/data/aberle are read (there are no others there); rows with a
missing value or repeating another class's six values are dropped, as for the built-in models.

- binary snow F1: reference snow + firn + shadow against the rest, labels snow + shadowed
  snow against the rest, per glacier (site_name) and sensor, and over each sensor;
- macro F1 over the 5 Aberle classes, the reference's 8 grouped: snow = snow + firn, shadowed
  snow = shadow, ice = ice + refrozen-like, rock = debris, water = water (cloud: no class,
  its probability counts for none of them);
- sensitivity: the same scores with k x 0.8 and k x 1.2, with the optical shape of the
  set-4 models' BN means, and with a class-balanced m_c (bf16, all points);
- `--fit`: refits k (grid 0.80..1.10 step 0.05 on 1,500 seeded points per sensor, bf16,
  parabola through the best three) and prints m_c, the constants in reference_norm.py.

Speed: `uniform_patch_logits` (exact, 7 x 7 scale 1) in channels-last; the fit and the
sensitivity rows in bf16 autocast, the main table at fp32. About 7 min on 2 shared cores (`--quick`: 2 min).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from glacierfacies.model.reference_h5 import reference_from_h5  # noqa: E402
from glacierfacies.model.reference_norm import (  # noqa: E402
    OPTICAL_K,
    OPTICAL_REFERENCE_MEAN,
    input_means_from_bn,
    recovered_minmax,
    uniform_patch_logits,
)

SENSORS = {
    "Sentinel-2": ("Sentinel-2_SR_training_data.csv", ["B2", "B3", "B4", "B8", "B11", "B12"], 0.0),
    "Landsat": ("Landsat_training_data.csv", ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6",
                                              "SR_B7"], -0.2),
}
#: reference class (ice, snow, debris, firn, shadow, refrozen, water, cloud) -> Aberle code
#: (1 snow, 2 shadowed snow, 3 ice, 4 rock, 5 water; 0 = none)
GROUP = np.array([3, 1, 4, 1, 2, 3, 5, 0])
SNOW_REF = [1, 3, 4]  # snow, firn, shadow
SNOW_LABELS = [1, 2]


def load_points(data: Path, sensor: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reflectance (N, 6), class (N,), site (N,)) of one training file, cleaned."""
    import pandas as pd

    name, cols, offset = SENSORS[sensor]
    d = pd.read_csv(data / name).dropna(subset=[*cols, "class", "site_name"])
    x = d[cols].to_numpy(np.float64) + offset
    key = pd.Series([tuple(r) for r in np.round(x, 6)])
    n_cls = pd.Series(d["class"].to_numpy()).groupby(key).transform("nunique").to_numpy()
    keep = n_cls == 1
    return x[keep], d["class"].to_numpy()[keep].astype(int), d["site_name"].to_numpy()[keep]


def load_models(reference: Path, feature_set: int = 1) -> list:
    files = sorted((reference / "weights" / str(feature_set)).glob(
        "*_cnn_afterconfidentlearning_weights.h5"))
    if len(files) != 6:
        raise SystemExit(f"{reference}: expected 6 fold files of set {feature_set}")
    return [reference_from_h5(f).eval().to(memory_format=torch.channels_last) for f in files]


def ensemble_probs(models, xn: np.ndarray, bf16: bool = False, batch: int = 2048) -> np.ndarray:
    """Mean softmax (N, 8) of the models on uniform patches of the normalised values."""
    xt = torch.as_tensor(xn, dtype=torch.float32)
    total = torch.zeros((len(xt), 8), dtype=torch.float64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for m in models:
            for s in range(0, len(xt), batch):
                lg = uniform_patch_logits(m, xt[s:s + batch]).float()
                total[s:s + batch] += torch.softmax(lg, 1).double()
    return (total / len(models)).numpy()


def normalise(x: np.ndarray, norm: dict) -> np.ndarray:
    lo, hi = np.asarray(norm["min"]), np.asarray(norm["max"])
    return (x - lo) / (hi - lo)


def f1(y: np.ndarray, p: np.ndarray) -> float:
    tp = int(np.sum(y & p))
    den = 2 * tp + int(np.sum(y & ~p)) + int(np.sum(~y & p))
    return 2 * tp / den if den else float("nan")


def grouped(probs: np.ndarray) -> np.ndarray:
    """(N, 6) probabilities of Aberle codes 0 (none: cloud) .. 5."""
    g = np.zeros((len(probs), 6))
    for k in range(8):
        g[:, GROUP[k]] += probs[:, k]
    return g


def scores(probs: np.ndarray, cls: np.ndarray) -> dict:
    g = grouped(probs)
    pred = g.argmax(1)
    snow = np.isin(cls, SNOW_LABELS)
    psnow = probs[:, SNOW_REF].sum(1) > probs.sum(1) - probs[:, SNOW_REF].sum(1)
    present = [c for c in range(1, 6) if np.any(cls == c)]
    return {"snow_f1": f1(snow, psnow),
            "macro_f1": float(np.mean([f1(cls == c, pred == c) for c in present])),
            "loglik": float(np.mean(np.log(np.clip(g[np.arange(len(cls)), cls], 1e-6, 1)))),
            "firn_share_of_snow": float(np.mean(probs[snow].argmax(1) == 3)) if snow.any()
            else float("nan"),
            "n": int(len(cls))}


def with_k(norm: dict, factor: float) -> dict:
    out = dict(norm, min=list(norm["min"]), max=list(norm["max"]))
    out["max"][:6] = [v * factor for v in norm["max"][:6]]
    return out


def fit_k(models, pts: dict, mu: np.ndarray, m_c: np.ndarray) -> tuple[float, list]:
    rng = np.random.default_rng(0)
    sub = {}
    for s, (x, c, _) in pts.items():
        i = rng.choice(len(x), min(1500, len(x)), replace=False)
        sub[s] = (x[i], c[i])
    grid = np.round(np.arange(0.80, 1.101, 0.05), 2)
    rows = []
    for k in grid:
        norm = {"min": [0.0] * 6, "max": list(k * m_c / mu)}
        ll = [scores(ensemble_probs(models, normalise(x, norm), bf16=True), c)["loglik"]
              for x, c in sub.values()]
        rows.append((float(k), float(np.mean(ll)), ll))
        print(f"  k {k:.2f}: mean log-likelihood {np.mean(ll):.4f} ({ll[0]:.4f}, {ll[1]:.4f})",
              flush=True)
    best = int(np.argmax([r[1] for r in rows]))
    j = min(max(best, 1), len(rows) - 2)
    ks, lls = [rows[i][0] for i in (j - 1, j, j + 1)], [rows[i][1] for i in (j - 1, j, j + 1)]
    a, b, _ = np.polyfit(ks, lls, 2)
    return float(-b / (2 * a)) if a < 0 else rows[best][0], rows


def table(per: dict) -> str:
    lines = ["| glacier | sensor | n | binary snow F1 | macro F1 (5 classes) | snow read as firn |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for (site, sensor), v in per.items():
        lines.append(f"| {site} | {sensor} | {v['n']} | {v['snow_f1']:.3f} | "
                     f"{v['macro_f1']:.3f} | {100 * v['firn_share_of_snow']:.0f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=REPO.parent / "shared/data/reference")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/aberle")
    ap.add_argument("--fit", action="store_true", help="refit k and print the constants")
    ap.add_argument("--quick", action="store_true", help="skip the sensitivity rows")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.time()
    models = load_models(args.reference, 1)
    pts = {s: load_points(args.data, s) for s in SENSORS}
    out: dict = {}
    if args.fit:
        allx = np.concatenate([p[0] for p in pts.values()])
        m_c = allx.mean(0)
        mu = np.mean([input_means_from_bn(m) for m in models], axis=0)
        print("m_c (pooled training points):", np.round(m_c, 5).tolist())
        print("mu (set 1, mean of 6 folds):", np.round(mu, 5).tolist())
        k, rows = fit_k(models, pts, mu, m_c)
        print(f"fitted k = {k:.3f} (module: {OPTICAL_K})")
        out["fit"] = {"m_c": m_c.tolist(), "mu": mu.tolist(), "k": k, "grid": rows}
    norm = recovered_minmax(models, 1)
    print("recovered min:", np.round(norm["min"], 4).tolist())
    print("recovered max:", np.round(norm["max"], 4).tolist())
    per: dict = {}
    overall: dict = {}
    for sensor, (x, c, site) in pts.items():
        probs = ensemble_probs(models, normalise(x, norm))
        overall[sensor] = scores(probs, c)
        for g in sorted(set(site.tolist())):
            per[(g, sensor)] = scores(probs[site == g], c[site == g])
    for sensor, v in overall.items():
        per[("**all**", sensor)] = v
    print("\nSet-1 ensemble (6 folds, mean softmax), recovered normalisation, fp32:\n")
    print(table(per))
    out["scores"] = {f"{g}|{s}": v for (g, s), v in per.items()}
    out["norm"] = {k: norm[k] for k in ("min", "max", "method")}
    if not args.quick:
        allx = np.concatenate([p[0] for p in pts.values()])
        allc = np.concatenate([p[1] for p in pts.values()])
        w = 1.0 / np.bincount(allc)[allc]
        m_bal = (w @ allx) / w.sum()
        mu1 = np.mean([input_means_from_bn(m) for m in models], axis=0)
        mu4 = np.mean([input_means_from_bn(m)[:6] for m in load_models(args.reference, 4)], 0)
        variants = {
            "recovered (k)": norm,
            "k x 0.8": with_k(norm, 0.8),
            "k x 1.2": with_k(norm, 1.2),
            "mu of the set-4 folds": {"min": [0.0] * 6,
                                      "max": list(OPTICAL_K * np.asarray(OPTICAL_REFERENCE_MEAN)
                                                  / mu4)},
            "class-balanced m_c, k 1.5": {"min": [0.0] * 6,
                                                  "max": list(1.5 * m_bal / mu1)},
            "one scale, reflectance / 3": {"min": [0.0] * 6, "max": [3.0] * 6},
        }
        lines = ["| normalisation | S2 snow F1 | S2 macro F1 | L snow F1 | L macro F1 |",
                 "| --- | ---: | ---: | ---: | ---: |"]
        sens = {}
        for name, nm in variants.items():
            r = {s: scores(ensemble_probs(models, normalise(x, nm), bf16=True), c)
                 for s, (x, c, _) in pts.items()}
            sens[name] = r
            lines.append(f"| {name} | {r['Sentinel-2']['snow_f1']:.3f} | "
                         f"{r['Sentinel-2']['macro_f1']:.3f} | {r['Landsat']['snow_f1']:.3f} | "
                         f"{r['Landsat']['macro_f1']:.3f} |")
            print(lines[-1] if len(sens) > 1 else "\nSensitivity (bf16, all points):\n\n"
                  + "\n".join(lines), flush=True)
        out["sensitivity"] = sens
    print(f"\n{time.time() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
