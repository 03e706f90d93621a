"""Sentinel-2 L2A products (.SAFE folders, .SAFE.zip, band folders): band files, SCL,
the BOA offset (metadata, else the name's baseline, else the date), metadata."""

from __future__ import annotations

import datetime as dt
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.archive import ProductFiles, open_product
from glacierfacies.scenes.base import (
    NODE_LOCAL_TIME_H,
    Scene,
    _assemble,
    _assume_time,
    _finish,
    _name_has_time,
    _parse_time,
    _sun_from_time,
    _time_from_name,
    _warn_stack_options,
)
from glacierfacies.scenes.grid import _RASTER_EXT, Grid, _first_line, _grid_of_files
from glacierfacies.scenes.masks import (
    MASK_OFF,
    MASK_TEXT,
    SATURATION_TEXT,
    no_mask_file,
    scl_flags,
)
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.spec import S2_BOA_OFFSET_FROM_04_00, S2_QUANTIFICATION, SensorSpec

#: ESA's processing baseline 04.00 (BOA_ADD_OFFSET -1000 DN) went live on 2022-01-25;
#: scenes acquired before it are baseline < 04.00 unless reprocessed (then `_N05xx_` says so).
S2_BASELINE_04_DATE = dt.date(2022, 1, 25)


def sentinel2_offset(processing_baseline: str | None) -> float:
    """BOA_ADD_OFFSET in DN for a processing baseline string such as "04.00" or "N0509"
    (-1000 from 04.00 on, 0 before); ValueError when it names no baseline."""
    m = re.search(r"(\d{2})\.?(\d{2})", processing_baseline or "")
    if not m:
        raise ValueError(f"not a processing baseline: {processing_baseline!r}")
    return S2_BOA_OFFSET_FROM_04_00 if int(m.group(1)) >= 4 else 0.0


def sentinel2(
    processing_baseline: str | None = "04.00",
    boa_offset_dn: float | None = None,
    quantification: float = S2_QUANTIFICATION,
) -> SensorSpec:
    """Sentinel-2 L2A spec; the offset follows the baseline unless `boa_offset_dn` is given."""
    if boa_offset_dn is None:
        off_dn = sentinel2_offset(processing_baseline or "04.00")
    else:
        off_dn = boa_offset_dn
    return SensorSpec(
        name="sentinel2",
        bands=dict(zip(OPTICAL_BANDS, ("B02", "B03", "B04", "B08", "B11", "B12"), strict=True)),
        resolution_m={"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B11": 20, "B12": 20},
        scale=1.0 / quantification,
        offset=off_dn / quantification,
    )


