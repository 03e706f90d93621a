"""Landsat Collection 2 Level-2 products (folder, MTL or .tar): MTL metadata, SR band files,
scale and offset, QA_PIXEL / QA_RADSAT."""

from __future__ import annotations

import math
import re
from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.archive import ProductFiles, open_product
from glacierfacies.scenes.base import (
    Scene,
    _assemble,
    _finish,
    _parse_time,
    _sun_from_time,
    _warn_stack_options,
)
from glacierfacies.scenes.grid import Grid, _first_line
from glacierfacies.scenes.masks import (
    MASK_OFF,
    MASK_TEXT,
    SATURATION_TEXT,
    no_mask_file,
    qa_pixel_flags,
    qa_radsat_flags,
)
from glacierfacies.scenes.options import ReadOptions
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


_MTL_RE = re.compile(r"_MTL\.(txt|xml)$", re.I)


def _find_mtl(p: Path) -> Path | None:
    """The MTL file of a Landsat product folder (or `p` itself when it is one)."""
    if p.is_file() and _MTL_RE.search(p.name):
        return p
    if p.is_dir():
        cands = sorted(q for q in p.iterdir() if _MTL_RE.search(q.name))
        txt = [q for q in cands if q.suffix.lower() == ".txt"]
        return (txt or cands or [None])[0]
    return None


def _is_landsat_tar(p: Path) -> bool:
    """A Landsat product as downloaded: a .tar (or .tar.gz) holding an _MTL file."""
    if not (p.is_file() and p.name.lower().endswith((".tar", ".tar.gz", ".tgz"))):
        return False
    import tarfile

    try:
        with tarfile.open(p) as tf:
            return any(_MTL_RE.search(n) for n in tf.getnames())
    except (OSError, tarfile.TarError):
        return False


def _landsat_source(p: Path) -> tuple[ProductFiles, str] | None:
    """(the product's files, the MTL's name among them) of a Landsat folder, MTL or .tar;
    None when `p` is none of these."""
    if p.is_file() and p.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        tree = open_product(p)
        cands = sorted((n for n in tree.names if _MTL_RE.search(n)),
                       key=lambda n: (n.count("/"), not n.lower().endswith(".txt"), n))
        if not cands:
            raise InputError(p, "archive holds no Landsat _MTL.txt/.xml (not a Landsat product)")
        return tree, cands[0]
    mtl = _find_mtl(p)
    if mtl is None:
        return None
    return open_product(mtl.parent, recursive=False), mtl.name


def _parse_mtl(path: Path, text: str | None = None) -> dict[str, dict[str, str]]:
    """Landsat MTL (txt `GROUP = ...` / `KEY = VALUE` or the XML form) -> {group: {key: value}}.
    `text` is the MTL's content when it comes from an archive (`path` then names it)."""
    groups: dict[str, dict[str, str]] = {}
    try:
        if path.suffix.lower() == ".xml":
            root = _parse_xml(path, text)
            for grp in root:
                groups[_local(grp.tag)] = {
                    _local(el.tag): (el.text or "").strip() for el in grp if len(el) == 0
                }
            return groups
        stack: list[str] = []
        body = path.read_text(errors="replace") if text is None else text
        for line in body.splitlines():
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


def _landsat_product(tree: ProductFiles, mtl: str) -> tuple[dict, str, str, SensorSpec, int]:
    """(MTL groups, file prefix, product id, sensor spec, mission) of a Landsat C2 L2 product."""
    display = tree.display(mtl)
    groups = _parse_mtl(display, tree.read_text(mtl))
    if not groups:
        raise InputError(display, "empty or unreadable MTL")
    prefix = _MTL_RE.sub("", mtl.rsplit("/", 1)[-1])
    product_id = _mtl_get(groups, "LANDSAT_PRODUCT_ID") or prefix
    mission = landsat_mission(product_id) or landsat_mission(
        _mtl_get(groups, "SPACECRAFT_ID") or ""
    )
    if mission is None:
        raise InputError(display, "cannot tell the Landsat mission (LANDSAT_PRODUCT_ID/SPACECRAFT_ID)")
    return groups, prefix, product_id, landsat(mission), mission


def _product_file(tree: ProductFiles, mtl: str, prefix: str, name: str) -> str | None:
    """The product's `<prefix>_<name>.TIF` (any case), beside the MTL."""
    folder = mtl.rsplit("/", 1)[0] + "/" if "/" in mtl else ""
    want = f"{folder}{prefix}_{name}".upper()
    for n in tree.names:
        stem, _, ext = n.rpartition(".")
        if stem.upper() == want and ext.lower() in ("tif", "tiff"):
            return n
    return None


