"""The paper's published patch layout: import and export."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import atomic_output
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.data.patchset import (
    PatchSet,
    PatchSetWriter,
    check_dtype,
    labels_from_names,
    normalise_table,
)
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES

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
    except rasterio.errors.RasterioError as exc:
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

    from glacierfacies.progress import tqdm

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

        try:
            with rasterio.open(files[0]) as src:
                patch_size = src.height
        except rasterio.errors.RasterioError as exc:
            raise InputError(files[0], f"cannot read GeoTIFF: {exc}".splitlines()[0]) from None
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

    from glacierfacies.progress import tqdm

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

