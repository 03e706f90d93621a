"""HLS v2.0 (Harmonized Landsat Sentinel-2) L30 and S30 granules: single-band files + Fmask.

File patterns, dates and bands are data (as in torchgeo's datasets): a granule is a folder
of single-band GeoTIFFs named the HLS way, `HLS.L30.T11UNU.2020229T184936.v2.0.B02.tif`
(with `...Fmask.tif`, `...SAA.tif`, `...SZA.tif` beside them), or as in clips made from
them, `<name>_<YYYYDDD>_B02_L30.tif`. Reflectance is int16 DN x 1e-4, nodata -9999; S30
takes B8A (narrow NIR) as NIR, as HLS harmonises it to OLI's band 5.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.base import (
    Scene,
    _assemble,
    _assume_time,
    _finish,
    _parse_time,
    _sun_from_time,
    _warn_stack_options,
)
from glacierfacies.scenes.grid import Grid, _grid_of_files, _open_raster
from glacierfacies.scenes.masks import MASK_OFF, MASK_TEXT, fmask_flags, no_mask_file
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.spec import SensorSpec

__all__ = ["HLS_PRODUCTS", "HLSProduct", "find_granules", "hls", "is_hls"]

HLS_SCALE = 1e-4
HLS_NODATA = -9999


@dataclass(frozen=True)
class HLSProduct:
    """One HLS product: its bands (optical feature -> band token), all its band tokens, and
    the local solar time of its satellites' descending node (for an assumed time of day)."""

    name: str
    optical: dict[str, str]
    all_bands: tuple[str, ...]
    node_local_time_h: float

    @property
    def sensor(self) -> str:
        return f"hls-{self.name.lower()}"


HLS_PRODUCTS: dict[str, HLSProduct] = {
    "L30": HLSProduct(
        "L30",
        dict(zip(OPTICAL_BANDS, ("B02", "B03", "B04", "B05", "B06", "B07"), strict=True)),
        ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B09", "B10", "B11"),
        10.2,  # Landsat 8/9: about 10:12 at the descending node
    ),
    "S30": HLSProduct(
        "S30",
        dict(zip(OPTICAL_BANDS, ("B02", "B03", "B04", "B8A", "B11", "B12"), strict=True)),
        ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"),
        10.5,  # Sentinel-2: 10:30 at the descending node
    ),
}

#: Layers of a granule that are not reflectance bands.
AUX_LAYERS = ("Fmask", "SAA", "SZA", "VAA", "VZA")

#: NASA's names: HLS.<product>.<tile>.<YYYYDDD>T<HHMMSS>.v<version>.<band>.tif
HLS_NAME = re.compile(
    r"^HLS\.(?P<product>[A-Z]\d{2})\.(?P<tile>T\w{5})\.(?P<date>\d{7})T(?P<time>\d{6})"
    r"\.v(?P<version>\d+\.\d+)\.(?P<band>\w+)\.tiff?$", re.I)
#: Clips (as in ../shared/data/athabasca): <name>_<YYYYDDD>_<band>_<product>.tif
CLIP_NAME = re.compile(
    r"^(?P<name>.+?)_(?P<date>\d{7})_(?P<band>B\d[\dA]|Fmask|SAA|SZA|VAA|VZA)_"
    r"(?P<product>[A-Z]\d{2})\.tiff?$", re.I)


@dataclass(frozen=True)
class Granule:
    """The files of one HLS granule, found by name."""

    scene_id: str
    product: str  # "L30", "S30" or what the names say
    date: dt.date
    time: dt.time | None  # from the name (NASA names), None for clips
    version: str | None
    tile: str | None
    files: dict[str, Path]  # band token / aux layer -> file


def _match(name: str) -> tuple[tuple, dict] | None:
    """(granule key, fields) of an HLS-named file, else None."""
    m = HLS_NAME.match(name)
    if m:
        d = m.groupdict()
        key = ("hls", d["product"].upper(), d["tile"].upper(), d["date"], d["time"],
               d["version"])
        return key, d
    m = CLIP_NAME.match(name)
    if m:
        d = m.groupdict()
        return ("clip", d["name"], d["date"], d["product"].upper()), d
    return None


