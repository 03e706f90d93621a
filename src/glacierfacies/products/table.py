"""Products of facies maps: one row per glacier x scene (class areas, AAR, snowline)."""

from __future__ import annotations

import re
import warnings
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window, from_bounds

from glacierfacies._io import atomic_output, check_output, write_json
from glacierfacies.classes import N_CLASSES, NODATA_CLASS
from glacierfacies.errors import InputError
from glacierfacies.outlines import find_id_column, rasterise_outlines, read_outlines
from glacierfacies.products import massbalance as mb
from glacierfacies.products.coverage import SCENE_COLUMNS, outline_coverage, row_flags
from glacierfacies.products.hemisphere import outline_hemispheres
from glacierfacies.products.layers import check_given, find_companion, firn_mapped, member_bands
from glacierfacies.progress import tqdm
from glacierfacies.scenes.grid import Grid

__all__ = ["CARRY_COLUMNS", "PRODUCT_REQUIRED", "compute_products", "read_products",
           "scene_metadata", "write_products"]


CARRY_COLUMNS = ("rgi_id", "glims_id", "wgms_id", "name", "region")


#: What each row says of the product's own masks: the mask the map was made with (its
#: PRODUCT_MASK tag), and the glacier fractions its QA band flags as masked (cloud, cloud
#: shadow: nodata in the map, so unobserved) and as saturated (kept), and the glacier pixels
#: filled by `--fill-gaps` inpainting (observed, so in the class areas); NaN without a QA band.
QA_COLUMNS = ("product_mask", "masked_fraction", "saturated_fraction", "filled_px")


_DATE_RES = (
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(?:T\d{6})?(?!\d)"),
)


# ---------------------------------------------------------------- scene metadata
def _parse_date(text: str) -> str | None:
    for rx in _DATE_RES:
        for m in rx.finditer(text):
            try:
                return datetime(int(m[1]), int(m[2]), int(m[3])).date().isoformat()
            except ValueError:
                continue
    return None


def _sensor_from_name(name: str) -> str:
    up = name.upper()
    for prefix, sensor in (("S2A", "S2A"), ("S2B", "S2B"), ("S2C", "S2C"), ("LC09", "L9"),
                           ("LC08", "L8"), ("LE07", "L7"), ("S2", "S2")):
        if prefix in up:
            return sensor
    return ""


def scene_metadata(path: Path, tags: dict[str, str], override: dict[str, str] | None = None
                   ) -> dict[str, str]:
    """scene_id / date / sensor of a map: CLI overrides, else GeoTIFF tags, else file name."""
    low = {k.lower(): v for k, v in tags.items()}
    override = {k: v for k, v in (override or {}).items() if v}
    stem = path.name.split(".")[0]
    scene_id = override.get("scene_id") or low.get("scene_id") or re.sub(
        r"^(facies|classes|class|map)_|(_(facies|classes|class|map|smoothed))+$", "", stem,
        flags=re.IGNORECASE)
    date = override.get("date") or low.get("date") or low.get("acquired") or ""
    date = _parse_date(str(date)) or _parse_date(scene_id) or _parse_date(stem) or ""
    sensor = override.get("sensor") or low.get("sensor") or _sensor_from_name(scene_id)
    return {"scene_id": str(scene_id), "date": date, "sensor": str(sensor)}


def _find_qa(map_path: Path, ds: rasterio.DatasetReader) -> Path | None:
    """The QA band of a map: the file its QA tag names, beside it (None without one)."""
    name = ds.tags().get("QA")
    if not name:
        return None
    qa = map_path.parent / Path(name).name
    if not qa.is_file():
        warnings.warn(f"{qa}: QA band named by {map_path.name} not found; its masked and "
                      "saturated fractions are NaN", stacklevel=2)
        return None
    return qa


def _read_qa(qa_ds, wt, crs, shape) -> np.ndarray | None:
    if qa_ds is None:
        return None
    qa = np.zeros(shape, dtype=np.uint8)
    reproject(rasterio.band(qa_ds, 1), qa, dst_transform=wt, dst_crs=crs,
              resampling=Resampling.nearest)
    return qa


