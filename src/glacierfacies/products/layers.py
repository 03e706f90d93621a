"""What a map's companion rasters are, from their tags (never their file names).

`mapping.blockwrite` writes a LAYER tag into every output (facies, confidence,
probabilities, qa), and the facies map names its companions (CONFIDENCE, PROBABILITIES, QA)
and the classes its model can predict (MODEL_CLASSES); the probabilities raster lists the
bands of the ensemble members' own classes (MEMBER_BANDS). This module reads them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import rasterio

from glacierfacies.classes import N_CLASSES
from glacierfacies.errors import InputError

__all__ = ["LAYERS", "check_given", "find_companion", "firn_mapped", "member_bands"]


#: the map's LAYER tag for each companion raster (written by `mapping.blockwrite`)
LAYERS = ("facies", "confidence", "probabilities", "qa")


def _layer(path: Path) -> tuple[str | None, int, str]:
    """(LAYER tag, band count, first band description) of a raster; InputError if unreadable."""
    try:
        with rasterio.open(path) as ds:
            return ds.tags().get("LAYER"), ds.count, (ds.descriptions[0] or "")
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"not a readable raster ({str(exc).splitlines()[0]})") from None


def _is_layer(path: Path, kind: str) -> bool:
    """Whether a raster is a `kind` layer by its tags (maps written before the LAYER tag:
    by band count and description, never by its file name)."""
    layer, count, desc = _layer(path)
    if layer is not None:
        return layer == kind
    if kind == "probabilities":
        return count >= N_CLASSES and desc.lower().startswith("probability")
    return count == 1 and desc.lower().startswith("confidence")


def check_given(path: Path, kind: str) -> Path:
    """A companion given on the command line: it must exist and not say it is another layer."""
    if not path.is_file():
        raise InputError(path, f"{kind} raster not found")
    layer, count, _ = _layer(path)
    if layer is not None and layer != kind:
        raise InputError(path, f"given as {kind} but its LAYER tag says {layer!r}")
    if kind == "probabilities" and (count < N_CLASSES or (layer is None and count != N_CLASSES)):
        raise InputError(path, f"class probabilities need {N_CLASSES} bands, got {count}")
    if kind == "confidence" and count != 1:
        raise InputError(path, f"a confidence raster has 1 band, got {count}")
    return path


def find_companion(map_path: Path, ds: rasterio.DatasetReader, kind: str
                   ) -> Path | int | None:
    """The confidence or probabilities raster of a map, from the map's own tags.

    The map names its companions (tags CONFIDENCE, PROBABILITIES, as it names QA); maps
    written before those tags: a map band described as confidence, or a file beside the map
    named the way `map`/`run` name them, accepted only if its tags (or, for old files, its
    bands and descriptions) say it is that layer.
    """
    tag = ds.tags().get(kind.upper())
    if tag:
        path = map_path.parent / Path(tag).name
        if path.is_file() and _is_layer(path, kind):
            return path
        warnings.warn(f"{map_path.name}: its {kind} raster {path.name} (tag {kind.upper()}) is "
                      f"{'not that layer' if path.is_file() else 'missing'}; ignored",
                      stacklevel=2)
        return None
    if kind == "confidence":
        for b, desc in enumerate(ds.descriptions, start=1):
            if b > 1 and desc and desc.lower().startswith("confidence"):
                return b
    stem = map_path.name.split(".")[0]
    candidates = [f"{stem}_{kind}.tif"]
    for word in ("facies", "classes", "class", "map"):
        if word in stem:
            candidates.append(stem.replace(word, kind) + ".tif")
    for c in candidates:
        path = map_path.parent / c
        if path.is_file() and path != map_path and _is_layer(path, kind):
            return path
    return None


def member_bands(prob_ds) -> list[int]:
    """The bands of a probabilities raster holding the ensemble members' own classes."""
    if prob_ds is None:
        return []
    text = prob_ds.tags().get("MEMBER_BANDS", "")
    try:
        bands = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        return []
    return [b for b in bands if N_CLASSES < b <= prob_ds.count]


def firn_mapped(tags: dict[str, str]) -> bool:
    """Whether the map's model could predict firn (its MODEL_CLASSES tag; maps without the
    tag make no claim and are taken to map every class)."""
    classes = tags.get("MODEL_CLASSES")
    return True if not classes else "firn" in {c.strip() for c in classes.split(",")}
