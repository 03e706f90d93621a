"""STAC in: a scene described by a STAC Item (JSON file), or the items of an ItemCollection or
static catalog on disk, read with pystac.

Bands are found by their `eo:bands` common names (blue, green, red, nir/nir08, swir16,
swir22; STAC 1.1 `bands` + `eo:common_name` too), else by the product's own asset keys
(`SR_B2`, `B02`, `blue`, ...). Scale, offset and nodata come from the `raster` extension
(`raster:bands` / `raster:scale`), else from the product's coding when the item says which
product it is (Landsat C2 L2, Sentinel-2 L2A, HLS). Masks come from the product's QA asset
(QA_PIXEL + QA_RADSAT, SCL, Fmask). Offline rule: an asset whose href is a URL is read from
the file of the same name beside the item; when there is none, one line names the asset.

A scene inside an ItemCollection or catalog is addressed as ``FILE.json#ITEM_ID`` (what
`expand_stac` returns); an Item file is addressed by its path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS

__all__ = ["StacScene", "expand_stac", "is_stac", "load_item", "read_stac", "stac_files",
           "stac_scene_id"]

#: Common names of each optical feature, in order of preference (S2: nir = B08, as the
#: Sentinel-2 reader; Landsat has nir08 only).
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "blue": ("blue",), "green": ("green",), "red": ("red",), "nir": ("nir", "nir08"),
    "swir1": ("swir16",), "swir2": ("swir22",),
}
#: Product asset keys of each feature when an item has no eo:bands (Landsat OLI, TM/ETM+,
#: Sentinel-2, HLS L30/S30), matched case-insensitively without the extension.
_ASSET_KEYS: dict[str, tuple[str, ...]] = {
    "blue": ("blue", "sr_b2", "b02"), "green": ("green", "sr_b3", "b03"),
    "red": ("red", "sr_b4", "b04"), "nir": ("nir", "nir08", "sr_b5", "b08", "b8a", "b05"),
    "swir1": ("swir16", "sr_b6", "b11", "b06"), "swir2": ("swir22", "sr_b7", "b12", "b07"),
}
_TM_ASSET_KEYS = {"blue": ("sr_b1",), "green": ("sr_b2",), "red": ("sr_b3",),
                  "nir": ("sr_b4",), "swir1": ("sr_b5",), "swir2": ("sr_b7",)}
#: The product's QA assets, by kind (key matched case-insensitively, extension dropped).
_QA_KEYS = {"qa_pixel": ("qa_pixel",), "qa_radsat": ("qa_radsat",),
            "scl": ("scl", "scl_20m", "scl-20m"), "fmask": ("fmask",)}
_STAC_TYPES = ("Feature", "FeatureCollection", "Catalog", "Collection")


def _is_url(href: str) -> bool:
    return urlparse(href).scheme in ("http", "https", "s3", "gs", "az", "ftp")


def split_ref(ref: str | os.PathLike) -> tuple[Path, str | None]:
    """(file, item id or None) of ``FILE.json`` or ``FILE.json#ITEM_ID``."""
    text = os.fspath(ref)
    if "#" in text and text.rsplit("#", 1)[0].lower().endswith(".json"):
        f, item = text.rsplit("#", 1)
        return Path(f), item
    return Path(text), None


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, UnicodeError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def is_stac(ref: str | os.PathLike) -> bool:
    """True for a STAC Item / ItemCollection / Catalog / Collection JSON (or FILE#ID)."""
    f, _ = split_ref(ref)
    if f.suffix.lower() != ".json" or not f.is_file():
        return False
    d = _read_json(f)
    return bool(d) and d.get("type") in _STAC_TYPES and (
        "stac_version" in d or d.get("type") == "FeatureCollection")


def _item_from_dict(d: dict, self_href: Path):
    import pystac

    try:
        item = pystac.Item.from_dict(d, migrate=True, preserve_dict=False)
    except Exception as exc:  # pystac raises many kinds on malformed items
        raise InputError(self_href, f"not a readable STAC item "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
                         ) from None
    item.set_self_href(str(self_href.resolve()))
    return item


