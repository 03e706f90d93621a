"""Global min-max normalisation (pure numpy/torch: inference uses it too)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from glacierfacies.data.patchset import CHUNK, PatchSet

if TYPE_CHECKING:
    pass


def fit_minmax(patchset: PatchSet | np.ndarray, train_idx: np.ndarray | Sequence[int]
               ) -> dict[str, list[float]]:
    """Global per-feature min and max over the training patches only (as the paper).

    Streams over the memory map in chunks; NaNs are ignored.
    """
    patches = getattr(patchset, "patches", patchset)
    idx = np.asarray(train_idx)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    idx = np.sort(idx)
    if len(idx) == 0:
        raise ValueError("fit_minmax needs at least one training patch")
    n_feat = patches.shape[1]
    lo = np.full(n_feat, np.inf)
    hi = np.full(n_feat, -np.inf)
    for start in range(0, len(idx), CHUNK):
        block = np.asarray(patches[idx[start:start + CHUNK]], dtype=np.float32)
        block = np.moveaxis(block, 1, 0).reshape(n_feat, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.fmin(lo, np.nanmin(block, axis=1))
            hi = np.fmax(hi, np.nanmax(block, axis=1))
    return {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}


def apply_minmax(x: Any, norm: dict[str, Sequence[float]] | None) -> Any:
    """(x - min) / (max - min) per feature on (..., F, S, S) arrays or torch tensors.

    Pure numpy / torch: usable on a GPU box. A constant feature (max == min) maps to 0;
    max < min is an inverted feature (the paper's shadow mask is 1 where lit).
    """
    if norm is None:
        return x
    lo = np.asarray(norm["min"], dtype=np.float64)
    span = np.asarray(norm["max"], dtype=np.float64) - lo
    span = np.where(span != 0, span, 1.0)
    if hasattr(x, "new_tensor"):  # torch tensor, keep device
        dtype = x.dtype if x.is_floating_point() else None
        lo_t = x.new_tensor(lo, dtype=dtype).reshape(-1, 1, 1)
        span_t = x.new_tensor(span, dtype=dtype).reshape(-1, 1, 1)
        return (x - lo_t) / span_t
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return ((x - lo.reshape(-1, 1, 1).astype(dtype)) / span.reshape(-1, 1, 1).astype(dtype)
            ).astype(dtype, copy=False)

