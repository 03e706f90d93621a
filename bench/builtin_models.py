"""Built-in models against a random forest, and `predict` on a 10,000-point table (issue 13).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/builtin_models.py [--out bench.json]
        [--skip-logo] [--data ../shared/data/aberle]

1. Leave-one-glacier-out on the four Aberle glaciers, both sensors, in this run: the built-in
   models rebuilt exactly as `make models` does (4-fold protocol: train on two glaciers,
   validate on the third, test the fourth) and scikit-learn's RandomForestClassifier (300
   trees, seed 0) trained on the other three glaciers, on the same points and bands.
   Score: binary snow F1 (snow + shadowed snow vs the rest) per test glacier and the mean.
2. `glacierfacies predict` (the whole command, a fresh process) on 10,000 Landsat points with
   builtin:landsat, beside the forest's `predict` on the same table (fitted on all points).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def forest_logo(name: str, data: Path) -> dict:
    from sklearn.ensemble import RandomForestClassifier

    from glacierfacies.workflow.builtin_models import load_points, logo_scores

    ps = load_points(name, data)
    x = np.asarray(ps.patches)[:, :, 0, 0]
    y = np.asarray(ps.labels)
    g = ps.table["glacier"].astype(str).to_numpy()
    probs = np.zeros((len(y), len(ps.class_names)))
    for glacier in np.unique(g):
        rf = RandomForestClassifier(n_estimators=300, random_state=0, n_jobs=1)
        rf.fit(x[g != glacier], y[g != glacier])
        probs[np.ix_(g == glacier, rf.classes_)] = rf.predict_proba(x[g == glacier])
    return logo_scores(y, probs, g)


def logo(data: Path) -> dict:
    from glacierfacies.workflow.builtin_models import build_builtin

    out = {}
    for name in ("landsat", "sentinel2"):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            card = build_builtin(name, data, tmp)
            built = time.perf_counter() - t0
        t0 = time.perf_counter()
        rf = forest_logo(name, data)
        out[name] = {"builtin": card["leave_one_glacier_out"], "builtin_build_s": built,
                     "forest": rf, "forest_s": time.perf_counter() - t0}
        b, f = out[name]["builtin"], rf
        print(f"{name}: built-in mean snow F1 {b['mean_snow_f1']:.3f} vs forest "
              f"{f['mean_snow_f1']:.3f}", flush=True)
        for glacier in b["per_glacier"]:
            print(f"  {glacier:13s} built-in {b['per_glacier'][glacier]['snow_f1']:.3f}  "
                  f"forest {f['per_glacier'][glacier]['snow_f1']:.3f}", flush=True)
    return out


def predict_timing(data: Path, n: int = 10_000, repeats: int = 3) -> dict:
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    from glacierfacies.workflow.builtin_models import load_points

    table = pd.read_csv(data / "Landsat_training_data.csv")
    table = table.dropna().sample(n, replace=True, random_state=0).reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "points.csv"
        table.to_csv(csv, index=False)
        cmd = [sys.executable, "-m", "glacierfacies.cli", "predict", str(csv), "--model",
               "builtin:landsat", "--bands", "landsat89", "--offset", "-0.2", "--class-map",
               "1=snow,2=shadow,3=ice,4=debris,5=water", "--positive", "snow,shadow",
               "--positive-labels", "1,2", "--overwrite", "-o", str(Path(tmp) / "pred.csv")]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - t0)
        rows = pd.read_csv(Path(tmp) / "pred.csv")
        assert len(rows) == n
        # the forest: fitted on all training points, timed on the same 10,000 rows
        ps = load_points("landsat", data)
        rf = RandomForestClassifier(n_estimators=300, random_state=0, n_jobs=1)
        t0 = time.perf_counter()
        rf.fit(np.asarray(ps.patches)[:, :, 0, 0], ps.labels)
        fit_s = time.perf_counter() - t0
        x = table[["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]].to_numpy() - 0.2
        rf_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rf.predict(x)
            rf_times.append(time.perf_counter() - t0)
    res = {"n_points": n, "predict_command_s": times,
           "predict_command_median_s": statistics.median(times), "forest_fit_s": fit_s,
           "forest_predict_s": rf_times, "forest_predict_median_s": statistics.median(rf_times)}
    res["ratio_command_over_forest_predict"] = (res["predict_command_median_s"]
                                                / res["forest_predict_median_s"])
    print(f"predict command on {n:,} points: median {res['predict_command_median_s']:.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)}); forest predict median "
          f"{res['forest_predict_median_s']:.3f} s; ratio "
          f"{res['ratio_command_over_forest_predict']:.1f}x", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "aberle")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-logo", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    res["predict"] = predict_timing(a.data)
    if not a.skip_logo:
        res["logo"] = logo(a.data)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
