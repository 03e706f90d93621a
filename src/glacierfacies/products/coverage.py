"""How much of an outline a scene covers, and the flags of a product row (numpy only)."""

from __future__ import annotations

import numpy as np

from glacierfacies.classes import NODATA_CLASS
from glacierfacies.products import massbalance as mb

__all__ = ["OUTLINE_EDGE_FLAG", "SCENE_COLUMNS", "outline_coverage", "row_flags"]


#: What each row says of the scene's coverage of the outline: the fraction of the outline
#: inside the scene's valid footprint (within the raster and with valid reflectance; cloud
#: masked by the product counts as inside), the share of the outline's edge that runs along
#: the footprint's edge (an outline cut to the scene: the glacier may go on beyond it), and
#: the row's flags (`;`-separated; see docs/massbalance.md).
SCENE_COLUMNS = ("outline_in_scene", "outline_edge_fraction", "product_flags")

#: an outline whose edge runs along the footprint's edge for this share of its length or more
#: is flagged ``outline_at_scene_edge`` (a pixel or two by chance stay below it)
OUTLINE_EDGE_FLAG = 0.005


def outline_coverage(mask: np.ndarray, inside: np.ndarray, cmap: np.ndarray,
                     qa: np.ndarray | None = None) -> tuple[float, float]:
    """(outline_in_scene, outline_edge_fraction) of one glacier on a map window.

    `mask` the glacier pixels, `inside` the pixels within the raster, `cmap` the class map
    (nodata 255), `qa` the QA band or None. In the valid footprint: inside the raster and
    classified, or masked by the product's cloud mask (seen by the sensor, hidden by cloud).
    The edge fraction: of the glacier's boundary pixels in the footprint, the share whose
    4-neighbour lies outside the raster (an outline cut to the image; unclassified pixels
    inside the raster do not count: a map classifies only the glacier, so its nodata need not
    be the scene's edge).
    """
    from glacierfacies.scenes.masks import QA_MASKED

    valid = inside & (cmap != NODATA_CLASS)
    if qa is not None:
        valid |= inside & ((qa & QA_MASKED) > 0)
    n = int(mask.sum())
    in_scene = mask & valid
    if not n:
        return float("nan"), float("nan")
    pad_in = np.pad(in_scene, 1, constant_values=False)
    pad_out = np.pad(~inside, 1, constant_values=False)  # callers give a 1 px margin
    boundary = np.zeros_like(in_scene)
    edge = np.zeros_like(in_scene)
    h, w = in_scene.shape
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb_in = pad_in[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        nb_out = pad_out[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        boundary |= in_scene & ~nb_in
        edge |= in_scene & nb_out
    nb = int(boundary.sum())
    return float(in_scene.sum() / n), float(edge.sum() / nb) if nb else float("nan")


def row_flags(values: dict, config: mb.ProductConfig, qa_missing: bool = False) -> list[str]:
    """The flags of one product row, withholding AAR and lines in place where the outline
    lies mostly outside the scene (`ProductConfig.outline_withhold_below`).

    `qa_missing`: the map was made with a product mask but its QA band is not beside it, so
    cloud-masked pixels cannot be told from pixels outside the scene: `outline_in_scene` is
    then a lower bound (flag ``outline_in_scene_lower_bound``) and nothing is withheld.
    """
    flags = []
    ins, edge = values["outline_in_scene"], values["outline_edge_fraction"]
    if np.isfinite(ins) and ins < config.outline_warn_below:
        flags.append(f"outline_in_scene<{config.outline_warn_below:g}")
        if qa_missing:
            flags.append("outline_in_scene_lower_bound")
    if np.isfinite(edge) and edge >= OUTLINE_EDGE_FLAG:
        flags.append("outline_at_scene_edge")
    if np.isfinite(ins) and ins < config.outline_withhold_below and not qa_missing:
        flags.append(f"withheld:outline_in_scene<{config.outline_withhold_below:g}")
        for key in ("aar", "aar_unc", "aar_snow_firn", "aar_snow_firn_unc", "snowline_m",
                    "snowline_unc_m", "firnline_m", "firnline_unc_m"):
            values[key] = float("nan")
    if not values.get("firn_mapped", True):
        flags.append("firn_not_mapped")
    if str(values.get("uncertainty_method", "")).startswith("fallback"):
        flags.append("uncertainty_fallback")
    return flags
