"""Facies maps as Cloud-Optimised GeoTIFF: colour table, class names, QGIS style, confidence."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import atomic_output, check_output_folder
from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS, colour_table
from glacierfacies.errors import InputError
from glacierfacies.mapping.config import PathLike


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
        compress="deflate", BIGTIFF="IF_SAFER",
    )


def copy_cog(scratch: Path, dest: Path, resampling: str) -> None:
    """GDAL's COG copy of a tiled GTiff (overviews by `resampling`), with a bounded cache."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB):
        rio_copy(
            scratch, dest, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
        )


COG_CACHE_MB = 128  # GDAL block cache for COG copies: RAM stays bounded on a whole tile


def _write_cog(
    array: np.ndarray,
    dest: Path,
    transform: Any,
    crs: Any,
    nodata: float,
    resampling: str,
    description: str | list[str],
    tags: dict[str, str],
    band_tags: dict[str, str] | None = None,
    colormap: dict | None = None,
) -> None:
    """Write a COG at `dest` (one band, or (bands, H, W) with one description per band):
    a tiled GTiff beside it, then GDAL's COG copy."""
    import rasterio

    bands = array if array.ndim == 3 else array[None]
    _, height, width = bands.shape
    scratch = dest.with_name(dest.name + ".gtiff")
    profile = scratch_profile(height, width, bands.shape[0], array.dtype.name, crs, transform,
                              nodata)
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            dst.write(bands)
            describe(dst, description, tags, band_tags, colormap)
        copy_cog(scratch, dest, resampling)
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


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


def write_outputs(
    classes: np.ndarray,
    transform: Any,
    crs: Any,
    out: PathLike,
    confidence: np.ndarray | None = None,
    confidence_out: PathLike | None = None,
    confidence_dtype: str = "uint8",
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
    qa: np.ndarray | None = None,
    qa_out: PathLike | None = None,
    probabilities: np.ndarray | None = None,
    probabilities_out: PathLike | None = None,
) -> list[Path]:
    """Write the class COG, its .qml, the optional confidence COG, the optional QA COG
    (uint8 bits of the product's own masks, see `scenes.masks`) and the optional probability
    COG, atomically.

    All files are written to temporaries first; the class map is renamed last, so its
    presence means every output of the scene is complete. Probabilities are (8, H, W)
    float32 calibrated class probabilities in class order (NaN nodata), one band per class.
    """
    out = Path(out)
    targets = [out, out.with_suffix(".qml")]
    if confidence_out is not None:
        targets.append(Path(confidence_out))
    if (qa is None) != (qa_out is None):
        raise ValueError("give both qa and qa_out, or neither")
    if qa_out is not None:
        targets.append(Path(qa_out))
    if probabilities_out is not None:
        if probabilities is None:
            raise ValueError("probabilities_out needs the probabilities")
        targets.append(Path(probabilities_out))
    for t in targets:
        check_output_folder(t.parent)
        if t.exists() and not overwrite:
            raise InputError(t, "output exists; pass --overwrite to replace it")
    ds_tags, band_tags = class_tags(tags)
    with contextlib.ExitStack() as stack:
        # entered first -> renamed last
        tmp_map = stack.enter_context(atomic_output(out, overwrite=overwrite))
        tmp_qml = stack.enter_context(atomic_output(targets[1], overwrite=overwrite))
        if confidence_out is not None:
            tmp_conf = stack.enter_context(atomic_output(confidence_out, overwrite=overwrite))
            conf, nodata = confidence_array(confidence, confidence_dtype)
            _write_cog(
                conf, tmp_conf, transform, crs, nodata, "average",
                "confidence (calibrated probability of the model's class"
                + (", percent)" if confidence_dtype == "uint8" else ")"),
                {"UNITS": "percent" if confidence_dtype == "uint8" else "probability",
                 "PRODUCER": "glacierfacies", **(tags or {})},
            )
        if qa_out is not None:
            from glacierfacies.scenes.masks import QA_MASKED, QA_NODATA, QA_SATURATED

            tmp_qa = stack.enter_context(atomic_output(qa_out, overwrite=overwrite))
            _write_cog(
                np.asarray(qa, np.uint8), tmp_qa, transform, crs, None, "nearest",
                "product QA bits", {"PRODUCER": "glacierfacies", **(tags or {}),
                                    "QA_BITS": f"{QA_MASKED}=masked by the product mask, "
                                               f"{QA_SATURATED}=saturated (kept), "
                                               f"{QA_NODATA}=no valid reflectance"},
            )
        if probabilities_out is not None:
            tmp_prob = stack.enter_context(atomic_output(probabilities_out, overwrite=overwrite))
            _write_cog(
                np.asarray(probabilities, np.float32), tmp_prob, transform, crs, float("nan"),
                "average", [f"probability of {name}" for name in CLASS_NAMES],
                {"UNITS": "probability", "CLASS_NAMES": ",".join(CLASS_NAMES),
                 "PRODUCER": "glacierfacies", **(tags or {})},
            )
        tmp_qml.write_text(qml_style())
        _write_cog(
            classes.astype(np.uint8, copy=False), tmp_map, transform, crs, NODATA_CLASS,
            "mode", "facies class", ds_tags, band_tags, colour_table(),
        )
    return targets

