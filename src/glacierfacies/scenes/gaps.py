"""Fill small gaps of the optical bands (SLC-off stripes, sensor nodata) by inpainting.

Off by default (`ReadOptions.fill_gaps_px` = 0). A gap is a pixel without valid reflectance
that the product's own mask did not remove (QA_MASKED pixels, clouds and their shadows,
are never filled) and that lies within N pixels of valid reflectance. GDAL's inverse
distance inpainting (`rasterio.fill.fillnodata`, no smoothing) fills each band; filled
pixels become valid, count as observed, and carry the QA_FILLED bit in the QA band.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from glacierfacies.scenes.base import Scene
from glacierfacies.scenes.masks import QA_FILLED, QA_MASKED, QA_NODATA

#: Largest gap distance that can be filled; block reads carry at least this much context.
MAX_FILL_GAPS_PX = 64


def fill_gaps(scene: Scene, max_px: int) -> Scene:
    """The scene with its optical gaps of up to `max_px` pixels filled (see module doc)."""
    from rasterio.fill import fillnodata

    if max_px <= 0 or scene.valid.all():
        return scene
    valid = np.asarray(scene.valid, bool)
    masked = (np.zeros(valid.shape, bool) if scene.qa is None
              else (scene.qa & QA_MASKED).astype(bool))
    refl = np.array(scene.reflectance, dtype=np.float32, copy=True)
    src_mask = valid.astype(np.uint8)  # product-masked pixels are no source either
    # pixels the inpainting reaches: an indicator band filled the same way
    reached = fillnodata(valid.astype(np.float32), mask=src_mask,
                         max_search_distance=float(max_px), smoothing_iterations=0) > 0.5
    filled_ok = ~valid & ~masked & reached
    for b in range(refl.shape[0]):
        band = np.where(valid, refl[b], 0).astype(np.float32)
        out = fillnodata(band, mask=src_mask, max_search_distance=float(max_px),
                         smoothing_iterations=0)
        refl[b] = np.where(valid, refl[b], out)
    refl[:, ~(valid | filled_ok)] = np.nan
    qa = (np.where(valid, 0, QA_NODATA).astype(np.uint8) if scene.qa is None
          else np.array(scene.qa, np.uint8, copy=True))
    qa[masked] |= QA_MASKED
    qa[filled_ok] = (qa[filled_ok] & ~np.uint8(QA_NODATA)) | QA_FILLED
    meta = {**scene.metadata, "gaps_filled": f"up to {max_px} px, {int(filled_ok.sum())} px"}
    return dataclasses.replace(scene, reflectance=refl, valid=valid | filled_ok, qa=qa,
                               metadata=meta)