def _collection_items(path: Path, d: dict) -> list[tuple[Any, Path]]:
    """(item, the file its relative hrefs resolve against) of an ItemCollection / catalog."""
    import pystac

    if d.get("type") == "FeatureCollection":
        return [(_item_from_dict(f, path), path) for f in d.get("features", [])]
    try:
        cat = pystac.read_file(str(path.resolve()))
    except Exception as exc:
        raise InputError(path, f"cannot read STAC catalog ({str(exc).splitlines()[0]})") from None
    out = []
    try:
        for item in cat.get_items(recursive=True):
            out.append((item, Path(urlparse(item.get_self_href()).path)))
    except Exception as exc:
        raise InputError(path, f"cannot read a catalog item ({str(exc).splitlines()[0]})"
                         ) from None
    return out


def load_item(ref: str | os.PathLike):
    """(pystac Item, the item's file) of an Item JSON, ``FILE.json#ID``, or an
    ItemCollection / catalog holding exactly one item."""
    f, want = split_ref(ref)
    d = _read_json(f)
    if d is None:
        raise InputError(f, "not a readable JSON file")
    if d.get("type") == "Feature":
        item = _item_from_dict(d, f)
        if want is not None and item.id != want:
            raise InputError(ref, f"the item in {f.name} is {item.id!r}, not {want!r}")
        return item, f
    items = _collection_items(f, d)
    if want is None:
        if len(items) != 1:
            raise InputError(f, f"holds {len(items)} STAC items; name one as {f.name}#ITEM_ID "
                                "or give it to map-many")
        return items[0]
    for item, where in items:
        if item.id == want:
            return item, where
    raise InputError(ref, f"no STAC item {want!r} in {f.name}")


def expand_stac(ref: str | os.PathLike) -> list[str]:
    """The scenes a STAC file holds: itself for an Item, one ``FILE#ID`` (or the item's own
    file, for a catalog) per item of an ItemCollection or catalog."""
    f, want = split_ref(ref)
    d = _read_json(f) or {}
    if want is not None or d.get("type") == "Feature":
        return [os.fspath(ref)]
    items = _collection_items(f, d)
    if not items:
        raise InputError(f, "STAC collection holds no item")
    if d.get("type") == "FeatureCollection":
        return [f"{f}#{item.id}" for item, _ in items]
    return [str(where) for _, where in items]


# ---------------------------------------------------------------- assets -> files

def _asset_path(item: Any, item_file: Path, key: str) -> str:
    """The local file of asset `key`: its href (relative to the item), or for a URL the file
    of the same name beside the item; a one-line InputError naming the asset otherwise."""
    asset = item.assets[key]
    href = asset.href
    if _is_url(href):
        name = Path(urlparse(href).path).name
        local = item_file.parent / name
        if local.is_file():
            return str(local)
        raise InputError(item_file, f"asset {key!r} is remote ({href}) and no file {name} "
                                    "lies beside the item (offline: download it there)")
    p = Path(urlparse(href).path) if href.startswith("file:") else Path(href)
    if not p.is_absolute():
        p = item_file.parent / p
    if not p.is_file():
        raise InputError(item_file, f"asset {key!r}: file {p} not found")
    return str(p)


def _norm_key(key: str) -> str:
    k = key.lower()
    for ext in (".tif", ".tiff", ".jp2"):
        if k.endswith(ext):
            k = k[: -len(ext)]
    return k


def _asset_bands(asset: Any) -> list[dict]:
    """The band dicts of an asset (STAC 1.0 eo:bands + raster:bands merged, or 1.1 bands)."""
    d = asset.extra_fields
    if isinstance(d.get("bands"), list):
        return [dict(b) for b in d["bands"]]
    eo = d.get("eo:bands") or []
    raster = d.get("raster:bands") or []
    n = max(len(eo), len(raster))
    out = []
    for i in range(n):
        b: dict = {}
        if i < len(eo) and isinstance(eo[i], dict):
            b.update({("eo:common_name" if k == "common_name" else k): v
                      for k, v in eo[i].items()})
        if i < len(raster) and isinstance(raster[i], dict):
            b.update({f"raster:{k}" if not k.startswith("raster:") else k: v
                      for k, v in raster[i].items()})
        out.append(b)
    return out


def _is_data_asset(asset: Any) -> bool:
    roles = asset.roles or []
    media = (asset.media_type or "").lower()
    return ("data" in roles or "image" in media or "tiff" in media or "jp2" in media
            or not roles) and "thumbnail" not in roles and "overview" not in roles


