"""How a scene is read: band map and DN coding of plain stacks, product masks, S2 offset.

One frozen object, shared by `features`, `map`, `map-many`, `dataset build` and the run
configuration, so that every command that reads a scene reads it the same way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from glacierfacies.errors import InputError

__all__ = ["PLAUSIBLE_REFLECTANCE", "ReadOptions"]

#: The median of the valid blue, green and red reflectance of a scene must lie in this range;
#: outside it the DN coding is wrong (DN read as reflectance, a missing offset, ...).
PLAUSIBLE_REFLECTANCE = (-0.05, 1.5)

#: Target grids a scene can be read onto (metres).
RESOLUTIONS_M = (10.0, 20.0, 30.0)


@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """Options of every scene reader.

    `band_map` (feature -> 1-based band), `scale`, `offset` (reflectance = DN * scale +
    offset) and `nodata` (an extra nodata DN) are for GeoTIFF stacks, which carry no coding of
    their own; products (Sentinel-2, Landsat, HLS) have theirs and ignore them with a warning.
    `product_mask` applies the product's own cloud / cloud-shadow mask (SCL, QA_PIXEL,
    Fmask); `mask_saturated` also drops the pixels the product flags as saturated (off by
    default: bright snow saturates). `s2_offset_dn` overrides the Sentinel-2 BOA_ADD_OFFSET
    (DN, e.g. -1000 or 0) whatever the metadata, product name or date say.
    `resolution_m` is the target grid's pixel size (10, 20 or 30 m; 30 suits Landsat-only
    work: a Landsat scene on the 10 m grid is 9x the pixels for no information).
    `fill_gaps_px` > 0 inpaints optical gaps of up to that many pixels that the product mask
    did not remove (`scenes.gaps`), flagged QA_FILLED.
    """

    band_map: dict[str, int] | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    product_mask: bool = True
    mask_saturated: bool = False
    s2_offset_dn: float | None = None
    resolution_m: float = 10.0
    fill_gaps_px: int = 0

    def __post_init__(self) -> None:
        if not 0 <= int(self.fill_gaps_px) <= 64:
            raise InputError(None, f"--fill-gaps must be 0..64 pixels, got {self.fill_gaps_px}")
        object.__setattr__(self, "fill_gaps_px", int(self.fill_gaps_px))
        if float(self.resolution_m) not in RESOLUTIONS_M:
            raise InputError(None, f"--resolution must be one of "
                                   f"{', '.join(f'{r:g}' for r in RESOLUTIONS_M)}, got "
                                   f"{self.resolution_m}")
        object.__setattr__(self, "resolution_m", float(self.resolution_m))
        for name in ("scale", "offset", "nodata", "s2_offset_dn"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise InputError(None, f"--{name.replace('_dn', '').replace('_', '-')} must be "
                                       f"a finite number, got {v}")
        if self.scale is not None and float(self.scale) == 0:
            raise InputError(None, "--scale must not be 0")
        if self.band_map is not None:
            object.__setattr__(self, "band_map", {str(k): int(v)
                                                  for k, v in dict(self.band_map).items()})

    @classmethod
    def from_cli(cls, band_map: str | dict | None = None, scale: float | None = None,
                 offset: float | None = None, nodata: float | None = None,
                 no_product_mask: bool = False, mask_saturated: bool = False,
                 s2_offset: float | None = None, resolution: float = 10.0,
                 fill_gaps: int = 0) -> ReadOptions:
        """From the command-line options (a band map as 'blue=1,green=2,...')."""
        bmap = band_map
        if isinstance(band_map, str):
            from glacierfacies.scenes.generic import parse_band_map

            try:
                bmap = parse_band_map(band_map)
            except ValueError as exc:
                raise InputError(None, f"--band-map: {exc}") from None
        return cls(band_map=bmap or None, scale=scale, offset=offset, nodata=nodata,
                   product_mask=not no_product_mask, mask_saturated=mask_saturated,
                   s2_offset_dn=s2_offset, resolution_m=resolution, fill_gaps_px=fill_gaps)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReadOptions:
        """From a mapping (the `read` table of a run configuration); unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(None, f"unknown scene reading option(s) {unknown}; known: "
                                   f"{sorted(known)}")
        if isinstance(d.get("band_map"), str):
            return cls.from_cli(**{**{k: v for k, v in d.items() if k not in
                                      ("product_mask", "s2_offset_dn", "resolution_m",
                                       "fill_gaps_px")},
                                   "resolution": d.get("resolution_m", 10.0),
                                   "fill_gaps": d.get("fill_gaps_px", 0),
                                   "no_product_mask": not d.get("product_mask", True),
                                   "s2_offset": d.get("s2_offset_dn")})
        return cls(**d)

    @property
    def stack_coding_given(self) -> bool:
        """True when a GeoTIFF-stack option (band map, scale, offset, nodata) is set."""
        return any(v is not None for v in (self.band_map, self.scale, self.offset, self.nodata))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