def _band_token(band: str) -> str:
    up = band.upper()
    for aux in AUX_LAYERS:
        if up == aux.upper():
            return aux
    return up


def find_granules(folder: Path) -> list[Granule]:
    """The HLS granules whose files lie in `folder` (not recursive), sorted by id."""
    groups: dict[tuple, dict] = {}
    for q in sorted(folder.iterdir()):
        if not q.is_file():
            continue
        hit = _match(q.name)
        if hit is None:
            continue
        key, d = hit
        g = groups.setdefault(key, {"d": d, "files": {}})
        g["files"][_band_token(d["band"])] = q
    out = []
    for key, g in groups.items():
        d = g["d"]
        date = dt.datetime.strptime(d["date"], "%Y%j").date()
        if key[0] == "hls":
            sid = f"HLS.{key[1]}.{key[2]}.{d['date']}T{d['time']}.v{d['version']}"
            time = dt.datetime.strptime(d["time"], "%H%M%S").time()
            out.append(Granule(sid, key[1], date, time, d["version"], key[2], g["files"]))
        else:
            sid = f"{d['name']}_{d['date']}_{key[3]}"
            out.append(Granule(sid, key[3], date, None, None, None, g["files"]))
    return sorted(out, key=lambda g: g.scene_id)


def is_hls(p: Path) -> bool:
    """An HLS band file, or a folder holding HLS-named band files."""
    if p.is_file():
        return _match(p.name) is not None
    if p.is_dir():
        return any(q.is_file() and _match(q.name) is not None for q in p.iterdir())
    return False


def hls(product: str) -> SensorSpec:
    """The SensorSpec of HLS v2.0 L30 or S30 (int16 x 1e-4, nodata -9999, no saturation DN)."""
    prod = HLS_PRODUCTS[product]
    return SensorSpec(
        name=prod.sensor,
        bands=dict(prod.optical),
        resolution_m=dict.fromkeys(prod.optical.values(), 30.0),
        scale=HLS_SCALE,
        offset=0.0,
        nodata_dn=HLS_NODATA,
        saturated_dn=None,
    )


def _granule(path: Path) -> Granule:
    """The granule `path` names: a folder holding one granule, or any file of a granule."""
    folder = path.parent if path.is_file() else path
    granules = find_granules(folder)
    if path.is_file():
        key = _match(path.name)
        granules = [g for g in granules if path in g.files.values()] if key else []
    if not granules:
        raise InputError(path, "no HLS band files (HLS.L30.<tile>.<YYYYDDD>T<HHMMSS>.v2.0."
                               "B02.tif or <name>_<YYYYDDD>_B02_L30.tif)")
    if len(granules) > 1:
        ids = ", ".join(g.scene_id for g in granules[:3])
        raise InputError(path, f"holds {len(granules)} HLS granules ({ids}"
                               f"{' ...' if len(granules) > 3 else ''}); pass one of a "
                               "granule's band files, or give each granule its own folder")
    return granules[0]


def _check_bands(g: Granule, where: Path) -> HLSProduct:
    """The granule's product, or a one-line InputError for an unknown HLS band set."""
    have = sorted(b for b in g.files if b not in AUX_LAYERS)
    if g.version is not None and g.version != "2.0":
        raise InputError(where, f"HLS v{g.version} granule {g.scene_id}: only v2.0 is read")
    prod = HLS_PRODUCTS.get(g.product)
    if prod is None:
        raise InputError(where, f"unknown HLS band set: product {g.product!r} of granule "
                                f"{g.scene_id} is not L30 or S30 (bands {', '.join(have)})")
    foreign = [b for b in have if b not in prod.all_bands]
    missing = [b for b in prod.optical.values() if b not in g.files]
    if foreign or missing:
        detail = []
        if missing:
            detail.append(f"lacks {', '.join(missing)}")
        if foreign:
            detail.append(f"has {', '.join(foreign)}, not {prod.name} band(s)")
        raise InputError(where, f"unknown HLS band set: {prod.name} granule {g.scene_id} "
                                f"{' and '.join(detail)} (has {', '.join(have)}; {prod.name} "
                                f"needs {', '.join(prod.optical.values())})")
    return prod


def _tag_float(tags: dict, key: str) -> float | None:
    v = tags.get(key)
    try:
        return float(str(v).split(";")[0]) if v not in (None, "") else None
    except ValueError:
        return None


