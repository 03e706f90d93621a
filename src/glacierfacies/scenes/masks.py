"""The products' own masks: Sentinel-2 SCL, Landsat QA_PIXEL / QA_RADSAT, HLS Fmask.

Decoding is pure numpy (`*_flags`, `qa_band`, `apply_masks`); `read_mask` puts a mask file
onto the scene grid (nearest neighbour: these are codes and bits, never averaged).

What is masked by default (nodata for the classifier, unobserved in products):
  SCL 3 cloud shadow, 8 cloud (medium probability), 9 cloud (high probability), 10 cirrus;
  QA_PIXEL bits 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow;
  Fmask bits 1 cloud, 2 adjacent to cloud or shadow, 3 cloud shadow (never bit 4,
  snow/ice: that is our signal), and Fmask's fill value 255.
What is flagged as saturated and kept (bright snow saturates; `mask_saturated` drops it):
  SCL 1 (saturated or defective), any QA_RADSAT bit of the six optical bands.
The QA band (uint8 bits) records both per pixel, plus the input's own nodata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glacierfacies.errors import InputError

__all__ = [
    "FMASK_BITS",
    "QA_MASKED",
    "QA_NODATA",
    "QA_PIXEL_BITS",
    "QA_SATURATED",
    "SCL_MASKED",
    "SCL_SATURATED",
    "apply_masks",
    "fmask_flags",
    "qa_band",
    "qa_pixel_flags",
    "qa_radsat_flags",
    "radsat_bits",
    "scl_flags",
]

SCL_MASKED: tuple[int, ...] = (3, 8, 9, 10)
SCL_SATURATED: tuple[int, ...] = (1,)
QA_PIXEL_BITS: tuple[int, ...] = (1, 2, 3, 4)
FMASK_BITS: tuple[int, ...] = (1, 2, 3)
FMASK_FILL = 255

#: Bits of the QA band written beside each map.
QA_MASKED = 1  # masked by the product's cloud / cloud-shadow mask
QA_SATURATED = 2  # flagged as saturated by the product (kept unless mask_saturated)
QA_NODATA = 4  # no valid reflectance for another reason (the bands' own nodata)
QA_FILLED = 8  # a small gap filled by inpainting (`--fill-gaps`); counts as observed

#: QA_RADSAT bit of each optical band (blue, green, red, nir, swir1, swir2): bit n-1 is
#: band n; OLI's six are bands 2-7, TM/ETM+'s are bands 1-5 and 7.
_RADSAT_BITS = {"oli": (1, 2, 3, 4, 5, 6), "tm": (0, 1, 2, 3, 4, 6)}


def _bits_set(values: np.ndarray, bits: tuple[int, ...]) -> np.ndarray:
    word = 0
    for b in bits:
        word |= 1 << b
    return (np.asarray(values).astype(np.int64) & word) != 0


def scl_flags(scl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sentinel-2 scene classification -> (masked, saturated) boolean arrays."""
    scl = np.asarray(scl)
    return np.isin(scl, SCL_MASKED), np.isin(scl, SCL_SATURATED)


def qa_pixel_flags(qa_pixel: np.ndarray) -> np.ndarray:
    """Landsat C2 QA_PIXEL -> masked (dilated cloud, cirrus, cloud or cloud shadow)."""
    return _bits_set(qa_pixel, QA_PIXEL_BITS)


def radsat_bits(mission: int) -> tuple[int, ...]:
    """QA_RADSAT bits of the six optical bands of Landsat `mission` (4, 5, 7, 8, 9)."""
    return _RADSAT_BITS["oli" if mission in (8, 9) else "tm"]


def qa_radsat_flags(qa_radsat: np.ndarray, mission: int) -> np.ndarray:
    """Landsat C2 QA_RADSAT -> saturated in any of the six optical bands."""
    return _bits_set(qa_radsat, radsat_bits(mission))


def fmask_flags(fmask: np.ndarray) -> np.ndarray:
    """HLS v2.0 Fmask -> masked (cloud, adjacent to cloud/shadow, cloud shadow, or fill).
    Snow/ice (bit 4), water (bit 5) and aerosol (bits 6-7) are not masked."""
    fmask = np.asarray(fmask)
    return _bits_set(fmask, FMASK_BITS) | (fmask == FMASK_FILL)


