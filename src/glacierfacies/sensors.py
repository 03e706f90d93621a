"""Per-sensor band tables: which product band is which optical feature, at what resolution,
and how digital numbers (DN) become surface reflectance.

reflectance = DN * scale + offset, with DN 0 = nodata and DN 65535 = saturated for the uint16
products. The six optical features are `features.OPTICAL_BANDS` (blue, green, red, nir,
swir1, swir2); the tables map each to the product's own band name.

- Sentinel-2 L2A (ESA, Sen2Cor): B02 B03 B04 B08 (10 m), B11 B12 (20 m; resampled to 10 m
  by scene.py). reflectance = (DN + BOA_ADD_OFFSET) / QUANTIFICATION_VALUE; from processing
  baseline 04.00 (25 Jan 2022) BOA_ADD_OFFSET = -1000, before it 0; QUANTIFICATION = 10000.
  The metadata values win when MTD_MSIL2A.xml gives them.
- Landsat Collection-2 Level-2 surface reflectance (USGS): scale 2.75e-5, offset -0.2.
  TM (Landsat 4/5) and ETM+ (Landsat 7): SR_B1 B2 B3 B4 B5 B7; OLI (Landsat 8/9): SR_B2..B7.
- Generic GeoTIFF: a user band map (feature -> 1-based band index) and scale/offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from glacierfacies.features import OPTICAL_BANDS

NODATA_DN = 0
SATURATED_DN = 65535

S2_QUANTIFICATION = 10000.0
S2_BOA_OFFSET_FROM_04_00 = -1000.0

LANDSAT_C2_SCALE = 2.75e-5
LANDSAT_C2_OFFSET = -0.2


@dataclass(frozen=True)
class SensorSpec:
    """One sensor's band table and DN -> reflectance coding."""

    name: str  # "sentinel2", "landsat5", "landsat8", "generic", ...
    bands: dict[str, str]  # optical feature -> product band name (or "1".."N" for generic)
    resolution_m: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    offset: float = 0.0
    nodata_dn: float | None = NODATA_DN
    saturated_dn: float | None = SATURATED_DN

    def decode(self, dn, offset: float | None = None):
        """DN array -> float32 reflectance (NaN at nodata/saturated DN)."""
        import numpy as np

        dn = np.asarray(dn)
        refl = dn.astype(np.float32) * np.float32(self.scale) + np.float32(
            self.offset if offset is None else offset
        )
        bad = self.invalid(dn)
        if bad is not None:
            refl[bad] = np.nan
        return refl

    def invalid(self, dn):
        """Bool array: DN that is nodata or saturated (None when the sensor has neither)."""
        import numpy as np

        bad = None
        if self.nodata_dn is not None:
            bad = dn == self.nodata_dn
        if self.saturated_dn is not None:
            sat = dn == self.saturated_dn
            bad = sat if bad is None else (bad | sat)
        if np.issubdtype(np.asarray(dn).dtype, np.floating):
            nan = ~np.isfinite(dn)
            bad = nan if bad is None else (bad | nan)
        return bad


def sentinel2_offset(processing_baseline: str | None) -> float:
    """BOA_ADD_OFFSET in DN for a processing baseline string such as "04.00" or "N0509"."""
    if not processing_baseline:
        return S2_BOA_OFFSET_FROM_04_00  # current products; caller should pass metadata
    m = re.search(r"(\d{2})\.?(\d{2})", processing_baseline)
    if not m:
        return S2_BOA_OFFSET_FROM_04_00
    major = int(m.group(1))
    return S2_BOA_OFFSET_FROM_04_00 if major >= 4 else 0.0


def sentinel2(
    processing_baseline: str | None = "04.00",
    boa_offset_dn: float | None = None,
    quantification: float = S2_QUANTIFICATION,
) -> SensorSpec:
    """Sentinel-2 L2A spec; the offset follows the baseline unless the metadata gives it."""
    off_dn = sentinel2_offset(processing_baseline) if boa_offset_dn is None else boa_offset_dn
    return SensorSpec(
        name="sentinel2",
        bands=dict(zip(OPTICAL_BANDS, ("B02", "B03", "B04", "B08", "B11", "B12"), strict=True)),
        resolution_m={"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B11": 20, "B12": 20},
        scale=1.0 / quantification,
        offset=off_dn / quantification,
    )


_LANDSAT_TM_BANDS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
_LANDSAT_OLI_BANDS = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")


def landsat(mission: int) -> SensorSpec:
    """Landsat 4/5 (TM), 7 (ETM+) or 8/9 (OLI) Collection-2 Level-2 surface reflectance."""
    if mission in (4, 5, 7):
        names = _LANDSAT_TM_BANDS
    elif mission in (8, 9):
        names = _LANDSAT_OLI_BANDS
    else:
        raise ValueError(f"unsupported Landsat mission {mission} (4, 5, 7, 8 or 9)")
    return SensorSpec(
        name=f"landsat{mission}",
        bands=dict(zip(OPTICAL_BANDS, names, strict=True)),
        resolution_m=dict.fromkeys(names, 30.0),
        scale=LANDSAT_C2_SCALE,
        offset=LANDSAT_C2_OFFSET,
    )


def landsat_mission(text: str) -> int | None:
    """Mission number from a product id (LC09_..., LE07_..., LT05_...) or SPACECRAFT_ID."""
    m = re.search(r"\bL[COTEM]0?([45789])_", text.upper()) or re.search(
        r"LANDSAT[_ ]?([45789])\b", text.upper()
    )
    return int(m.group(1)) if m else None


def generic(
    band_map: dict[str, int] | None, scale: float | None, offset: float | None, count: int
) -> SensorSpec:
    """A plain GeoTIFF stack: `band_map` feature -> 1-based band (default: bands 1..6 in
    feature order, only when the file has exactly 6 bands); scale/offset default 1 and 0.
    No DN is nodata unless the file says so (scene.py applies the file's nodata)."""
    if band_map is None:
        if count != 6:
            raise ValueError(
                f"a {count}-band GeoTIFF needs a band map (e.g. blue=1,green=2,...,swir2=6)"
            )
        band_map = {name: i + 1 for i, name in enumerate(OPTICAL_BANDS)}
    missing = [b for b in OPTICAL_BANDS if b not in band_map]
    unknown = [b for b in band_map if b not in OPTICAL_BANDS]
    if missing or unknown:
        raise ValueError(
            f"band map must name exactly {', '.join(OPTICAL_BANDS)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    bad = {k: v for k, v in band_map.items() if not (1 <= int(v) <= count)}
    if bad:
        raise ValueError(f"band map indexes {bad} outside 1..{count}")
    return SensorSpec(
        name="generic",
        bands={k: str(int(band_map[k])) for k in OPTICAL_BANDS},
        scale=1.0 if scale is None else float(scale),
        offset=0.0 if offset is None else float(offset),
        nodata_dn=None,
        saturated_dn=None,
    )


def parse_band_map(text: str) -> dict[str, int]:
    """'blue=1,green=2,...' -> {'blue': 1, ...} (for the CLI)."""
    out: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"band map entry {part!r} is not name=index")
        k, v = part.split("=", 1)
        out[k.strip()] = int(v)
    return out