@dataclass(frozen=True)
class StacScene:
    """What the STAC item says about one scene: band files, coding, QA files, sun, time."""

    item_id: str
    item_file: Path
    files: list[tuple[str, int]]  # (raster path, 1-based band) per OPTICAL_BANDS
    scales: list[float | None]
    offsets: list[float | None]
    nodata: list[float | None]
    qa: dict[str, str]  # kind (qa_pixel, qa_radsat, scl, fmask) -> raster path
    platform: str
    product: str  # landsat / sentinel2 / hls / "" (unknown)
    mission: int | None
    datetime_text: str
    sun_azimuth_deg: float | None
    sun_elevation_deg: float | None
    found_by: str  # "eo:bands common names" or "asset keys"
    properties: dict
    mtl: str | None = None  # a Landsat item's MTL.txt, when it lies on disk


def _product_of(item: Any) -> tuple[str, int | None]:
    from glacierfacies.scenes.landsat import landsat_mission

    text = " ".join(str(x) for x in (item.id, item.properties.get("platform", ""),
                                     item.collection_id or "",
                                     item.properties.get("constellation", "")))
    up = text.upper()
    if "HLS" in up:
        return "hls", None
    if "SENTINEL" in up or re.search(r"\bS2[ABCD]_", up):
        return "sentinel2", None
    m = landsat_mission(up)
    if m is not None or "LANDSAT" in up:
        return "landsat", m
    return "", None


def stac_files(ref: str | os.PathLike) -> StacScene:
    """Parse the item of `ref` into band files, coding and QA files (no pixels read)."""
    item, item_file = load_item(ref)
    product, mission = _product_of(item)
    by_common: dict[str, tuple[str, int, dict]] = {}
    for key, asset in item.assets.items():
        if not _is_data_asset(asset):
            continue
        for i, b in enumerate(_asset_bands(asset)):
            cn = b.get("eo:common_name")
            if cn and cn not in by_common:
                by_common[cn] = (key, i + 1, b)
    chosen: list[tuple[str, int, dict]] = []
    found_by = "eo:bands common names"
    for feat in OPTICAL_BANDS:
        hit = next((by_common[c] for c in COMMON_NAMES[feat] if c in by_common), None)
        chosen.append(hit)  # type: ignore[arg-type]
    if any(c is None for c in chosen):
        keys = {_norm_key(k): k for k in item.assets}
        table = (_TM_ASSET_KEYS if product == "landsat" and mission in (4, 5, 7)
                 else _ASSET_KEYS)
        by_key = []
        for feat in OPTICAL_BANDS:
            k = next((keys[n] for n in table[feat] if n in keys), None)
            by_key.append(None if k is None else
                          (k, 1, (_asset_bands(item.assets[k]) or [{}])[0]))
        if all(c is not None for c in by_key):
            chosen, found_by = by_key, "asset keys"
    missing = [f for f, c in zip(OPTICAL_BANDS, chosen, strict=True) if c is None]
    if missing:
        want = ", ".join(f"{f} ({'/'.join(COMMON_NAMES[f])})" for f in missing)
        raise InputError(item_file, f"STAC item {item.id!r} has no asset for {want}: give "
                                    "assets eo:bands common names")
    files, scales, offsets, nodata = [], [], [], []
    item_raster = item.properties
    for key, band, b in chosen:
        files.append((_asset_path(item, item_file, key), band))
        a = item.assets[key].extra_fields
        scales.append(b.get("raster:scale", a.get("raster:scale", item_raster.get("raster:scale"))))
        offsets.append(b.get("raster:offset",
                             a.get("raster:offset", item_raster.get("raster:offset"))))
        nodata.append(b.get("raster:nodata", b.get("nodata", a.get("raster:nodata"))))
    qa: dict[str, str] = {}
    norm = {_norm_key(k): k for k in item.assets}
    for kind, names in _QA_KEYS.items():
        k = next((norm[n] for n in names if n in norm), None)
        if k is not None:
            qa[kind] = _asset_path(item, item_file, k)
    mtl = None
    for k in item.assets:
        if _norm_key(k).endswith("mtl.txt"):
            try:
                mtl = _asset_path(item, item_file, k)
            except InputError:
                mtl = None
    props = item.properties
    dt_text = props.get("datetime") or props.get("start_datetime") or ""
    az = props.get("view:sun_azimuth", props.get("eo:sun_azimuth"))
    el = props.get("view:sun_elevation", props.get("eo:sun_elevation"))
    return StacScene(
        item_id=item.id, item_file=item_file, files=files, scales=scales, offsets=offsets,
        nodata=nodata, qa=qa, platform=str(props.get("platform", "")), product=product,
        mission=mission, datetime_text=str(dt_text),
        sun_azimuth_deg=None if az is None else float(az),
        sun_elevation_deg=None if el is None else float(el), found_by=found_by,
        properties=dict(props), mtl=mtl,
    )


