"""Sentinel-2 L2A products (.SAFE folders or band folders): band files, baseline offset, metadata."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.base import Scene, _assemble, _parse_time, _sun_from_time, _time_from_name
from glacierfacies.scenes.grid import _RASTER_EXT, Grid, _first_line
from glacierfacies.scenes.spec import S2_BOA_OFFSET_FROM_04_00, S2_QUANTIFICATION, SensorSpec


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


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
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


def _is_safe(p: Path) -> bool:
    return p.is_dir() and (p.suffix.upper() == ".SAFE" or (p / "MTD_MSIL2A.xml").exists())


def _band_pattern(band: str) -> re.Pattern:
    return re.compile(rf"(^|[_\-.]){band}([_\-.]|$)", re.I)


def _s2_band_files(folder: Path) -> dict[str, Path]:
    """S2 band name -> file in a folder tree (finest resolution first: R10m, R20m, R60m)."""
    files = [
        q
        for q in folder.rglob("*")
        if q.suffix.lower() in _RASTER_EXT
        and q.is_file()
        and not q.name.upper().startswith("MSK_")  # QI_DATA masks (MSK_QUALIT_B02.jp2 ...)
    ]
    img = [q for q in files if "IMG_DATA" in q.parts]
    files = img or files  # in a .SAFE only IMG_DATA holds reflectance

    def res_key(q: Path) -> tuple[int, str]:
        m = re.search(r"_(\d{2})m$", q.stem)
        return (int(m.group(1)) if m else 999, str(q))

    out: dict[str, Path] = {}
    for band in ("B02", "B03", "B04", "B08", "B11", "B12"):
        pat = _band_pattern(band)
        hits = sorted((q for q in files if pat.search(q.stem)), key=res_key)
        if hits:
            out[band] = hits[0]
    return out


def _is_s2_band_folder(p: Path) -> bool:
    return p.is_dir() and any(
        q.suffix.lower() in _RASTER_EXT and _band_pattern("B02").search(q.stem) for q in p.iterdir()
    )


def _s2_files(folder: Path, spec: SensorSpec, safe: bool) -> list[tuple[Path, int]]:
    """(file, band 1) of the six optical bands of an S2 product / band folder."""
    band_files = _s2_band_files(folder)
    missing = [b for b in spec.bands.values() if b not in band_files]
    if missing:
        where = folder / "GRANULE" / "*" / "IMG_DATA" if safe else folder
        raise InputError(where, f"missing band file(s) {', '.join(missing)} (.jp2 or .tif)")
    return [(band_files[spec.bands[b]], 1) for b in OPTICAL_BANDS]


def _read_s2(folder: Path, grid: Grid | None, safe: bool) -> Scene:
    mtd = next(iter(sorted(folder.glob("MTD_MSIL2A.xml"))), None) or next(
        iter(sorted(folder.rglob("MTD_MSIL2A.xml"))), None
    )
    tl = next(iter(sorted(folder.glob("GRANULE/*/MTD_TL.xml"))), None) or next(
        iter(sorted(folder.rglob("MTD_TL.xml"))), None
    )
    if safe and mtd is None:
        raise InputError(folder / "MTD_MSIL2A.xml", "Sentinel-2 product metadata not found")
    baseline, quant, acquired = None, S2_QUANTIFICATION, None
    band_offsets: dict[int, float] = {}
    if mtd is not None:
        root = _parse_xml(mtd)
        baseline = _xml_text(root, "PROCESSING_BASELINE")
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
                raise InputError(mtd, f"bad PRODUCT_START_TIME {t!r}") from None
    if baseline is None:
        m = re.search(r"_N(\d{2})(\d{2})_", folder.name)
        baseline = f"{m.group(1)}.{m.group(2)}" if m else None
    spec = sentinel2(baseline, quantification=quant)
    sun_az = sun_el = None
    if tl is not None:
        root = _parse_xml(tl)
        mean = _xml_find(root, "Mean_Sun_Angle")
        if mean is not None:
            zen, az = _xml_text(mean, "ZENITH_ANGLE"), _xml_text(mean, "AZIMUTH_ANGLE")
            if zen and az:
                sun_az, sun_el = float(az), 90.0 - float(zen)
        if acquired is None and (t := _xml_text(root, "SENSING_TIME")):
            acquired = _parse_time(t)
    names = [spec.bands[b] for b in OPTICAL_BANDS]
    files = _s2_files(folder, spec, safe)
    offsets = [
        band_offsets[_S2_BAND_ID[n]] * spec.scale if _S2_BAND_ID[n] in band_offsets else None
        for n in names
    ]
    if acquired is None:
        acquired = _time_from_name(folder.name) or _time_from_name(files[0][0].name)
    if acquired is None:
        raise InputError(
            folder,
            "no acquisition time (no MTD_MSIL2A.xml/MTD_TL.xml and no "
            "YYYYMMDDTHHMMSS in the names)",
        )
    refl, valid, grid = _assemble(files, spec, grid, offsets)
    if sun_az is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    scene_id = folder.name[:-5] if folder.name.upper().endswith(".SAFE") else folder.name
    return Scene(
        reflectance=refl,
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        sensor=spec.name,
        scene_id=scene_id,
        acquired=acquired,
        sun_azimuth_deg=float(sun_az),
        sun_elevation_deg=float(sun_el),
        source=folder,
        metadata={
            "processing_baseline": baseline,
            "boa_offsets": band_offsets,
            "quantification": quant,
            "band_files": [str(f) for f, _ in files],
        },
    )

