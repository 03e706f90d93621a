"""DEM checks: a readable raster with a CRS, some valid elevation, and elevations that are
plausible on Earth, so voids written as -9999 (or 32767) without a nodata tag are refused
instead of becoming "valid" terrain."""

from __future__ import annotations

import os

import numpy as np

from glacierfacies.errors import InputError

__all__ = ["PLAUSIBLE_ELEVATION_M", "check_dem", "check_elevations"]

#: Elevations outside this range (m) are not terrain: the Dead Sea shore is at -430 m,
#: Everest at 8849 m. DEM voids are usually -9999, -32768, 32767 or 3.4e38.
PLAUSIBLE_ELEVATION_M = (-500.0, 9000.0)


def _hint(nodata: float | None) -> str:
    if nodata is None:
        return ("voids without a nodata tag? set it, e.g. `gdal_edit.py -a_nodata -9999 "
                "FILE`")
    return f"voids not coded as its nodata ({nodata:g})? or a DEM not in metres"


def check_elevations(z: np.ndarray, path: str | os.PathLike | None,
                     nodata: float | None = None, *, require_valid: bool = True) -> None:
    """InputError naming `path` when the finite values of `z` (NaN = nodata) lie outside
    PLAUSIBLE_ELEVATION_M, or (with `require_valid`) when there is none."""
    z = np.asarray(z)
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        if require_valid:
            raise InputError(path, "DEM holds no valid elevation here (all nodata)")
        return
    lo, hi = float(finite.min()), float(finite.max())
    plo, phi = PLAUSIBLE_ELEVATION_M
    if lo < plo or hi > phi:
        bad = int(((finite < plo) | (finite > phi)).sum())
        raise InputError(path, f"{bad} DEM value(s) outside {plo:g}..{phi:g} m (range "
                               f"{lo:.6g}..{hi:.6g}): {_hint(nodata)}")


def check_dem(path: str | os.PathLike) -> dict[str, float]:
    """Read the whole DEM block by block: a one-line InputError naming it when it cannot be
    read, has no CRS, holds no valid elevation, or implausible ones (see check_elevations).
    Returns its range and valid fraction."""
    from glacierfacies.scenes.grid import _first_line, _open_raster

    with _open_raster(path) as src:
        if src.crs is None:
            raise InputError(path, "DEM has no CRS")
        nodata = src.nodata
        lo, hi, n_valid, n_all = np.inf, -np.inf, 0, 0
        plo, phi = PLAUSIBLE_ELEVATION_M
        bad = 0
        try:
            for _, window in src.block_windows(1):
                z = src.read(1, window=window).astype(np.float64)
                ok = np.isfinite(z)
                if nodata is not None:
                    ok &= z != nodata
                n_all += z.size
                v = z[ok]
                if v.size:
                    n_valid += v.size
                    lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
                    bad += int(((v < plo) | (v > phi)).sum())
        except Exception as exc:  # noqa: BLE001 - GDAL read errors of a damaged file
            raise InputError(path, f"cannot read DEM ({_first_line(exc)})") from None
    if n_valid == 0:
        raise InputError(path, "DEM holds no valid elevation (all nodata)")
    if bad:
        raise InputError(path, f"{bad} DEM value(s) outside {plo:g}..{phi:g} m (range "
                               f"{lo:.6g}..{hi:.6g}): {_hint(nodata)}")
    return {"min_m": lo, "max_m": hi, "valid_fraction": n_valid / n_all}