def qa_band(masked: np.ndarray, saturated: np.ndarray, nodata: np.ndarray) -> np.ndarray:
    """The uint8 QA band: QA_MASKED | QA_SATURATED | QA_NODATA per pixel."""
    masked, saturated, nodata = (np.asarray(a, bool) for a in (masked, saturated, nodata))
    if not (masked.shape == saturated.shape == nodata.shape):
        raise ValueError(f"mask shapes differ: {masked.shape}, {saturated.shape}, {nodata.shape}")
    qa = np.zeros(masked.shape, np.uint8)
    qa[masked] |= QA_MASKED
    qa[saturated] |= QA_SATURATED
    qa[nodata & ~masked] |= QA_NODATA
    return qa


def apply_masks(reflectance: np.ndarray, valid: np.ndarray, masked: np.ndarray | None,
                saturated: np.ndarray | None, mask_saturated: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked (and, with `mask_saturated`, saturated) pixels become invalid and NaN, in place.
    Returns (reflectance, valid, qa band); `masked`/`saturated` None means none flagged."""
    shape = np.asarray(valid).shape
    masked = np.zeros(shape, bool) if masked is None else np.asarray(masked, bool)
    saturated = np.zeros(shape, bool) if saturated is None else np.asarray(saturated, bool)
    if masked.shape != shape or saturated.shape != shape:
        raise ValueError(f"mask of shape {masked.shape} / {saturated.shape} for a scene of "
                         f"shape {shape}")
    nodata = ~np.asarray(valid, bool)
    drop = masked | (saturated if mask_saturated else False)
    valid = np.asarray(valid, bool) & ~drop
    reflectance[:, drop] = np.nan
    return reflectance, valid, qa_band(masked & ~nodata, saturated & ~nodata, nodata)


# ---------------------------------------------------------------- reading a mask file

def read_mask(path: str, display: Any, grid: Any, decode, reference: str) -> tuple:
    """Decode mask file `path` onto `grid` (nearest neighbour).

    `decode(raw) -> (masked, saturated)` boolean arrays at the file's resolution (either may
    be None). `reference` is a band file of the same product: the mask must cover the same
    ground (same CRS and bounds, within half a mask pixel), else it is another product's mask
    and a one-line InputError names it. Returns (masked, saturated) on the grid (bool; None
    when the decoder gives None). Pixels of the grid outside the mask are not flagged.
    """
    from rasterio.warp import Resampling

    from glacierfacies.scenes.grid import _open_raster, _read_onto, same_crs

    with _open_raster(reference) as ref:
        ref_bounds, ref_crs, ref_shape = ref.bounds, ref.crs, ref.shape
    with _open_raster(path) as src:
        b, res = src.bounds, max(abs(src.transform.a), abs(src.transform.e))
        off = max(abs(b.left - ref_bounds.left), abs(b.right - ref_bounds.right),
                  abs(b.top - ref_bounds.top), abs(b.bottom - ref_bounds.bottom))
        if not same_crs(src.crs, ref_crs) or off > res / 2:
            raise InputError(display, f"mask of another shape: {src.height}x{src.width} px "
                                      f"covering {tuple(round(v) for v in b)}, but the bands "
                                      f"are {ref_shape[0]}x{ref_shape[1]} px covering "
                                      f"{tuple(round(v) for v in ref_bounds)}")
        kinds: list[bool] = []

        def to_float(_k: int, raw: np.ndarray) -> np.ndarray:
            m, s = decode(raw)
            kinds[:] = [m is not None, s is not None]
            code = np.zeros(raw.shape, np.float32)
            if m is not None:
                code += np.asarray(m, bool)
            if s is not None:
                code += 2 * np.asarray(s, bool)
            return code

        code = _read_onto(src, [1], display, grid, to_float, resampling=Resampling.nearest)[0]
    code = np.nan_to_num(code, nan=0.0).astype(np.uint8)
    masked = (code & 1).astype(bool) if kinds and kinds[0] else None
    saturated = (code & 2).astype(bool) if kinds and kinds[1] else None
    return masked, saturated


#: What each product mask masks, as recorded in stack metadata, map tags and product rows.
MASK_TEXT = {
    "SCL": "SCL " + ",".join(map(str, SCL_MASKED)),
    "QA_PIXEL": "QA_PIXEL bits " + ",".join(map(str, QA_PIXEL_BITS)),
    "Fmask": "Fmask bits " + ",".join(map(str, FMASK_BITS)) + f" + fill {FMASK_FILL}",
}
#: What flags saturation in each product (kept, counted in the QA band).
SATURATION_TEXT = {"SCL": "SCL 1", "QA_RADSAT": "QA_RADSAT"}
MASK_OFF = "off (--no-product-mask)"


def no_mask_file(what: str) -> str:
    return f"none (no {what} file in the product)"
