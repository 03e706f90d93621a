"""Agreement of the dense approximation with the exact per-patch path on the same clip:
% of glacier pixels with the same class and the largest class-probability difference
(maps of `bench/reference_athabasca.py`, exact and `--mode dense`).

    python bench/reference_agreement.py MAPS_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio

from glacierfacies.classes import CLASS_NAMES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("maps", type=Path, nargs="+")
    args = ap.parse_args()
    print("| clip | set | glacier px | same class | max prob diff | mean prob diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for d in args.maps:
        for exact in sorted(d.glob("*_reference_set?_facies.tif")):
            dense = exact.with_name(exact.name.replace("_facies", "_dense_facies"))
            for cand in [dense, *(m / dense.name for m in args.maps)]:
                if cand.exists():
                    dense = cand
                    break
            else:
                continue
            with rasterio.open(exact) as a, rasterio.open(dense) as b:
                ca, cb = a.read(1), b.read(1)
            ok = (ca != 255) & (cb != 255)
            pa = exact.with_name(exact.name.replace("_facies", "_probabilities"))
            pb = dense.with_name(dense.name.replace("_facies", "_probabilities"))
            n = len(CLASS_NAMES)
            with rasterio.open(pa) as a, rasterio.open(pb) as b:
                diff = np.abs(a.read(list(range(1, n + 1)))[:, ok]
                              - b.read(list(range(1, n + 1)))[:, ok])
            clip = exact.name.split("_reference")[0]
            fs = exact.name.split("_set")[1][0]
            print(f"| {clip} | {fs} | {int(ok.sum()):,} | {100 * (ca[ok] == cb[ok]).mean():.2f}% "
                  f"| {diff.max():.3f} | {diff.max(axis=0).mean():.4f} |")


if __name__ == "__main__":
    main()
