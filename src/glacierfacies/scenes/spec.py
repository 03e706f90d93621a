"""What a sensor product is: band files, scale and offset, nodata and saturation codes."""

from __future__ import annotations

from dataclasses import dataclass, field

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

