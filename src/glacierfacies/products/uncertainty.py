"""Uncertainty of AAR, snowline and firn line from calibrated class probabilities (numpy only).

Classification errors of a patch-based CNN are spatially correlated: neighbouring pixels
share most of their 33 x 33 input, so a whole stretch of wet snow is read as ice, not one
pixel in a hundred. Treating pixels as independent (variance sum p (1 - p)) then gives
intervals far too narrow (see ``tests/products/test_uncertainty.py``).

Here the surface is drawn from the calibrated probabilities with one uniform number per
block of `ProductConfig.uncertainty_block_m`: inside a block the errors go together,
between blocks they are independent. For every draw the AAR (snow and snow + firn) and the
snowline / firn line are recomputed (shadowed pixels follow the drawn line when the shadow
method is ``snowline``). The uncertainty of a class-map product is the root of the squared
spread of the draws plus the squared difference between the class-map value and the mean
of the draws (the class-map vs probability-weighted difference), i.e. the RMS error of the
class-map value if the truth were one of the draws.

Without probabilities, the calibrated confidence c of each pixel's class bounds them
conservatively: a pixel of the zone is in it with probability c, any other pixel with
probability min(1 - c, c) per zone class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from glacierfacies.classes import N_CLASSES

if TYPE_CHECKING:  # pragma: no cover
    from glacierfacies.products.massbalance import ProductConfig, SortedElevations

__all__ = ["ProductUncertainty", "block_ids", "member_spread", "product_uncertainty",
           "zone_probabilities"]


@dataclass(frozen=True)
class ProductUncertainty:
    """One standard uncertainty of each product, and how it was obtained."""

    aar_snow: float
    aar_snow_firn: float
    snowline_m: float
    firnline_m: float
    method: str  # "probabilities", "confidence" or "none"

    @classmethod
    def none(cls) -> ProductUncertainty:
        nan = float("nan")
        return cls(nan, nan, nan, nan, "none")


def block_ids(shape: tuple[int, int], block_px: int) -> np.ndarray:
    """(H, W) integer id of the block_px x block_px block each pixel falls in."""
    h, w = shape
    b = max(int(block_px), 1)
    rows = np.arange(h)[:, None] // b
    cols = np.arange(w)[None, :] // b
    return (rows * ((w + b - 1) // b) + cols).astype(np.int64)


def zone_probabilities(
    cmap: np.ndarray,
    pixels: np.ndarray,
    config: ProductConfig,
    probabilities: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(p_snow, p_snow_firn, method) for the `pixels` (bool mask) of a class map.

    From (8, H, W) probabilities: the zone's probability among the visible surfaces (cloud
    and shadow left out). From confidence (uint8 percent with 255 nodata, or float 0..1):
    the conservative bound described in the module docstring. p_snow <= p_snow_firn always.
    """
    from glacierfacies.products.massbalance import CLOUD, SHADOW

    snow_codes, sf_codes = list(config.snow_codes), list(config.snow_firn_codes)
    if probabilities is not None:
        p = np.asarray(probabilities, dtype=np.float64)[:, pixels]
        if p.shape[0] != N_CLASSES:
            raise ValueError(f"probabilities need {N_CLASSES} bands, got {p.shape[0]}")
        visible = [i for i in range(N_CLASSES) if i not in (CLOUD, SHADOW)]
        total = np.clip(p[visible].sum(axis=0), 1e-12, None)
        p_snow = p[snow_codes].sum(axis=0) / total
        p_sf = p[sf_codes].sum(axis=0) / total
        p_snow, p_sf = np.nan_to_num(p_snow), np.nan_to_num(p_sf)
        return np.clip(p_snow, 0, 1), np.clip(np.maximum(p_sf, p_snow), 0, 1), "probabilities"
    if confidence is None:
        raise ValueError("need probabilities or confidence")
    raw = np.asarray(confidence)
    c = raw[pixels].astype(np.float64)
    if np.issubdtype(raw.dtype, np.integer):
        c = np.where(c <= 100, c / 100.0, np.nan)
    fill = np.nanmean(c) if np.isfinite(c).any() else 1.0
    c = np.clip(np.where(np.isfinite(c), c, fill), 0.0, 1.0)
    codes = cmap[pixels]
    in_snow, in_sf = np.isin(codes, snow_codes), np.isin(codes, sf_codes)
    other = np.minimum(1.0 - c, c)
    p_snow = np.where(in_snow, c, np.minimum(other, c * len(snow_codes)))
    p_sf = np.where(in_sf, c, np.minimum(1.0 - c, c * len(sf_codes)))
    return p_snow, np.maximum(p_sf, p_snow), "confidence"