def _qa_fractions(qa: np.ndarray | None, mask, product_mask: str) -> dict:
    """The QA_COLUMNS of one glacier: the mask used, the masked and saturated fractions."""
    from glacierfacies.scenes.masks import QA_FILLED, QA_MASKED, QA_SATURATED

    out = {"product_mask": product_mask or "none", "masked_fraction": float("nan"),
           "saturated_fraction": float("nan"), "filled_px": float("nan")}
    if qa is None or not mask.any():
        return out
    n = int(mask.sum())
    out["masked_fraction"] = float(((qa & QA_MASKED) > 0)[mask].sum() / n)
    out["saturated_fraction"] = float(((qa & QA_SATURATED) > 0)[mask].sum() / n)
    out["filled_px"] = int(((qa & QA_FILLED) > 0)[mask].sum())
    return out


# ---------------------------------------------------------------- products
def _read_window(ds: rasterio.DatasetReader, band: int, window: Window, fill: float) -> np.ndarray:
    return ds.read(band, window=window, boundless=True, fill_value=fill)


def compute_products(
    maps: list[str | Path],
    outlines: str | Path,
    dem: str | Path | None,
    config: mb.ProductConfig | None = None,
    confidence: list[str | Path | None] | None = None,
    probabilities: list[str | Path | None] | None = None,
    id_column: str | None = None,
    scene_override: dict[str, str] | None = None,
) -> gpd.GeoDataFrame:
    """One row per glacier x map: class areas, observed fraction, AAR, snowline, confidence.

    Each glacier is rasterised on its map's grid over the full outline extent; the part of a
    glacier outside the map counts as unobserved (nodata). The DEM is resampled bilinearly
    onto the same window. Confidence comes from `confidence[i]`, else a map band or sibling
    file named *confidence*; probabilities (8-band rasters) resolve shadow when the config
    asks for it. `scene_override` (scene_id/date/sensor) applies to a single map only.
    """
    config = config or mb.ProductConfig()
    check_product_inputs(config, dem, probabilities)
    gdf = read_outlines(outlines)
    col = find_id_column(gdf, path=outlines, id_column=id_column)
    if scene_override and any(scene_override.values()) and len(maps) > 1:
        raise InputError(None, "--scene-id/--date/--sensor apply to a single map only")
    dem_ds = None
    if dem is not None:
        if not Path(dem).is_file():
            raise InputError(dem, "DEM not found")
        dem_ds = rasterio.open(dem)
    rows: list[dict] = []
    try:
        for i, map_path in enumerate(tqdm(maps, desc="products", unit="map",
                                          disable=len(maps) < 2)):
            map_path = Path(map_path)
            conf_arg = confidence[i] if confidence and i < len(confidence) else None
            prob_arg = probabilities[i] if probabilities and i < len(probabilities) else None
            rows.extend(_map_products(map_path, gdf, col, dem_ds, config, conf_arg, prob_arg,
                                      scene_override))
    finally:
        if dem_ds is not None:
            dem_ds.close()
    columns = ["glacier", *[c for c in CARRY_COLUMNS if c in gdf.columns and c != col],
               "scene_id", "date", "sensor", *mb.PRODUCT_COLUMNS, *SCENE_COLUMNS,
               *QA_COLUMNS]
    table = pd.DataFrame(rows, columns=[*columns, "_row"])
    geometry = gdf.geometry.iloc[table["_row"].to_numpy()] if len(table) else gdf.geometry[:0]
    table["hemisphere"] = outline_hemispheres(geometry)
    return gpd.GeoDataFrame(table.drop(columns="_row"), geometry=list(geometry.to_numpy()),
                            crs=gdf.crs)


def check_product_inputs(config: mb.ProductConfig, dem, probabilities=None) -> None:
    """No silent switch of method: the shadow method's inputs must be there."""
    if config.shadow == "snowline" and dem is None:
        raise InputError(None, "--shadow snowline needs --dem (shadowed pixels take the side "
                               "of the snowline they lie on); give --dem or --shadow exclude")
    # --shadow probabilities: each map's probabilities are given or named by its tags
    # (checked map by map in `_map_products`)


