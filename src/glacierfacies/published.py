"""The paper's published patch layout (one GeoTIFF per patch) and sampled point tables,
both turned into a `PatchSet`.

Published layout: a folder of `{fold}_{glacier}_{date}_..._{class}.tif`, 11 bands in
`FEATURE_NAMES` order (blue, green, red, nir, swir1, swir2, elevation, slope, shadow_mask,
hillshade, proximity). The fields between date and class are kept (the file stem becomes
`point_id`) so that export writes the same names back: import -> export -> import is
bit-exact. Point tables (CSV or GeoPackage, e.g. exported from Earth Engine) give a
spectral-only PatchSet (patch size 1, the 6 optical bands).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES, class_index
from glacierfacies.errors import InputError, atomic_output
from glacierfacies.features import FEATURE_NAMES, OPTICAL_BANDS
from glacierfacies.patches import (
    PatchSet,
    PatchSetWriter,
    assign_folds,
    check_dtype,
    folds_from_column,
    labels_from_names,
    normalise_table,
)

PIXEL_SIZE_M = 10.0
_SENSOR_TOKENS = {"s2": "sentinel2", "s2a": "sentinel2", "s2b": "sentinel2",
                  "sentinel2": "sentinel2", "l8": "landsat8", "lc08": "landsat8",
                  "landsat8": "landsat8", "l9": "landsat9", "lc09": "landsat9",
                  "landsat9": "landsat9", "l7": "landsat7", "le07": "landsat7"}
_DATE_RE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def parse_published_name(path: str | os.PathLike) -> dict[str, Any]:
    """Fields of `{fold}_{glacier}_{date}_..._{class}.tif`; InputError names a bad file."""
    path = Path(path)
    stem = path.name.split(".")[0]  # as the paper's loader: text before the first dot
    parts = stem.split("_")
    if len(parts) < 4 or not all(parts[:3]) or not parts[-1]:
        raise InputError(path, "name lacks fields; expected {fold}_{glacier}_{date}_..._{class}.tif")
    fold, glacier, date, cls = parts[0], parts[1], parts[2], parts[-1]
    if not fold.isdigit():
        raise InputError(path, f"fold field {fold!r} is not a non-negative integer")
    m = _DATE_RE.match(date)
    if not m:
        raise InputError(path, f"date field {date!r} is not YYYYMMDD or YYYY-MM-DD")
    if cls not in CLASS_NAMES:
        raise InputError(path, f"unknown class {cls!r}; known: {', '.join(CLASS_NAMES)}")
    middle = parts[3:-1]
    sensor = next((_SENSOR_TOKENS[t.lower()] for t in middle if t.lower() in _SENSOR_TOKENS), "")
    return {"fold": int(fold), "glacier": glacier, "date": f"{m[1]}-{m[2]}-{m[3]}",
            "date_field": date, "class": cls, "sensor": sensor, "point_id": stem}


def _read_patch(path: Path, patch_size: int, n_bands: int) -> tuple[np.ndarray, float, float, str]:
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.count != n_bands:
                raise InputError(path, f"has {src.count} bands, expected {n_bands}")
            if (src.height, src.width) != (patch_size, patch_size):
                raise InputError(path, f"patch is {src.height}x{src.width}, expected "
                                       f"{patch_size}x{patch_size}")
            data = src.read()
            x, y = src.xy(patch_size // 2, patch_size // 2)
            crs = src.crs.to_string() if src.crs else ""
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot read GeoTIFF: {exc}".splitlines()[0]) from None
    return data, float(x), float(y), crs


def import_published(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    patch_size: int | None = None,
    dtype: str = "float32",
    workers: int = 4,
    overwrite: bool = True,
    progress: bool = True,
) -> PatchSet:
    """Read a published-layout folder into a PatchSet, keeping its folds.

    All names are checked before any pixel is read; reads run in a thread pool (rasterio
    releases the GIL) with a progress bar. With `out_dir` the patches stream straight into
    the memory-mapped store and nothing is written unless every file is good.
    """
    import pandas as pd
    from tqdm import tqdm

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not files:
        raise InputError(folder, "no .tif patches found")
    records = [parse_published_name(p) for p in files]
    dt = check_dtype(dtype)
    if patch_size is None:
        import rasterio

        with rasterio.open(files[0]) as src:
            patch_size = src.height
    n, nb = len(files), len(FEATURE_NAMES)
    writer = None
    if out_dir is not None:
        writer = PatchSetWriter(out_dir, n, FEATURE_NAMES, patch_size, dt, overwrite).__enter__()
        store = writer.patches
    else:
        store = np.empty((n, nb, patch_size, patch_size), dtype=dt)
    try:
        xs, ys, crs = np.empty(n), np.empty(n), [""] * n

        def work(i: int) -> int:
            data, xs[i], ys[i], crs[i] = _read_patch(files[i], patch_size, nb)
            store[i] = data
            return i

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in tqdm(pool.map(work, range(n)), total=n, desc="reading patches",
                          unit="patch", disable=not progress):
                pass
        table = pd.DataFrame(records)
        table["scene_id"] = table["glacier"] + "_" + table["date_field"]
        table["region"] = ""
        table["x"], table["y"], table["crs"] = xs, ys, crs
        table = normalise_table(table.drop(columns=["date_field"]))
        folds = table["fold"].to_numpy()
        empty = sorted(set(range(int(folds.max()) + 1)) - set(folds.tolist()))
        if empty:
            raise InputError(folder, f"fold(s) {empty[:5]} have no glacier (folds in the names "
                                     f"must be 0..k-1 without gaps)")
        fold_config = {"k": int(folds.max()) + 1, "method": "published",
                       "values": np.unique(folds).tolist()}
        provenance = {"source": "published", "folder": str(folder), "n_files": n,
                      "pixel_size_m": _pixel_size(files[0])}
        if writer is not None:
            writer.finish(table, CLASS_NAMES, None, provenance, fold_config)
            writer.__exit__(None, None, None)
            writer = None
            return PatchSet.load(out_dir)
        labels = labels_from_names(table["class"].tolist())
        return PatchSet(store, labels, table, FEATURE_NAMES, CLASS_NAMES, patch_size, None,
                        provenance, fold_config)
    except BaseException as exc:
        if writer is not None:
            writer.__exit__(type(exc), exc, None)
        raise


def _pixel_size(path: Path) -> float:
    import rasterio

    with rasterio.open(path) as src:
        return float(abs(src.transform.a))


def published_name(row: Mapping[str, Any]) -> str:
    """File name for one table row: its `point_id` when that is already a matching published
    name (so a round trip keeps names), else `{fold}_{glacier}_{date}_{sensor}_{id}_{class}`."""
    pid = str(row["point_id"])
    try:
        f = parse_published_name(pid + ".tif")
        if (f["fold"], f["glacier"], f["date"], f["class"]) == (
                int(row["fold"]), str(row["glacier"]), str(row["date"]), str(row["class"])):
            return pid + ".tif"
    except InputError:
        pass
    date = str(row["date"]).replace("-", "")
    middle = "-".join(filter(None, [str(row.get("sensor", "")), pid.replace("_", "-")]))
    return f"{int(row['fold'])}_{row['glacier']}_{date}_{middle or 'p'}_{row['class']}.tif"


def export_published(
    patchset: PatchSet | str | os.PathLike,
    folder: str | os.PathLike,
    workers: int = 4,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a PatchSet as the published layout (one 11-band GeoTIFF per patch), atomically."""
    import rasterio
    from rasterio.transform import from_origin
    from tqdm import tqdm

    ps = patchset if isinstance(patchset, PatchSet) else PatchSet.load(patchset)
    if ps.feature_names != FEATURE_NAMES:
        raise InputError(folder, f"the published layout needs all 11 features in order; this "
                                 f"set has {', '.join(ps.feature_names)}")
    bad = [g for g in ps.table["glacier"].unique() if "_" in g or not g]
    if bad:
        raise InputError(folder, f"glacier name {bad[0]!r} is empty or contains '_', which the "
                                 "published file names cannot hold")
    if (ps.table["fold"] < 0).any():
        raise InputError(folder, "some patches have no fold (-1)")
    names = [published_name(r) for r in ps.table.to_dict("records")]
    if len(set(names)) != len(names):
        raise InputError(folder, "two patches would get the same file name")
    res = float(ps.provenance.get("pixel_size_m", PIXEL_SIZE_M))
    s, h = ps.patch_size, ps.patch_size // 2
    # GeoTIFF has no float16: write float32 (exact for float16 values)
    out_dtype = "float32" if ps.patches.dtype == np.float16 else ps.patches.dtype.name
    xs, ys, crs = ps.table["x"].to_numpy(), ps.table["y"].to_numpy(), ps.table["crs"].tolist()
    folder = Path(folder)
    with atomic_output(folder, overwrite=overwrite) as tmp:
        tmp.mkdir()

        def work(i: int) -> None:
            x0 = xs[i] - (h + 0.5) * res if np.isfinite(xs[i]) else 0.0
            y0 = ys[i] + (h + 0.5) * res if np.isfinite(ys[i]) else 0.0
            with rasterio.open(tmp / names[i], "w", driver="GTiff", width=s, height=s,
                               count=len(FEATURE_NAMES), dtype=out_dtype,
                               crs=crs[i] or None, transform=from_origin(x0, y0, res, res)) as dst:
                dst.write(np.asarray(ps.patches[i], dtype=out_dtype))
                dst.descriptions = FEATURE_NAMES

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in tqdm(pool.map(work, range(len(ps))), total=len(ps), unit="patch",
                          desc="writing patches", disable=not progress):
                pass
    return folder


