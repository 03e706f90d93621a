"""STAC out: a STAC Item beside every facies map, and a static catalog of many maps.

Each map COG gets ``<map stem>.stac.json`` (pystac): the map grid's footprint (WGS 84) and
bbox, the scene's acquisition datetime, the `proj` extension (code, shape, transform, bbox),
`raster:bands` (data type, nodata, resolution, unit) on every asset, the `classification`
extension's `classification:classes` (value, name, title, description, colour hint of all
eight classes, plus the nodata value) on the class map, and the `processing` extension
(software and version; the models in the lineage). Hrefs are relative, so a folder of maps
moves as a whole. `write_catalog` makes a self-contained static catalog of items (what
`map-many` and the run's maps stage write), so STAC browsers (QGIS, stac-browser) index the
maps. The scene's own STAC item, when the scene was one, is linked as ``derived_from``.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from glacierfacies.classes import CLASSES, NODATA_CLASS

__all__ = ["ITEM_SUFFIX", "classification_classes", "map_item", "map_item_path",
           "write_catalog", "write_map_item"]

ITEM_SUFFIX = ".stac.json"
CATALOG_NAME = "catalog.json"

PROJ_SCHEMA = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def map_item_path(map_path: str | os.PathLike) -> Path:
    """Where the STAC item of a map goes: ``<map stem>.stac.json`` beside it."""
    p = Path(map_path)
    return p.with_name(p.stem + ITEM_SUFFIX)


def classification_classes(with_nodata: bool = True) -> list[dict[str, Any]]:
    """`classification:classes` of the class map: the eight classes (value, name, title,
    description, colour hint RRGGBB) and, with `with_nodata`, the nodata value."""
    out: list[dict[str, Any]] = [
        {"value": c.code, "name": c.name, "title": c.name.capitalize(),
         "description": c.description,
         "color_hint": "".join(f"{v:02X}" for v in c.colour)}
        for c in CLASSES
    ]
    if with_nodata:
        out.append({"value": NODATA_CLASS, "name": "nodata", "title": "Not classified",
                    "description": "off-glacier, masked by the product, or no valid input",
                    "nodata": True})
    return out


def _footprint(grid: Any) -> tuple[dict, list[float]]:
    """(GeoJSON polygon in WGS 84, bbox) of a grid's extent, edges densified."""
    from rasterio.warp import transform_geom

    w, s, e, n = grid.bounds
    k = 8
    ring = ([(w + (e - w) * i / k, n) for i in range(k)]
            + [(e, n - (n - s) * i / k) for i in range(k)]
            + [(e - (e - w) * i / k, s) for i in range(k)]
            + [(w, s + (n - s) * i / k) for i in range(k)])
    ring.append(ring[0])
    geom = transform_geom(grid.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    coords = [(round(x, 7), round(y, 7)) for x, y in geom["coordinates"][0]]
    geom = {"type": "Polygon", "coordinates": [[list(c) for c in coords]]}
    xs, ys = [c[0] for c in coords], [c[1] for c in coords]
    return geom, [min(xs), min(ys), max(xs), max(ys)]


def _proj_fields(grid: Any) -> dict[str, Any]:
    epsg = grid.crs.to_epsg() if grid.crs is not None else None
    t = grid.transform
    out: dict[str, Any] = {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": [int(grid.height), int(grid.width)],
        "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        "proj:bbox": [float(v) for v in grid.bounds],
    }
    if not epsg:
        out["proj:wkt2"] = grid.crs.to_wkt()
    return out


def _parse_acquired(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _band_info(path: Path) -> tuple[Any, list[dict[str, Any]], dict[str, str]]:
    """(grid, raster:bands, dataset tags) of a COG."""
    import rasterio

    from glacierfacies.scenes.grid import Grid

    with rasterio.open(path) as src:
        grid = Grid(src.crs, src.transform, src.height, src.width)
        res = abs(src.transform.a)
        bands = []
        for i in range(src.count):
            b: dict[str, Any] = {"data_type": src.dtypes[i], "spatial_resolution": res}
            nd = src.nodata
            if nd is not None:
                b["nodata"] = "nan" if nd != nd else (int(nd) if float(nd).is_integer() else nd)
            bands.append(b)
        tags = src.tags()
    return grid, bands, tags


def map_item(map_path: str | os.PathLike, *, confidence: str | os.PathLike | None = None,
             probabilities: str | os.PathLike | None = None, qa: str | os.PathLike | None = None,
             source_item: str | os.PathLike | None = None,
             models: Sequence[str] = (), item_path: str | os.PathLike | None = None) -> Any:
    """The pystac Item of a facies map COG (and its companions), hrefs relative to the
    item's folder (`item_path`, default `map_item_path(map_path)`)."""
    import pystac

    from glacierfacies import __version__
    from glacierfacies.classes import CLASS_NAMES

    map_path = Path(map_path)
    item_path = Path(item_path) if item_path else map_item_path(map_path)
    grid, bands, tags = _band_info(map_path)
    geom, bbox = _footprint(grid)
    acquired = _parse_acquired(tags.get("ACQUIRED"))
    model_names = list(models) or [m for m in tags.get("MODELS", "").split(",") if m]
    props: dict[str, Any] = {
        "title": f"Glacier facies of {tags.get('SCENE_ID', map_path.stem)}",
        "description": "Surface facies classes (ice, snow, debris, firn, shadow, refrozen-like, "
                       "water, cloud) on glacier pixels; 255 is not classified.",
        **_proj_fields(grid),
        "gsd": abs(grid.transform.a),
        "processing:software": {"glacierfacies": __version__},
        "processing:version": __version__,
        "processing:level": "L3",
        "processing:lineage": (
            f"classified by glacierfacies {__version__} from scene "
            f"{tags.get('SCENE_ID', '?')} ({tags.get('SENSOR', '?')}) with "
            f"model(s) {', '.join(model_names) or '?'}; smoothing {tags.get('SMOOTHING', '?')}, "
            f"buffer {tags.get('BUFFER_M', '0')} m; product mask "
            f"{tags.get('PRODUCT_MASK', 'n/a')}"),
        "glacierfacies:models": model_names,
        "glacierfacies:scene_id": tags.get("SCENE_ID"),
        "glacierfacies:sensor": tags.get("SENSOR"),
    }
    props = {k: v for k, v in props.items() if v is not None}
    item = pystac.Item(
        id=map_path.stem, geometry=geom, bbox=bbox,
        datetime=acquired, properties=props,
        start_datetime=None, end_datetime=None,
        stac_extensions=[PROJ_SCHEMA, RASTER_SCHEMA, CLASSIFICATION_SCHEMA, PROCESSING_SCHEMA],
    )
    if acquired is None:  # STAC needs a datetime; the map's tags had none readable
        item.datetime = dt.datetime.fromtimestamp(map_path.stat().st_mtime, dt.UTC)

    def rel(p: str | os.PathLike) -> str:
        return _relative(p, item_path.parent)

    item.add_asset("facies", pystac.Asset(
        href=rel(map_path), media_type=COG_TYPE, title="Facies classes", roles=["data"],
        extra_fields={"raster:bands": bands,
                      "classification:classes": classification_classes()}))
    qml = map_path.with_suffix(".qml")
    if qml.is_file():
        item.add_asset("style", pystac.Asset(href=rel(qml), media_type="text/xml",
                                             title="QGIS style (class names and colours)",
                                             roles=["metadata", "style"]))
    if confidence and Path(confidence).is_file():
        _, cb, ct = _band_info(Path(confidence))
        unit = ct.get("UNITS", "percent")
        for b in cb:
            b["unit"] = unit
        item.add_asset("confidence", pystac.Asset(
            href=rel(confidence), media_type=COG_TYPE,
            title=f"Calibrated confidence ({unit})", roles=["data", "quality"],
            extra_fields={"raster:bands": cb}))
    if probabilities and Path(probabilities).is_file():
        _, pb, _ = _band_info(Path(probabilities))
        for b, name in zip(pb, CLASS_NAMES, strict=False):
            b["unit"] = "probability"
            b["name"] = f"p_{name}"
        item.add_asset("probabilities", pystac.Asset(
            href=rel(probabilities), media_type=COG_TYPE,
            title="Calibrated class probabilities, one band per class",
            roles=["data", "uncertainty"], extra_fields={"raster:bands": pb}))
    if qa and Path(qa).is_file():
        _, qb, qt = _band_info(Path(qa))
        item.add_asset("qa", pystac.Asset(
            href=rel(qa), media_type=COG_TYPE, title="Product QA bits",
            description=qt.get("QA_BITS"), roles=["metadata", "quality"],
            extra_fields={"raster:bands": qb}))
    if source_item:
        item.add_link(pystac.Link("derived_from", rel(source_item), media_type="application/json",
                                  title="the scene's STAC item"))
    return item


def write_map_item(map_path: str | os.PathLike, *, overwrite: bool = True, **kwargs: Any
                   ) -> Path:
    """Write `map_item(map_path, ...)` beside the map (atomic); returns its path."""
    from glacierfacies._io import write_text

    dest = map_item_path(map_path)
    item = map_item(map_path, item_path=dest, **kwargs)
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    import json

    write_text(dest, json.dumps(d, indent=2) + "\n", overwrite=overwrite)
    return dest


def write_catalog(folder: str | os.PathLike, items: Iterable[str | os.PathLike] | None = None,
                  *, title: str = "glacierfacies maps",
                  description: str = "Glacier surface facies maps") -> Path:
    """A self-contained static catalog ``FOLDER/catalog.json`` linking every map item (all
    ``*.stac.json`` of the folder, or `items`). The item files are left as they are (no
    root/parent links: an item written by `map` is the same file whether or not a catalog
    lists it, so maps made one by one and by map-many are byte-identical). Returns the
    catalog's path."""
    import json

    from glacierfacies._io import write_text

    folder = Path(folder)
    paths = sorted(Path(p) for p in items) if items is not None else sorted(
        folder.glob(f"*{ITEM_SUFFIX}"))
    links = [{"rel": "root", "href": f"./{CATALOG_NAME}", "type": "application/json",
              "title": title}]
    for p in paths:
        rel = _relative(p, folder)
        d = json.loads(p.read_text())
        links.append({"rel": "item", "href": rel, "type": "application/geo+json",
                      "title": d.get("properties", {}).get("title", p.stem)})
    from glacierfacies import __version__

    cat = {"type": "Catalog", "stac_version": _stac_version(), "id": f"glacierfacies-{folder.name}",
           "title": title, "description": f"{description} (glacierfacies {__version__})",
           "links": links}
    dest = folder / CATALOG_NAME
    write_text(dest, json.dumps(cat, indent=2) + "\n")
    return dest


def _relative(path: str | os.PathLike, folder: Path) -> str:
    """`path` relative to `folder`, as a STAC href (./name, ../x/name)."""
    r = Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
    return r if r.startswith("../") else "./" + r


def _stac_version() -> str:
    import pystac

    return pystac.get_stac_version()