def _angle_mean(path: Path, grid: Grid) -> float | None:
    """Mean of an HLS angle layer (SAA/SZA, int16 degrees x 100) over its valid pixels."""
    with _open_raster(path) as src:
        raw = src.read(1).astype(np.float64)
        nodata = src.nodata
        scale = _tag_float(src.tags(), "scale_factor") or 0.01
    ok = np.isfinite(raw) if nodata is None else (raw != nodata) & np.isfinite(raw)
    return float(raw[ok].mean() * scale) if ok.any() else None


def _read_hls(path: Path, grid: Grid | None, options: ReadOptions | None = None) -> Scene:
    options = options or ReadOptions()
    g = _granule(path)
    where = path if path.is_dir() else path.parent
    prod = _check_bands(g, where)
    spec = hls(prod.name)
    files = [(g.files[spec.bands[b]], 1) for b in OPTICAL_BANDS]
    with _open_raster(files[0][0]) as src:
        tags = src.tags()
    scale = _tag_float(tags, "scale_factor") or spec.scale
    offset = _tag_float(tags, "add_offset") or 0.0
    if scale != spec.scale or offset != spec.offset:
        spec = SensorSpec(spec.name, spec.bands, spec.resolution_m, scale, offset,
                          spec.nodata_dn, spec.saturated_dn)
    time_note = None
    sensing = tags.get("SENSING_TIME")
    acquired = None
    if sensing:
        try:
            acquired = _parse_time(sensing.split(";")[0].strip())
        except ValueError:
            acquired = None
    if acquired is None and g.time is not None:
        acquired = dt.datetime.combine(g.date, g.time, tzinfo=dt.UTC)
    product_grid = _grid_of_files(files)
    if acquired is None:
        acquired, time_note = _assume_time(g.date, product_grid, prod.node_local_time_h, where)
    _warn_stack_options(options, where, f"HLS {prod.name}")
    refl, valid, grid = _assemble(files, spec, grid, [None] * 6)
    masks, mask_note = [], MASK_OFF
    if options.product_mask:
        if "Fmask" in g.files:
            masks = [(str(g.files["Fmask"]), g.files["Fmask"], lambda raw: (fmask_flags(raw),
                                                                            None))]
            mask_note = MASK_TEXT["Fmask"]
        else:
            mask_note = no_mask_file("Fmask")
    refl, valid, qa = _finish(refl, valid, masks, grid, options, str(files[0][0]))
    az = _tag_float(tags, "MEAN_SUN_AZIMUTH_ANGLE")
    zen = _tag_float(tags, "MEAN_SUN_ZENITH_ANGLE")
    sun_from = "band tags (MEAN_SUN_*_ANGLE)"
    if (az is None or zen is None) and "SAA" in g.files and "SZA" in g.files:
        az, zen = _angle_mean(g.files["SAA"], grid), _angle_mean(g.files["SZA"], grid)
        sun_from = "SAA/SZA layers"
    if az is None or zen is None:
        # the product's centre, not the grid's: a block of a scene gets the scene's sun
        sun_az, sun_el = _sun_from_time(acquired, product_grid)
        sun_from = "computed from an assumed time" if time_note else "computed"
    else:
        sun_az, sun_el = az, 90.0 - zen
    meta = {
        "product": f"HLS {prod.name} v{g.version or '2.0'}",
        "tile": g.tile,
        "band_files": [str(f) for f, _ in files],
        "scale": spec.scale,
        "offset": spec.offset,
        "product_mask": mask_note,
        "saturation": "none (HLS has no saturation flag)",
        "sun_angles": sun_from,
    }
    return Scene.on_grid(
        grid,
        reflectance=refl,
        valid=valid,
        sensor=prod.sensor,
        scene_id=g.scene_id,
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=path,
        metadata=meta,
        time_note=time_note,
        qa=qa,
    )


def _hls_files(path: Path) -> list[tuple[Path, int]]:
    """The six optical band files of the granule `path` names (for `scene_grid`)."""
    g = _granule(path)
    prod = _check_bands(g, path if path.is_dir() else path.parent)
    return [(g.files[prod.optical[b]], 1) for b in OPTICAL_BANDS]