# ---------------------------------------------------------------- point tables

SENSOR_BAND_COLUMNS: dict[str, dict[str, str]] = {
    "sentinel2": dict(zip(OPTICAL_BANDS, ("B2", "B3", "B4", "B8", "B11", "B12"), strict=True)),
    "landsat89": dict(zip(OPTICAL_BANDS, ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6",
                                          "SR_B7"), strict=True)),
}


def parse_mapping(spec: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """`"a=b,c=d"`, a JSON/YAML file of a mapping, or a dict -> dict of strings."""
    if spec is None or isinstance(spec, Mapping):
        return None if spec is None else {str(k): str(v) for k, v in spec.items()}
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(
            path.read_text())
        if not isinstance(data, dict):
            raise InputError(path, "must hold a mapping")
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if "=" not in item:
            raise InputError(None, f"mapping item {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _read_point_table(path: Path, layer: str | None) -> tuple[Any, np.ndarray, np.ndarray, str]:
    import pandas as pd

    if not path.is_file():
        raise InputError(path, "point table does not exist")
    xs = ys = None
    crs = ""
    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path)
        except Exception as exc:
            raise InputError(path, f"cannot read CSV: {exc}".splitlines()[0]) from None
        if ".geo" in df.columns:  # Earth Engine export: GeoJSON point per row
            coords = [json.loads(g)["coordinates"] if isinstance(g, str) else (np.nan, np.nan)
                      for g in df[".geo"]]
            xs, ys = np.array([c[0] for c in coords], float), np.array([c[1] for c in coords], float)
            crs = "EPSG:4326"
    else:
        import geopandas as gpd

        try:
            df = gpd.read_file(path, layer=layer)
        except Exception as exc:
            raise InputError(path, f"cannot read table: {exc}".splitlines()[0]) from None
        if "geometry" in df and df.geometry.notna().all() and len(df):
            xs, ys = df.geometry.x.to_numpy(), df.geometry.y.to_numpy()
            crs = df.crs.to_string() if df.crs else ""
        df = pd.DataFrame(df.drop(columns="geometry", errors="ignore"))
    if xs is None:
        xs, ys = [df[c].to_numpy(float) if c in df else np.full(len(df), np.nan) for c in "xy"]
    return df, xs, ys, crs


def import_points(
    table_path: str | os.PathLike,
    band_columns: Mapping[str, str] | str | None = None,
    class_column: str = "class",
    class_map: Mapping[str, str] | str | None = None,
    glacier_column: str = "glacier",
    scale: float | None = None,
    offset: float | None = None,
    strict: bool = False,
    fold_column: str | None = None,
    k_folds: int = 6,
    seed: int = 0,
    layer: str | None = None,
    dtype: str = "float32",
) -> PatchSet:
    """A table of sampled band values -> PatchSet (patch size 1, the 6 optical bands).

    `band_columns` maps our bands (blue..swir2) to table columns, or names a preset
    ("sentinel2", "landsat89"); default: columns named as our bands. Values become
    `value * scale + offset`. `class_map` maps the table's codes or names to our class
    names; rows whose class maps to nothing are dropped with a count (or InputError when
    `strict`). Folds by glacier (or `fold_column`) as for scene-built sets.
    """
    path = Path(table_path)
    df, xs, ys, crs = _read_point_table(path, layer)
    if isinstance(band_columns, str) and band_columns in SENSOR_BAND_COLUMNS:
        bands = SENSOR_BAND_COLUMNS[band_columns]
    else:
        bands = parse_mapping(band_columns) or {b: b for b in OPTICAL_BANDS}
    unknown = [b for b in bands if b not in OPTICAL_BANDS]
    if unknown or set(bands) != set(OPTICAL_BANDS):
        raise InputError(path, f"band map must give exactly {', '.join(OPTICAL_BANDS)}; "
                               f"got {', '.join(bands)}")
    needed = [bands[b] for b in OPTICAL_BANDS] + [class_column, glacier_column]
    needed += [fold_column] if fold_column else []
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(path, f"missing mapped column(s) {missing}; table has "
                               f"{', '.join(map(str, df.columns[:20]))}")
    cmap = parse_mapping(class_map)
    raw = df[class_column].astype(str).str.strip()
    if cmap is not None:
        mapped = raw.map(cmap)
        bad_targets = sorted({v for v in cmap.values() if v not in CLASS_NAMES})
        if bad_targets:
            raise InputError(path, f"class map targets {bad_targets} are not classes "
                                   f"({', '.join(CLASS_NAMES)})")
    else:
        def to_ours(v: str) -> str | None:
            try:
                return CLASS_NAMES[class_index(v)]
            except ValueError:
                return None
        mapped = raw.map(to_ours)
    unmapped = mapped.isna().to_numpy()
    if unmapped.any():
        examples = sorted(raw[unmapped].unique())[:5]
        if strict:
            raise InputError(path, f"{int(unmapped.sum())} row(s) have unmapped class(es) "
                                   f"{examples}")
        warnings.warn(f"{path}: dropped {int(unmapped.sum())} row(s) with unmapped class(es) "
                      f"{examples}", stacklevel=2)
    import pandas as pd

    try:
        values = df[[bands[b] for b in OPTICAL_BANDS]].apply(pd.to_numeric).to_numpy(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"band columns must be numeric: {exc}".splitlines()[0]) from None
    values = values * (1.0 if scale is None else scale) + (0.0 if offset is None else offset)
    ok = ~unmapped & np.isfinite(values).all(axis=1)
    n_nan = int((~unmapped & ~ok).sum())
    if n_nan:
        warnings.warn(f"{path}: dropped {n_nan} row(s) with missing band values", stacklevel=2)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        raise InputError(path, "no usable rows after class mapping")

    sub = df.iloc[idx]
    table = pd.DataFrame({
        "class": mapped.to_numpy()[idx], "glacier": sub[glacier_column].astype(str).to_numpy(),
        "scene_id": sub["scene_id"].astype(str).to_numpy() if "scene_id" in sub else "",
        "date": sub["date"].astype(str).str.slice(0, 10).to_numpy() if "date" in sub else "",
        "sensor": sub["sensor"].astype(str).to_numpy() if "sensor" in sub else "",
        "region": sub["region"].astype(str).to_numpy() if "region" in sub else "",
        "x": xs[idx], "y": ys[idx], "crs": crs,
        "point_id": (sub["point_id"].astype(str).to_numpy() if "point_id" in sub
                     else idx.astype(str)),
    })
    if fold_column:
        folds, fold_config = folds_from_column(sub[fold_column].to_numpy(), table["glacier"], path)
    else:
        folds = assign_folds(table["glacier"], k_folds, seed, path)
        fold_config = {"k": k_folds, "method": "glacier-greedy", "seed": seed}
    table["fold"] = folds
    table = normalise_table(table)
    patches = values[idx].astype(check_dtype(dtype)).reshape(len(idx), 6, 1, 1)
    provenance = {"source": "points", "table": str(path), "band_columns": bands,
                  "scale": scale, "offset": offset, "class_map": cmap,
                  "dropped_unmapped": int(unmapped.sum()), "dropped_missing": n_nan}
    return PatchSet(patches, labels_from_names(table["class"].tolist()), table, OPTICAL_BANDS,
                    CLASS_NAMES, 1, None, provenance, fold_config)