def _raw_datetime(item_file: Path, item_id: str) -> str | None:
    """The item's datetime as written (pystac turns a bare date into midnight)."""
    d = _read_json(item_file) or {}
    feats = [d] if d.get("type") == "Feature" else d.get("features", [])
    for f in feats:
        if isinstance(f, dict) and f.get("id") == item_id:
            return (f.get("properties") or {}).get("datetime")
    return None


def _coding(st: StacScene, options: Any) -> tuple[Any, list[float], str]:
    """(SensorSpec, per-band offsets, where the coding came from)."""
    from glacierfacies.scenes.spec import (
        LANDSAT_C2_OFFSET,
        LANDSAT_C2_SCALE,
        S2_QUANTIFICATION,
        SensorSpec,
    )

    names = dict(zip(OPTICAL_BANDS, (f"{Path(f).name}:{b}" for f, b in st.files), strict=True))
    sensor = (f"landsat{st.mission}" if st.product == "landsat" and st.mission
              else st.product or "stac")
    if all(s is not None for s in st.scales):
        if len(set(st.scales)) != 1:
            raise InputError(st.item_file, f"bands of item {st.item_id!r} have different "
                                           f"raster:scale {st.scales}")
        scale, offs, source = float(st.scales[0]), [float(o or 0.0) for o in st.offsets], \
            "STAC raster extension"
    elif st.product == "landsat":
        scale, offs, source = LANDSAT_C2_SCALE, [LANDSAT_C2_OFFSET] * 6, \
            "Landsat Collection-2 L2 coding (no raster:bands in the item)"
    elif st.product == "hls":
        from glacierfacies.scenes.hls import HLS_SCALE

        scale, offs, source = HLS_SCALE, [0.0] * 6, "HLS coding (no raster:bands in the item)"
    elif st.product == "sentinel2":
        from glacierfacies.scenes.sentinel2 import sentinel2_offset

        base = st.properties.get("s2:processing_baseline")
        try:
            off = sentinel2_offset(base) if options.s2_offset_dn is None else options.s2_offset_dn
        except ValueError:
            raise InputError(st.item_file, "no raster:bands scale/offset and no "
                                           "s2:processing_baseline; pass --s2-offset") from None
        scale, offs = 1.0 / S2_QUANTIFICATION, [off / S2_QUANTIFICATION] * 6
        source = f"Sentinel-2 L2A coding, offset {off:g} DN (no raster:bands in the item)"
    elif options.scale is not None:
        scale, offs, source = float(options.scale), [float(options.offset or 0.0)] * 6, \
            "--scale/--offset"
    else:
        raise InputError(st.item_file, f"item {st.item_id!r} gives no raster:bands scale/offset "
                                       "and names no known product; pass --scale/--offset")
    nodata = next((n for n in st.nodata if n is not None), None)
    if st.product in ("landsat", "sentinel2") and nodata in (None, 0):
        from glacierfacies.scenes.spec import NODATA_DN, SATURATED_DN

        nd, sat = NODATA_DN, SATURATED_DN
    elif st.product == "hls":
        from glacierfacies.scenes.hls import HLS_NODATA

        nd, sat = HLS_NODATA if nodata is None else nodata, None
    else:
        nd, sat = nodata, None
    spec = SensorSpec(name=sensor, bands=names, scale=scale, offset=0.0, nodata_dn=nd,
                      saturated_dn=sat)
    return spec, offs, source


def _mtl_time(st: StacScene) -> Any:
    """DATE_ACQUIRED + SCENE_CENTER_TIME of a Landsat item's local MTL asset (USGS items give
    the date only), else None."""
    if st.product != "landsat" or not st.mtl:
        return None
    from glacierfacies.scenes.base import _parse_time
    from glacierfacies.scenes.landsat import _mtl_get, _parse_mtl

    try:
        groups = _parse_mtl(Path(st.mtl))
        date, ctime = _mtl_get(groups, "DATE_ACQUIRED"), _mtl_get(groups, "SCENE_CENTER_TIME")
        return _parse_time(f"{date}T{ctime}") if date and ctime else None
    except (InputError, ValueError):
        return None