def _map_products(map_path, gdf, col, dem_ds, config, conf_arg, prob_arg, scene_override):
    if not map_path.is_file():
        raise InputError(map_path, "facies map not found")
    try:
        ds = rasterio.open(map_path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(map_path, f"not a readable raster ({exc})") from None
    with ds:
        if ds.crs is None:
            raise InputError(map_path, "map has no CRS")
        if ds.dtypes[0] != "uint8":
            raise InputError(map_path, f"facies map must be uint8 class codes, got {ds.dtypes[0]}")
        tags = ds.tags()
        layer = tags.get("LAYER")
        if layer is not None and layer != "facies":
            raise InputError(map_path, f"given as a facies map but its LAYER tag says {layer!r}")
        meta = scene_metadata(map_path, tags, scene_override)
        product_mask = tags.get("PRODUCT_MASK", "")
        masked_map = bool(product_mask) and not product_mask.startswith(("none", "off"))
        firn = firn_mapped(tags)
        qa_src = _find_qa(map_path, ds)
        conf_src = (check_given(Path(conf_arg), "confidence") if conf_arg
                    else find_companion(map_path, ds, "confidence"))
        prob_src = (check_given(Path(prob_arg), "probabilities") if prob_arg
                    else find_companion(map_path, ds, "probabilities"))
        conf_ds = rasterio.open(conf_src) if isinstance(conf_src, Path) else None
        qa_ds = rasterio.open(qa_src) if qa_src is not None else None
        prob_ds = rasterio.open(prob_src) if prob_src is not None else None
        m_bands = member_bands(prob_ds)
        if prob_ds is None and config.shadow == "probabilities":
            raise InputError(map_path, "--shadow probabilities needs the map's probabilities "
                                       "(none given or named by its tags)")
        try:
            outlines = gdf.to_crs(ds.crs)
            pixel_area = abs(ds.transform.a * ds.transform.e - ds.transform.b * ds.transform.d)
            left, bottom, right, top = ds.bounds
            rows = []
            for j, geom in enumerate(outlines.geometry):
                gx0, gy0, gx1, gy1 = geom.bounds
                if gx1 < left or gx0 > right or gy1 < bottom or gy0 > top:
                    continue
                win = from_bounds(gx0, gy0, gx1, gy1, ds.transform)
                # one pixel of margin: every glacier pixel's neighbours lie in the window
                c0, r0 = int(np.floor(win.col_off)) - 1, int(np.floor(win.row_off)) - 1
                c1 = int(np.ceil(win.col_off + win.width)) + 1
                r1 = int(np.ceil(win.row_off + win.height)) + 1
                win = Window(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))
                wt = ds.window_transform(win)
                shape = (int(win.height), int(win.width))
                mask = rasterise_outlines(Grid(ds.crs, wt, *shape), [geom], as_mask=True)
                if not mask.any():
                    continue
                cmap = _read_window(ds, 1, win, NODATA_CLASS)
                elev = None
                if dem_ds is not None:
                    elev = np.full(shape, np.nan, dtype=np.float32)
                    reproject(rasterio.band(dem_ds, 1), elev, dst_transform=wt, dst_crs=ds.crs,
                              dst_nodata=np.nan, resampling=Resampling.bilinear)
                conf = None
                if isinstance(conf_src, int):
                    conf = _read_window(ds, conf_src, win, 255)
                elif conf_ds is not None:
                    is_int = np.issubdtype(np.dtype(conf_ds.dtypes[0]), np.integer)
                    conf = np.full(shape, 255 if is_int else np.nan,
                                   dtype=np.uint8 if is_int else np.float32)
                    reproject(rasterio.band(conf_ds, 1), conf, dst_transform=wt,
                              dst_crs=ds.crs, dst_nodata=255 if is_int else np.nan,
                              resampling=Resampling.nearest)
                prob = members = None
                if prob_ds is not None:
                    prob = np.zeros((N_CLASSES, *shape), dtype=np.float32)
                    reproject(rasterio.band(prob_ds, list(range(1, N_CLASSES + 1))), prob,
                              dst_transform=wt, dst_crs=ds.crs, resampling=Resampling.nearest)
                    if m_bands:
                        mf = np.full((len(m_bands), *shape), np.nan, np.float32)
                        reproject(rasterio.band(prob_ds, m_bands), mf, dst_transform=wt,
                                  dst_crs=ds.crs, dst_nodata=np.nan,
                                  resampling=Resampling.nearest)
                        members = np.where(np.isfinite(mf), mf, NODATA_CLASS).astype(np.uint8)
                values = mb.glacier_products(cmap, mask, elev, pixel_area, conf, prob, config,
                                             firn_mapped=firn, member_maps=members)
                qa = _read_qa(qa_ds, wt, ds.crs, shape)
                values.update(_qa_fractions(qa, mask, product_mask))
                rows_idx = np.arange(r0, r0 + shape[0])[:, None]
                cols_idx = np.arange(c0, c0 + shape[1])[None, :]
                inside = ((rows_idx >= 0) & (rows_idx < ds.height) & (cols_idx >= 0)
                          & (cols_idx < ds.width))
                values["outline_in_scene"], values["outline_edge_fraction"] = (
                    outline_coverage(mask, inside, cmap, qa))
                flags = row_flags(values, config, qa_missing=qa is None and masked_map)
                values["product_flags"] = ";".join(flags)
                name = str(gdf[col].iloc[j])
                if any(f.startswith(("outline_", "withheld")) for f in flags):
                    warnings.warn(
                        f"{map_path.name}: glacier {name}: {values['outline_in_scene']:.1%} of "
                        f"its outline in the scene's valid footprint, "
                        f"{values['outline_edge_fraction']:.1%} of its edge on the scene's "
                        f"edge ({', '.join(f for f in flags if f.startswith(('outline_', 'withheld')))})",
                        stacklevel=2)
                row = {"glacier": name, **meta, **values, "_row": j}
                for c in CARRY_COLUMNS:
                    if c in gdf.columns and c != col:
                        row[c] = gdf[c].iloc[j]
                rows.append(row)
            return rows
        except rasterio.errors.RasterioError as exc:  # e.g. a map cut short by an interrupt
            cause = exc.__cause__ or exc  # GDAL's own message, not rasterio's "Read failed"
            raise InputError(map_path, f"cannot read the map ({str(cause).splitlines()[0]})"
                             ) from None
        finally:
            for extra in (conf_ds, prob_ds, qa_ds):
                if extra is not None:
                    extra.close()


