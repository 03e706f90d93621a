"""Landsat Collection 2 Level-2 products: MTL metadata, SR band files, scale and offset."""

from __future__ import annotations

import re
from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.base import Scene, _assemble, _parse_time, _sun_from_time
from glacierfacies.scenes.grid import Grid, _first_line
from glacierfacies.scenes.sentinel2 import _local, _parse_xml
from glacierfacies.scenes.spec import LANDSAT_C2_OFFSET, LANDSAT_C2_SCALE, SensorSpec

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


def _find_mtl(p: Path) -> Path | None:
    if p.is_file() and re.search(r"_MTL\.(txt|xml)$", p.name, re.I):
        return p
    if p.is_dir():
        cands = sorted(q for q in p.iterdir() if re.search(r"_MTL\.(txt|xml)$", q.name, re.I))
        txt = [q for q in cands if q.suffix.lower() == ".txt"]
        return (txt or cands or [None])[0]
    return None


def _parse_mtl(path: Path) -> dict[str, dict[str, str]]:
    """Landsat MTL (txt `GROUP = ...` / `KEY = VALUE` or the XML form) -> {group: {key: value}}."""
    groups: dict[str, dict[str, str]] = {}
    try:
        if path.suffix.lower() == ".xml":
            root = _parse_xml(path)
            for grp in root:
                groups[_local(grp.tag)] = {
                    _local(el.tag): (el.text or "").strip() for el in grp if len(el) == 0
                }
            return groups
        stack: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            if "=" not in line:
                continue
            k, v = (s.strip() for s in line.split("=", 1))
            if k == "GROUP":
                stack.append(v)
            elif k == "END_GROUP":
                if stack:
                    stack.pop()
            else:
                groups.setdefault(stack[-1] if stack else "", {})[k] = v.strip('"')
    except (OSError, UnicodeError) as exc:
        raise InputError(path, f"cannot read MTL ({_first_line(exc)})") from None
    return groups


def _mtl_get(groups: dict[str, dict[str, str]], key: str, prefer: str | None = None) -> str | None:
    if prefer and key in groups.get(prefer, {}):
        return groups[prefer][key]
    for g in groups.values():
        if key in g and g[key] not in ("", "NULL"):
            return g[key]
    return None


def _landsat_product(mtl: Path) -> tuple[dict, str, str, SensorSpec]:
    """(MTL groups, file prefix, product id, sensor spec) of a Landsat C2 L2 product."""
    groups = _parse_mtl(mtl)
    if not groups:
        raise InputError(mtl, "empty or unreadable MTL")
    prefix = re.sub(r"_MTL\.(txt|xml)$", "", mtl.name, flags=re.I)
    product_id = _mtl_get(groups, "LANDSAT_PRODUCT_ID") or prefix
    mission = landsat_mission(product_id) or landsat_mission(
        _mtl_get(groups, "SPACECRAFT_ID") or ""
    )
    if mission is None:
        raise InputError(mtl, "cannot tell the Landsat mission (LANDSAT_PRODUCT_ID/SPACECRAFT_ID)")
    return groups, prefix, product_id, landsat(mission)


def _landsat_files(mtl: Path, prefix: str, spec: SensorSpec) -> list[tuple[Path, int]]:
    """(file, band 1) of the six optical SR bands beside the MTL."""
    files = []
    for b in OPTICAL_BANDS:
        name = spec.bands[b]
        cands = [
            q
            for q in mtl.parent.iterdir()
            if q.stem.upper() == f"{prefix}_{name}".upper()
            and q.suffix.lower() in (".tif", ".tiff")
        ]
        if not cands:
            raise InputError(mtl.parent / f"{prefix}_{name}.TIF", "missing band file")
        files.append((cands[0], 1))
    return files


def _read_landsat(mtl: Path, grid: Grid | None) -> Scene:
    groups, prefix, product_id, spec = _landsat_product(mtl)
    # Level-2 SR coefficients from the MTL when given (not the Level-1 TOA ones).
    l2 = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"
    mults, adds = [], []
    for name in (spec.bands[b] for b in OPTICAL_BANDS):
        n = name.split("_B")[-1]
        mult = groups.get(l2, {}).get(f"REFLECTANCE_MULT_BAND_{n}")
        add = groups.get(l2, {}).get(f"REFLECTANCE_ADD_BAND_{n}")
        mults.append(float(mult) if mult else None)
        adds.append(float(add) if add else None)
    if any(m is not None and abs(m - spec.scale) > 1e-12 for m in mults):
        raise InputError(mtl, f"unexpected SR scale {mults} (Collection-2 L2 uses 2.75e-05)")
    files = _landsat_files(mtl, prefix, spec)
    date = _mtl_get(groups, "DATE_ACQUIRED")
    ctime = _mtl_get(groups, "SCENE_CENTER_TIME")
    acquired = None
    if date:
        try:
            acquired = _parse_time(f"{date}T{ctime or '00:00:00'}")
        except ValueError:
            raise InputError(
                mtl, f"bad DATE_ACQUIRED/SCENE_CENTER_TIME {date!r} {ctime!r}"
            ) from None
    az, el = _mtl_get(groups, "SUN_AZIMUTH"), _mtl_get(groups, "SUN_ELEVATION")
    if (az is None or el is None) and (acquired is None or ctime is None):
        raise InputError(
            mtl,
            "no sun angles (SUN_AZIMUTH/SUN_ELEVATION) and no acquisition "
            "time (DATE_ACQUIRED + SCENE_CENTER_TIME) to compute them",
        )
    if acquired is None:
        raise InputError(mtl, "no acquisition date (DATE_ACQUIRED)")
    refl, valid, grid = _assemble(files, spec, grid, adds)
    if az is None or el is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    else:
        sun_az, sun_el = float(az), float(el)
    return Scene(
        reflectance=refl,
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        sensor=spec.name,
        scene_id=product_id,
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=mtl.parent,
        metadata={
            "mtl": str(mtl),
            "band_files": [str(f) for f, _ in files],
            "sun_angles": "computed" if az is None else "MTL",
        },
    )