_S2_BAND_ID = {
    "B01": 0,
    "B02": 1,
    "B03": 2,
    "B04": 3,
    "B05": 4,
    "B06": 5,
    "B07": 6,
    "B08": 7,
    "B8A": 8,
    "B09": 9,
    "B10": 10,
    "B11": 11,
    "B12": 12,
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(path: Path, text: str | None = None) -> ET.Element:
    """The root of an XML file (or of `text`, read from an archive; `path` names it)."""
    try:
        return ET.fromstring(text) if text is not None else ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(path, f"cannot parse metadata XML ({_first_line(exc)})") from None


def _xml_find(root: ET.Element, name: str) -> ET.Element | None:
    for el in root.iter():
        if _local(el.tag) == name:
            return el
    return None


def _xml_text(root: ET.Element, name: str) -> str | None:
    el = _xml_find(root, name)
    return el.text.strip() if el is not None and el.text else None


def _is_safe_zip(p: Path) -> bool:
    """A zipped .SAFE (as downloaded): NAME.SAFE.zip, or any .zip holding MTD_MSIL2A.xml."""
    if not (p.is_file() and p.name.lower().endswith(".zip")):
        return False
    if p.name.upper().endswith(".SAFE.ZIP"):
        return True
    import zipfile

    try:
        with zipfile.ZipFile(p) as zf:
            return any(n.rsplit("/", 1)[-1] == "MTD_MSIL2A.xml" for n in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_safe(p: Path) -> bool:
    return (p.is_dir() and (p.suffix.upper() == ".SAFE" or (p / "MTD_MSIL2A.xml").exists())
            ) or _is_safe_zip(p)


def _band_pattern(band: str) -> re.Pattern:
    return re.compile(rf"(^|[_\-.]){band}([_\-.]|$)", re.I)


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _res_key(name: str) -> tuple[int, str]:
    m = re.search(r"_(\d{2})m$", _stem(name))
    return (int(m.group(1)) if m else 999, name)


def _raster_names(tree: ProductFiles) -> list[str]:
    """Raster files of an S2 product: in a .SAFE only IMG_DATA holds reflectance and SCL;
    QI_DATA masks (MSK_QUALIT_B02.jp2, ...) are never bands."""
    files = [
        n for n in tree.names
        if n.lower().endswith(_RASTER_EXT) and not n.rsplit("/", 1)[-1].upper().startswith("MSK_")
    ]
    img = [n for n in files if "IMG_DATA" in n.split("/")]
    return img or files


def _s2_band_files(tree: ProductFiles) -> dict[str, str]:
    """S2 band name (and "SCL") -> file name in the product (finest resolution first)."""
    files = _raster_names(tree)
    out: dict[str, str] = {}
    for band in ("B02", "B03", "B04", "B08", "B11", "B12", "SCL"):
        pat = _band_pattern(band)
        hits = sorted((n for n in files if pat.search(_stem(n))), key=_res_key)
        if hits:
            out[band] = hits[0]
    if "B08" not in out:  # R60m holds no B08: its NIR is the narrow B8A (as HLS S30 maps it)
        hits = sorted((n for n in files if _band_pattern("B8A").search(_stem(n))), key=_res_key)
        if hits:
            out["B08"] = hits[0]
    return out


def _is_s2_band_folder(p: Path) -> bool:
    return p.is_dir() and any(
        q.suffix.lower() in _RASTER_EXT and _band_pattern("B02").search(q.stem) for q in p.iterdir()
    )


def _s2_tree(p: Path) -> ProductFiles:
    return open_product(p, recursive=True)


def _s2_files(tree: ProductFiles, spec: SensorSpec, safe: bool) -> list[tuple[str, int]]:
    """(raster path, band 1) of the six optical bands of an S2 product / band folder."""
    band_files = _s2_band_files(tree)
    missing = [b for b in spec.bands.values() if b not in band_files]
    if missing:
        where = tree.display("GRANULE/*/IMG_DATA") if safe else tree.path
        raise InputError(where, f"missing band file(s) {', '.join(missing)} (.jp2 or .tif)")
    return [(tree.raster(band_files[spec.bands[b]]), 1) for b in OPTICAL_BANDS]


def _first_named(tree: ProductFiles, filename: str, under: str | None = None) -> str | None:
    """The shallowest file called `filename` (under a folder named `under`, if given)."""
    hits = [n for n in tree.names if n.rsplit("/", 1)[-1] == filename
            and (under is None or under in n.split("/"))]
    return min(hits, key=lambda n: (n.count("/"), n)) if hits else None


def _baseline_from_name(*names: str) -> str | None:
    for name in names:
        m = re.search(r"_N(\d{2})(\d{2})(_|$|\.)", name)
        if m:
            return f"{m.group(1)}.{m.group(2)}"
    return None


def _s2_offsets(options: ReadOptions, band_offsets: dict[int, float], baseline: str | None,
                baseline_from: str, acquired: dt.datetime, source: Path
                ) -> tuple[list[float], str]:
    """BOA_ADD_OFFSET (DN) of the six bands and where it came from: --s2-offset, the
    metadata's offset list, its baseline, the product name's _Nxxxx_, else the date."""
    ids = [_S2_BAND_ID[b] for b in ("B02", "B03", "B04", "B08", "B11", "B12")]
    if options.s2_offset_dn is not None:
        return [float(options.s2_offset_dn)] * 6, f"--s2-offset {options.s2_offset_dn:g}"
    if band_offsets and all(i in band_offsets for i in ids):
        return [band_offsets[i] for i in ids], "MTD_MSIL2A.xml BOA_ADD_OFFSET"
    if baseline is not None:
        return [sentinel2_offset(baseline)] * 6, f"baseline {baseline} ({baseline_from})"
    before = acquired.date() < S2_BASELINE_04_DATE
    off = 0.0 if before else S2_BOA_OFFSET_FROM_04_00
    note = (f"no MTD_MSIL2A.xml and no _Nxxxx_ baseline in the name; acquired "
            f"{acquired.date().isoformat()}, {'before' if before else 'after'} "
            f"{S2_BASELINE_04_DATE.isoformat()}: offset {off:g} DN assumed (ESA's reprocessed "
            "archive has baseline 05.xx, offset -1000, for 2015-2021 scenes too: pass "
            "--s2-offset to set it)")
    warnings.warn(f"{source}: {note}", stacklevel=4)
    return [off] * 6, "acquisition date (assumed)"


def _read_s2(path: Path, grid: Grid | None, safe: bool,
             options: ReadOptions | None = None) -> Scene:
    options = options or ReadOptions()
    tree = _s2_tree(path)
    mtd = _first_named(tree, "MTD_MSIL2A.xml")
    tl = _first_named(tree, "MTD_TL.xml", under="GRANULE") or _first_named(tree, "MTD_TL.xml")
    if safe and mtd is None:
        raise InputError(tree.display("MTD_MSIL2A.xml"), "Sentinel-2 product metadata not found")
    product = tree.product_name
    baseline, quant, acquired = None, S2_QUANTIFICATION, None
    baseline_from = ""
    band_offsets: dict[int, float] = {}
    if mtd is not None:
        root = _parse_xml(tree.display(mtd), tree.read_text(mtd))
        baseline = _xml_text(root, "PROCESSING_BASELINE")
        baseline_from = "MTD_MSIL2A.xml"
        q = _xml_text(root, "BOA_QUANTIFICATION_VALUE")
        quant = float(q) if q else quant
        lst = _xml_find(root, "BOA_ADD_OFFSET_VALUES_LIST")
        if lst is not None:
            for el in lst:
                if _local(el.tag) == "BOA_ADD_OFFSET" and el.text:
                    band_offsets[int(el.get("band_id", "-1"))] = float(el.text)
        t = _xml_text(root, "PRODUCT_START_TIME")
        if t:
            try:
                acquired = _parse_time(t)
            except ValueError:
                raise InputError(tree.display(mtd), f"bad PRODUCT_START_TIME {t!r}") from None
    if baseline is None:
        baseline = _baseline_from_name(product, tree.path.name)
        baseline_from = "product name" if baseline else ""
    sun_az = sun_el = None
    if tl is not None:
        root = _parse_xml(tree.display(tl), tree.read_text(tl))
        mean = _xml_find(root, "Mean_Sun_Angle")
        if mean is not None:
            zen, az = _xml_text(mean, "ZENITH_ANGLE"), _xml_text(mean, "AZIMUTH_ANGLE")
            if zen and az:
                sun_az, sun_el = float(az), 90.0 - float(zen)
        if acquired is None and (t := _xml_text(root, "SENSING_TIME")):
            acquired = _parse_time(t)
    spec = sentinel2(quantification=quant)
    files = _s2_files(tree, spec, safe)
    time_note = None
    if acquired is None:
        names = (product, files[0][0].rsplit("/", 1)[-1])
        acquired = next((t for t in map(_time_from_name, names) if t is not None), None)
        if acquired is not None and not any(map(_name_has_time, names)):
            acquired, time_note = _assume_time(acquired.date(), _grid_of_files(files),
                                               NODE_LOCAL_TIME_H["sentinel2"],
                                               tree.path)
    if acquired is None:
        raise InputError(
            tree.path,
            "no acquisition time (no MTD_MSIL2A.xml/MTD_TL.xml and no "
            "YYYYMMDDTHHMMSS in the names)",
        )
    offsets_dn, offset_from = _s2_offsets(options, band_offsets, baseline, baseline_from,
                                          acquired, tree.path)
    _warn_stack_options(options, tree.path, "Sentinel-2")
    refl, valid, grid = _assemble(files, spec, grid, [o * spec.scale for o in offsets_dn])
    band_files = _s2_band_files(tree)
    masks, mask_note, saturation = [], MASK_OFF, "none"
    if options.product_mask:
        if "SCL" in band_files:
            masks = [(tree.raster(band_files["SCL"]), tree.display(band_files["SCL"]),
                      scl_flags)]
            mask_note, saturation = MASK_TEXT["SCL"], SATURATION_TEXT["SCL"]
        else:
            mask_note = no_mask_file("SCL")
    refl, valid, qa = _finish(refl, valid, masks, grid, options, files[0][0])
    if sun_az is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    scene_id = product[:-5] if product.upper().endswith(".SAFE") else product
    meta = {
        "processing_baseline": baseline,
        "boa_offsets": band_offsets,
        "boa_offset_dn": offsets_dn[0] if len(set(offsets_dn)) == 1 else offsets_dn,
        "boa_offset_from": offset_from,
        "quantification": quant,
        "band_files": [f for f, _ in files],
        "product_mask": mask_note,
        "saturation": saturation,
        "sun_angles": "MTD_TL.xml" if tl is not None and sun_az is not None else "computed",
        "nir_band": "B8A" if _band_pattern("B8A").search(_stem(band_files["B08"])) else "B08",
    }
    return Scene.on_grid(
        grid,
        reflectance=refl,
        valid=valid,
        sensor=spec.name,
        scene_id=scene_id,
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=path,
        metadata=meta,
        time_note=time_note,
        qa=qa,
    )