def read_stac(ref: str | os.PathLike, grid: Any, options: Any) -> Any:
    """Read the scene of a STAC item (see the module docstring) onto `grid` (or its own
    10 m grid): the same Scene as the product reader gives for the same files."""
    from glacierfacies.scenes.base import (
        NODE_LOCAL_TIME_H,
        Scene,
        _assemble,
        _assume_time,
        _finish,
        _parse_time,
        _sun_from_time,
    )
    from glacierfacies.scenes.grid import _grid_of_files
    from glacierfacies.scenes.masks import (
        MASK_OFF,
        MASK_TEXT,
        SATURATION_TEXT,
        fmask_flags,
        no_mask_file,
        qa_pixel_flags,
        qa_radsat_flags,
        scl_flags,
    )

    st = stac_files(ref)
    spec, offsets, coding = _coding(st, options)
    raw_dt = _raw_datetime(st.item_file, st.item_id) or st.datetime_text
    time_note = None
    try:
        text = str(raw_dt).strip()
        acquired = _parse_time(text.replace("-", "") if re.fullmatch(
            r"\d{4}-\d{2}-\d{2}", text) else text)
    except ValueError:
        raise InputError(st.item_file, f"item {st.item_id!r}: bad datetime {raw_dt!r}") from None
    date_only = not re.search(r"\d[T ]\d{2}:\d{2}", str(raw_dt))
    if date_only and (centre := _mtl_time(st)) is not None:
        acquired, date_only = centre, False
    if date_only and (st.sun_azimuth_deg is None or st.sun_elevation_deg is None):
        node = NODE_LOCAL_TIME_H.get(st.product, 10.5)
        acquired, time_note = _assume_time(acquired.date(), _grid_of_files(st.files), node,
                                           st.item_file)
    elif date_only:
        time_note = "the item gives the date only; its sun angles are used"
    refl, valid, grid = _assemble(st.files, spec, grid, offsets)
    masks, mask_note, saturation = [], MASK_OFF, "none"
    if options.product_mask:
        if "qa_pixel" in st.qa:
            masks.append((st.qa["qa_pixel"], st.qa["qa_pixel"],
                          lambda raw: (qa_pixel_flags(raw), None)))
            mask_note = MASK_TEXT["QA_PIXEL"]
        elif "scl" in st.qa:
            masks.append((st.qa["scl"], st.qa["scl"], scl_flags))
            mask_note, saturation = MASK_TEXT["SCL"], SATURATION_TEXT["SCL"]
        elif "fmask" in st.qa:
            masks.append((st.qa["fmask"], st.qa["fmask"], lambda raw: (fmask_flags(raw), None)))
            mask_note = MASK_TEXT["Fmask"]
        else:
            mask_note = no_mask_file("QA asset")
        if "qa_radsat" in st.qa and st.mission:
            mission = st.mission
            masks.append((st.qa["qa_radsat"], st.qa["qa_radsat"],
                          lambda raw: (None, qa_radsat_flags(raw, mission))))
            saturation = SATURATION_TEXT["QA_RADSAT"]
    refl, valid, qa = _finish(refl, valid, masks, grid, options, st.files[0][0])
    if st.sun_azimuth_deg is None or st.sun_elevation_deg is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
        sun_from = "computed"
    else:
        sun_az, sun_el, sun_from = st.sun_azimuth_deg, st.sun_elevation_deg, "STAC item"
    return Scene.on_grid(
        grid, reflectance=refl, valid=valid, sensor=spec.name, scene_id=st.item_id,
        acquired=acquired, sun_azimuth_deg=sun_az, sun_elevation_deg=sun_el,
        source=st.item_file, time_note=time_note, qa=qa,
        metadata={"stac_item": str(st.item_file), "bands_by": st.found_by,
                  "band_files": [f for f, _ in st.files], "coding": coding,
                  "sun_angles": sun_from, "product_mask": mask_note, "saturation": saturation},
    )


def stac_scene_id(ref: str | os.PathLike) -> str:
    """The scene_id `read_stac` gives (the item id), without reading pixels."""
    return load_item(ref)[0].id