def write_products(table: gpd.GeoDataFrame, dest: str | Path, config: mb.ProductConfig,
                   sources: dict | None = None, *, overwrite: bool = False) -> Path:
    """GeoPackage (layer ``products``, outline geometry) or CSV, plus ``<dest>.json``.

    An existing DEST (or its ``.json``) is an InputError unless `overwrite`; nothing is
    written then.
    """
    dest = Path(dest)
    suffix = dest.suffix.lower()
    if suffix not in (".gpkg", ".csv"):
        raise InputError(dest, "output must end in .gpkg or .csv")
    side = products_sidecar(dest)
    for path in (dest, side):
        check_output(path, overwrite=overwrite)
    with atomic_output(dest, overwrite=overwrite) as tmp:
        if suffix == ".gpkg":
            with warnings.catch_warnings():  # the temporary name does not end in .gpkg
                warnings.filterwarnings("ignore", message=".*filename extension")
                table.to_file(tmp, layer="products", driver="GPKG", engine="pyogrio")
        else:
            pd.DataFrame(table.drop(columns="geometry")).to_csv(tmp, index=False)
    write_json(side, {"config": config.to_dict(), "sources": sources or {},
                      "rows": len(table)}, overwrite=overwrite)
    return dest


def products_sidecar(dest: str | Path) -> Path:
    """The JSON written beside a products table: its configuration and sources."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".json")


PRODUCT_REQUIRED = ("glacier", "scene_id", "date", "aar", "observed_fraction")


def read_products(path: str | Path, with_geometry: bool = False) -> pd.DataFrame:
    """A products table (.gpkg or .csv) with at least the `PRODUCT_REQUIRED` columns.

    A GeoPackage's outline geometry gives the ``hemisphere`` column where it is missing;
    `with_geometry` keeps the geometry (a GeoDataFrame, for outline-overlap linking).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "products file not found")
    try:
        if path.suffix.lower() == ".csv":
            df = pd.read_csv(path, dtype={"glacier": str, "wgms_id": str, "rgi_id": str,
                                          "glims_id": str})
        else:
            gdf = gpd.read_file(path)
            if "hemisphere" not in gdf.columns and gdf.crs is not None and len(gdf):
                gdf["hemisphere"] = outline_hemispheres(gdf.geometry)
            df = gdf if with_geometry else pd.DataFrame(gdf.drop(columns="geometry",
                                                                 errors="ignore"))
    except Exception as exc:
        raise InputError(path, f"not a readable products table ({str(exc).splitlines()[0]})"
                         ) from None
    missing = [c for c in PRODUCT_REQUIRED if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    df["date"] = pd.to_datetime(df["date"], errors="coerce")
    if df["date"].isna().all():
        raise InputError(path, "no parseable dates in column 'date'")
    return df