def product_uncertainty(
    cmap: np.ndarray,
    sunlit: np.ndarray,
    shade: np.ndarray,
    elevation_m: np.ndarray | None,
    sorted_elev: SortedElevations | None,
    config: ProductConfig,
    probabilities: np.ndarray | None,
    confidence: np.ndarray | None,
    pixel_size_m: float,
    lines: tuple[float, float],
) -> ProductUncertainty:
    """Uncertainties of one glacier-scene by block-correlated draws (module docstring).

    `sunlit` are the observed, unshadowed glacier pixels (those the lines are fitted on),
    `shade` the shadowed ones that take the side of the drawn lines, `lines` the class-map
    snowline and firn line (NaN when absent).
    """
    p_snow, p_sf, method = zone_probabilities(cmap, sunlit, config, probabilities, confidence)
    n_sun = int(sunlit.sum())
    n_obs = n_sun + int(shade.sum())
    ids = block_ids(cmap.shape, round(config.uncertainty_block_m / max(pixel_size_m, 1e-9)))
    blk = ids[sunlit]
    uniq, blk = np.unique(blk, return_inverse=True)
    rng = np.random.default_rng(config.uncertainty_seed)
    draws = config.uncertainty_draws
    have_lines = sorted_elev is not None and elevation_m is not None
    shade_z = np.sort(np.asarray(elevation_m, float)[shade]) if have_lines else np.empty(0)
    class_snow = np.isin(cmap[sunlit], config.snow_codes)
    class_sf = np.isin(cmap[sunlit], config.snow_firn_codes)
    aar = np.empty((draws, 2))
    line = np.full((draws, 2), np.nan)
    if have_lines:
        ps_sorted, pf_sorted = sorted_elev.sort(p_snow), sorted_elev.sort(p_sf)
        blk_sorted = sorted_elev.sort(blk)
    for d in range(draws):
        u = rng.random(uniq.size)
        if have_lines:
            ub = u[blk_sorted]
            zs, zf = ub < ps_sorted, ub < pf_sorted
            for j, zone in enumerate((zs, zf)):
                ln = sorted_elev.line(zone, config.snowline_tolerance, config.line_gap_m)[0]
                line[d, j] = ln
                n_zone = int(zone.sum())
                if shade_z.size and config.shadow == "snowline":
                    if np.isfinite(ln):
                        n_zone += shade_z.size - int(np.searchsorted(shade_z, ln, "left"))
                    elif n_zone == zone.size:
                        n_zone += shade_z.size
                aar[d, j] = n_zone / n_obs if n_obs else np.nan
        else:
            ub = u[blk]
            aar[d] = ((ub < p_snow).sum() / n_sun, (ub < p_sf).sum() / n_sun)
    # class-map values the draws are compared with (same observed set as the draws)
    if have_lines and config.shadow == "snowline" and shade_z.size:
        ref_aar = [(int(cz.sum()) + _n_above(shade_z, ln, cz)) / n_obs
                   for cz, ln in ((class_snow, lines[0]), (class_sf, lines[1]))]
    else:
        ref_aar = [cz.mean() if cz.size else np.nan for cz in (class_snow, class_sf)]
    return ProductUncertainty(
        aar_snow=_rms(aar[:, 0], ref_aar[0]),
        aar_snow_firn=_rms(aar[:, 1], ref_aar[1]),
        snowline_m=_rms(line[:, 0], lines[0]),
        firnline_m=_rms(line[:, 1], lines[1]),
        method=method,
    )


def _n_above(shade_z: np.ndarray, line: float, zone: np.ndarray) -> int:
    if np.isfinite(line):
        return shade_z.size - int(np.searchsorted(shade_z, line, "left"))
    return shade_z.size if zone.size and zone.all() else 0


def _rms(draws: np.ndarray, value: float) -> float:
    """sqrt(spread of the draws^2 + (value - mean of the draws)^2); NaN without a value."""
    ok = draws[np.isfinite(draws)]
    if not np.isfinite(value) or ok.size < 2:
        return float("nan")
    return float(np.sqrt(ok.var(ddof=1) + (value - ok.mean()) ** 2))


def member_spread(member_products: list[dict]) -> dict[str, float]:
    """Standard deviation (ddof 1) over the ensemble members of each product computed from
    the member's own class map: the model error that one set of mean probabilities hides
    (fold models that disagree on a whole glacier, each of them confident). NaN where fewer
    than two members give a finite value."""
    out = {}
    for key in ("aar_snow", "aar_snow_firn", "snowline_m", "firnline_m"):
        col = {"aar_snow": "aar", "aar_snow_firn": "aar_snow_firn"}.get(key, key)
        v = np.array([float(p[col]) for p in member_products], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[key] = float(v.std(ddof=1)) if v.size >= 2 else float("nan")
    return out
