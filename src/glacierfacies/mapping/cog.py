"""Facies maps as Cloud-Optimised GeoTIFF: colour table, class names, QGIS style, confidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS


def qml_style() -> str:
    """A QGIS paletted-renderer style with the class names and colours (nodata transparent)."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.code}" color="#{c.colour[0]:02x}{c.colour[1]:02x}'
        f'{c.colour[2]:02x}" alpha="255" label="{c.name}"/>'
        for c in CLASSES
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" opacity="1" band="1" alphaBand="-1" '
        'nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def scratch_profile(height: int, width: int, count: int, dtype: str, crs: Any, transform: Any,
                    nodata: float | None) -> dict:
    """The tiled GTiff a COG is copied from (written whole or window by window)."""
    return dict(
        driver="GTiff", height=height, width=width, count=count, dtype=dtype, crs=crs,
        transform=transform, nodata=nodata, tiled=True, blockxsize=512, blockysize=512,
        compress="deflate", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
    )


def copy_cog(scratch: Path, dest: Path, resampling: str) -> None:
    """GDAL's COG copy of a tiled GTiff (overviews by `resampling`), with a bounded cache."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB):
        rio_copy(
            scratch, dest, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",  # deflate by tiles on every core: the same bytes
        )


COG_CACHE_MB = 128  # GDAL block cache for COG copies: RAM stays bounded on a whole tile


def describe(dst: Any, description: str | list[str], tags: dict[str, str],
             band_tags: dict[str, str] | None = None, colormap: dict | None = None) -> None:
    """Band descriptions, tags and colour table of an open scratch GTiff."""
    descriptions = [description] if isinstance(description, str) else list(description)
    for b, desc in enumerate(descriptions, start=1):
        dst.set_band_description(b, desc)
    dst.update_tags(**tags)
    if band_tags:
        dst.update_tags(1, **band_tags)
    if colormap is not None:
        dst.write_colormap(1, colormap)


def class_tags(extra: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Dataset tags (CLASS_NAMES, NODATA_CLASS, ...) and band tags (CLASS_<code>=name)."""
    tags = {
        "CLASS_NAMES": ",".join(CLASS_NAMES),
        "CLASS_CODES": ",".join(str(c.code) for c in CLASSES),
        "NODATA_CLASS": str(NODATA_CLASS),
        "PRODUCER": "glacierfacies",
    }
    tags.update(extra or {})
    band = {f"CLASS_{c.code}": c.name for c in CLASSES}
    return tags, band


def confidence_array(confidence: np.ndarray, dtype: str = "uint8") -> tuple[np.ndarray, float]:
    """Confidence in [0, 1] with NaN nodata -> (uint8 percent with 255 nodata | float32 NaN)."""
    if dtype == "float32":
        return confidence.astype(np.float32), float("nan")
    if dtype != "uint8":
        raise ValueError(f"confidence dtype must be uint8 or float32, got {dtype!r}")
    out = np.full(confidence.shape, 255, np.uint8)
    ok = np.isfinite(confidence)
    out[ok] = np.clip(np.floor(confidence[ok] * 100.0 + 0.5), 0, 100).astype(np.uint8)
    return out, 255.0
