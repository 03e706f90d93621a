"""The built-in synthetic sample: a small range of valley glaciers with Sentinel-2 and
Landsat scenes, labelled points (10% deliberately wrong) and WGMS-like balance tables.

`write_sample(out_dir, seed)` writes it; the spectra and decoding helpers are public so
tests can check the readers against the generator's own values.
"""

from glacierfacies.sample.generate import write_sample
from glacierfacies.sample.world import (
    HEIGHT,
    LABEL_EDGE_PX,
    LANDSAT_BANDS,
    OTHER_SPECTRA,
    PIXEL_M,
    S2_BAND_RES,
    S2_BANDS,
    SPECTRA,
    WIDTH,
    decode_landsat,
    decode_s2,
    reflectance_range,
)

__all__ = ["HEIGHT", "LABEL_EDGE_PX", "LANDSAT_BANDS", "OTHER_SPECTRA", "PIXEL_M", "S2_BAND_RES", "S2_BANDS",
           "SPECTRA", "WIDTH", "decode_landsat", "decode_s2", "reflectance_range",
           "write_sample"]
