"""The facies + confidence stack: eight calibrated class probabilities and the confidence in
one float32 COG (9 bands, NaN off-glacier), the input a GlaUnTI-style model takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.errors import InputError

STACK_BANDS: tuple[str, ...] = (*(f"p_{n}" for n in CLASS_NAMES), "confidence")
WINDOW_PX = 2048


def write_facies_stack(probabilities: str | Path, dest: str | Path,
                       confidence: str | Path | None = None, overwrite: bool = False) -> Path:
    """`dest` from a map's probabilities COG (+ its confidence COG; without one the
    confidence is the largest probability). Window by window: RAM of one window."""
    import rasterio
    from rasterio.windows import Window

    from glacierfacies._io import atomic_output, check_output
    from glacierfacies.mapping.cog import copy_cog, scratch_profile

    probabilities, dest = Path(probabilities), Path(dest)
    check_output(dest, overwrite=overwrite)
    if not probabilities.is_file():
        raise InputError(probabilities, "probabilities map not found (map with --probabilities)")
    with rasterio.open(probabilities) as src:
        if src.count != len(CLASS_NAMES):
            raise InputError(probabilities, f"{src.count} bands, not the {len(CLASS_NAMES)} "
                                            "class probabilities")
        h, w, crs, transform, tags = src.height, src.width, src.crs, src.transform, src.tags()
    conf_src = rasterio.open(confidence) if confidence and Path(confidence).is_file() else None
    scratch = dest.with_name(f".{dest.name}.scratch.tif")
    try:
        prof = scratch_profile(h, w, len(STACK_BANDS), "float32", crs, transform, float("nan"))
        with rasterio.open(probabilities) as src, rasterio.open(scratch, "w", **prof) as dst:
            for r0 in range(0, h, WINDOW_PX):
                for c0 in range(0, w, WINDOW_PX):
                    win = Window(c0, r0, min(WINDOW_PX, w - c0), min(WINDOW_PX, h - r0))
                    p = src.read(window=win).astype(np.float32)
                    if conf_src is not None:
                        raw = conf_src.read(1, window=win)
                        if conf_src.dtypes[0] == "uint8":
                            conf = np.where(raw == 255, np.nan, raw / 100.0).astype(np.float32)
                        else:
                            conf = raw.astype(np.float32)
                    else:
                        with np.errstate(invalid="ignore"):
                            conf = np.max(p, axis=0)
                    conf[~np.isfinite(p).all(axis=0)] = np.nan
                    dst.write(np.concatenate([p, conf[None]], axis=0), window=win)
            for b, name in enumerate(STACK_BANDS, start=1):
                dst.set_band_description(b, name)
            dst.update_tags(**{**{k: v for k, v in tags.items() if k != "CLASS_NAMES"},
                               "BANDS": ",".join(STACK_BANDS), "PRODUCER": "glacierfacies",
                               "UNITS": "probability (0..1); confidence: calibrated "
                                        "probability of the map's class"})
        with atomic_output(dest, overwrite=overwrite) as tmp:
            copy_cog(scratch, tmp, "average")
    finally:
        if conf_src is not None:
            conf_src.close()
        scratch.unlink(missing_ok=True)
    return dest
