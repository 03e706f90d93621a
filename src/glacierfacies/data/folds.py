"""Cross-validation folds by glacier."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from glacierfacies.errors import InputError

if TYPE_CHECKING:
    pass


def validation_fold(test_fold: int, k: int) -> int:
    """The paper's rule: the validation fold is the test fold minus one (mod k)."""
    return (int(test_fold) - 1) % int(k)


def assign_folds(glaciers: Sequence[str], k: int = 6, seed: int = 0,
                 source: str | os.PathLike | None = None) -> np.ndarray:
    """Fold per patch: whole glaciers go, largest first, onto the fold with fewest patches.

    Ties in glacier size are broken by a seeded shuffle, so `seed` gives other, equally
    balanced splits. A fold left without any glacier (k > number of glaciers) is an error.
    """
    glaciers = np.asarray([str(g) for g in glaciers])
    if k < 2:
        raise InputError(source, f"need at least 2 folds, got k={k}")
    names, inverse, counts = np.unique(glaciers, return_inverse=True, return_counts=True)
    if len(names) < k:
        raise InputError(source, f"fold(s) {list(range(len(names), k))} would have no glacier: "
                                 f"{len(names)} glacier(s) for k={k} folds")
    tiebreak = np.random.default_rng(seed).permutation(len(names))
    order = np.lexsort((tiebreak, -counts))
    loads = np.zeros(k, dtype=np.int64)
    glacier_fold = np.empty(len(names), dtype=np.int64)
    for g in order:
        f = int(np.argmin(loads))
        glacier_fold[g] = f
        loads[f] += counts[g]
    return glacier_fold[inverse]


def folds_from_column(values: Sequence, glaciers: Sequence[str],
                      source: str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """User-given folds (integers); values are mapped in sorted order to 0..k-1."""
    try:
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(source, "fold column must hold integers") from None
    if np.isnan(vals).any() or (vals != np.round(vals)).any():
        raise InputError(source, "fold column must hold integers (no blanks)")
    vals = vals.astype(np.int64)
    uniq = np.unique(vals)
    if len(uniq) < 2:
        raise InputError(source, f"fold column has {len(uniq)} distinct fold(s); need >= 2")
    folds = np.searchsorted(uniq, vals)
    split = {}
    g = np.asarray([str(x) for x in glaciers])
    for name in np.unique(g):
        fs = np.unique(folds[g == name])
        if len(fs) > 1:
            split[str(name)] = fs.tolist()
    if split:
        warnings.warn(f"user folds split {len(split)} glacier(s) across folds "
                      f"(e.g. {next(iter(split))}); results are not glacier-independent",
                      stacklevel=2)
    return folds, {"k": len(uniq), "method": "column", "values": uniq.tolist()}

