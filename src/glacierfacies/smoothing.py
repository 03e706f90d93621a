"""3x3 mode smoothing of class maps that ignores nodata (pure numpy/scipy, no I/O).

The paper smooths maps with `scipy.ndimage.generic_filter` and a Python mode callback, one
call per pixel. `mode_filter` gives the same answer with one box-sum per class, so a
Sentinel-2 tile smooths in seconds instead of hours.

Rule (shared by `mode_filter` and `mode_filter_reference`):
- a nodata pixel stays nodata; nodata neighbours and neighbours outside the map are not counted;
- the new class is the most frequent class among the valid pixels of the 3x3 window;
- ties: the centre pixel's own class wins if it is among the most frequent, otherwise the
  smallest class code among the tied ones. Preferring the centre keeps a map unchanged where
  the evidence is balanced, so smoothing never invents a class on a tie.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage  # reference only

NODATA = 255


def _check(classes: np.ndarray, n_classes: int, nodata: int) -> np.ndarray:
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"class map must be 2-D, got shape {classes.shape}")
    bad = (classes != nodata) & ((classes < 0) | (classes >= n_classes))
    if bad.any():
        raise ValueError(
            f"class map holds codes outside 0..{n_classes - 1} that are not nodata {nodata}"
        )
    return classes


def mode_filter(
    classes: np.ndarray, n_classes: int = 8, nodata: int = NODATA, iterations: int = 1
) -> np.ndarray:
    """3x3 mode filter ignoring nodata, vectorised (one box sum per class); uint8 out."""
    out = _check(classes, n_classes, nodata).astype(np.uint8, copy=True)
    for _ in range(iterations):
        out = _mode_once(out, n_classes, nodata)
    return out


def _mode_once(classes: np.ndarray, n_classes: int, nodata: int) -> np.ndarray:
    # One key per class and pixel, maximised over classes:
    #   key = ((2 * count + centre_is_k) << bits) + (n_classes - 1 - k)
    # so the highest count wins, then the centre's own class, then the smallest code.
    # Box sums of the 0/1 image come from shifted slices of a padded copy (counts <= 9).
    height, width = classes.shape
    bits = max(1, int(np.ceil(np.log2(n_classes))))
    dtype = np.uint8 if (19 << bits) + n_classes < 256 else np.uint32
    padded = np.pad(classes, 1, constant_values=nodata)
    onehot = np.empty(padded.shape, dtype)
    rows = np.empty((height, width + 2), dtype)
    key = np.empty((height, width), dtype)
    best = np.zeros((height, width), dtype)
    for k in range(n_classes):
        np.equal(padded, k, out=onehot, casting="unsafe")
        np.add(onehot[:-2], onehot[1:-1], out=rows)
        rows += onehot[2:]
        np.add(rows[:, :-2], rows[:, 1:-1], out=key)
        key += rows[:, 2:]
        key <<= 1
        key += onehot[1:-1, 1:-1]
        key <<= bits
        key += n_classes - 1 - k
        np.maximum(best, key, out=best)
    best &= (1 << bits) - 1
    out = (n_classes - 1 - best.astype(np.int64)).astype(np.uint8)
    out[classes == nodata] = nodata
    return out


def _mode_callback(n_classes: int, nodata: int):
    def mode(values: np.ndarray) -> float:
        centre = values[len(values) // 2]
        if centre == nodata:
            return nodata
        counts = np.bincount(values[values != nodata].astype(np.int64), minlength=n_classes)
        top = counts.max()
        if counts[int(centre)] == top:
            return centre
        return float(np.argmax(counts))

    return mode


def mode_filter_reference(
    classes: np.ndarray, n_classes: int = 8, nodata: int = NODATA
) -> np.ndarray:
    """The straightforward per-pixel version (generic_filter + Python mode, as the paper)."""
    classes = _check(classes, n_classes, nodata)
    out = ndimage.generic_filter(
        classes.astype(np.float64),
        _mode_callback(n_classes, nodata),
        size=3,
        mode="constant",
        cval=float(nodata),
    )
    return out.astype(np.uint8)