def _landsat_files(tree: ProductFiles, mtl: str, prefix: str, spec: SensorSpec
                   ) -> list[tuple[str, int]]:
    """(raster path, band 1) of the six optical SR bands beside the MTL."""
    files = []
    for b in OPTICAL_BANDS:
        name = spec.bands[b]
        found = _product_file(tree, mtl, prefix, name)
        if found is None:
            folder = tree.display(mtl).parent
            raise InputError(folder / f"{prefix}_{name}.TIF", "missing band file")
        files.append((tree.raster(found), 1))
    return files


def _mtl_number(text: str | None, key: str, display: str,
                valid: tuple[float, float] | None = None) -> float | None:
    """An MTL value as a number (None when absent); a one-line InputError naming the MTL
    when it is not one, or outside `valid`."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(display, f"{key} is not a number: {text!r}") from None
    if not math.isfinite(value) or (valid is not None and not valid[0] <= value <= valid[1]):
        raise InputError(display, f"{key} = {text} is outside {valid}")
    return value


def _read_landsat(source: tuple[ProductFiles, str], grid: Grid | None,
                  options: ReadOptions | None = None) -> Scene:
    options = options or ReadOptions()
    tree, mtl = source
    display = tree.display(mtl)
    groups, prefix, product_id, spec, mission = _landsat_product(tree, mtl)
    # Level-2 SR coefficients from the MTL when given (not the Level-1 TOA ones).
    l2 = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"
    mults, adds = [], []
    for name in (spec.bands[b] for b in OPTICAL_BANDS):
        n = name.split("_B")[-1]
        mult = groups.get(l2, {}).get(f"REFLECTANCE_MULT_BAND_{n}")
        add = groups.get(l2, {}).get(f"REFLECTANCE_ADD_BAND_{n}")
        mults.append(_mtl_number(mult, f"REFLECTANCE_MULT_BAND_{n}", display))
        adds.append(_mtl_number(add, f"REFLECTANCE_ADD_BAND_{n}", display))
    if any(m is not None and abs(m - spec.scale) > 1e-12 for m in mults):
        raise InputError(display, f"unexpected SR scale {mults} (Collection-2 L2 uses 2.75e-05)")
    if any(a is not None and abs(a - spec.offset) > 1e-9 for a in adds):
        raise InputError(display, f"unexpected SR offset {adds} (Collection-2 L2 uses -0.2)")
    files = _landsat_files(tree, mtl, prefix, spec)
    date = _mtl_get(groups, "DATE_ACQUIRED")
    ctime = _mtl_get(groups, "SCENE_CENTER_TIME")
    acquired = None
    if date:
        try:
            acquired = _parse_time(f"{date}T{ctime or '00:00:00'}")
        except ValueError:
            raise InputError(
                display, f"bad DATE_ACQUIRED/SCENE_CENTER_TIME {date!r} {ctime!r}"
            ) from None
    az, el = _mtl_get(groups, "SUN_AZIMUTH"), _mtl_get(groups, "SUN_ELEVATION")
    if (az is None or el is None) and (acquired is None or ctime is None):
        raise InputError(
            display,
            "no sun angles (SUN_AZIMUTH/SUN_ELEVATION) and no acquisition "
            "time (DATE_ACQUIRED + SCENE_CENTER_TIME) to compute them",
        )
    if acquired is None:
        raise InputError(display, "no acquisition date (DATE_ACQUIRED)")
    _warn_stack_options(options, tree.path, "Landsat")
    refl, valid, grid = _assemble(files, spec, grid, adds)
    masks, mask_note, saturation = [], MASK_OFF, "none"
    if options.product_mask:
        qa_pixel = _product_file(tree, mtl, prefix, "QA_PIXEL")
        radsat = _product_file(tree, mtl, prefix, "QA_RADSAT")
        if qa_pixel is not None:
            masks.append((tree.raster(qa_pixel), tree.display(qa_pixel),
                          lambda raw: (qa_pixel_flags(raw), None)))
            mask_note = MASK_TEXT["QA_PIXEL"]
        else:
            mask_note = no_mask_file("QA_PIXEL")
        if radsat is not None:
            masks.append((tree.raster(radsat), tree.display(radsat),
                          lambda raw: (None, qa_radsat_flags(raw, mission))))
            saturation = SATURATION_TEXT["QA_RADSAT"]
    refl, valid, qa = _finish(refl, valid, masks, grid, options, files[0][0])
    if az is None or el is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    else:
        sun_az = _mtl_number(az, "SUN_AZIMUTH", display, (-360.0, 360.0))
        sun_el = _mtl_number(el, "SUN_ELEVATION", display, (-90.0, 90.0))
    return Scene.on_grid(
        grid,
        reflectance=refl,
        valid=valid,
        sensor=spec.name,
        scene_id=product_id,
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=tree.path if tree.kind != "dir" else display.parent,
        metadata={
            "mtl": str(display),
            "band_files": [f for f, _ in files],
            "sun_angles": "computed" if az is None else "MTL",
            "product_mask": mask_note,
            "saturation": saturation,
        },
        qa=qa,
    )
