"""Build a PatchSet from scenes, a DEM, outlines and labelled points."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.data.folds import assign_folds, folds_from_column
from glacierfacies.data.patchset import (
    PatchSet,
    PatchSetWriter,
    check_dtype,
    check_patch_size,
    labels_from_names,
    normalise_table,
)
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES, resolve_features

if TYPE_CHECKING:
    import pandas as pd


def sample_windows(features: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut S×S windows centred on (row, col) pixels of a (F, H, W) stack.

    Returns (windows of the usable points, usable mask, edge mask): a point is skipped when
    its window crosses the raster edge (`edge`) or holds any non-finite value, i.e. invalid
    pixels (the training code cannot use NaN inputs).
    """
    h = patch_size // 2
    _, height, width = features.shape
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    edge = (rows - h < 0) | (cols - h < 0) | (rows + h >= height) | (cols + h >= width)
    inside = np.flatnonzero(~edge)
    out = np.empty((len(inside), features.shape[0], patch_size, patch_size), features.dtype)
    for j, i in enumerate(inside):
        r, c = rows[i], cols[i]
        out[j] = features[:, r - h:r + h + 1, c - h:c + h + 1]
    finite = np.isfinite(out).reshape(len(inside), -1).all(axis=1)
    usable = np.zeros(len(rows), dtype=bool)
    usable[inside[finite]] = True
    return out[finite], usable, edge


SAMPLE_BLOCK_PX = 2048  # points are cut from windows of at most this size (+ patch halo)


def _sample_scene_windows(
    scene: str | os.PathLike, grid: Any, dem_path: str | os.PathLike,
    outlines_path: str | os.PathLike, rows: np.ndarray, cols: np.ndarray, patch_size: int,
    fidx: list[int], read_options: Any, store: Any, store_rows: np.ndarray, dt: Any,
    device: str | None = None,
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Patches of one scene's points, read block by block: never the whole-scene stack.

    Points are grouped by SAMPLE_BLOCK_PX blocks of the scene grid; each group's features
    are built on the window around its points (+ the patch halo) with the whole scene's
    `TerrainContext`, so a patch equals the one cut from the whole-scene stack. Returns (usable,
    edge) masks over the points and one of the block scenes (metadata: sensor, date).
    """

    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, terrain_context

    h = patch_size // 2
    edge = (rows - h < 0) | (cols - h < 0) | (rows + h >= grid.height) | (cols + h >= grid.width)
    usable = np.zeros(len(rows), dtype=bool)
    inside = np.flatnonzero(~edge)
    keys = (rows[inside] // SAMPLE_BLOCK_PX) * (grid.width // SAMPLE_BLOCK_PX + 1) \
        + cols[inside] // SAMPLE_BLOCK_PX
    meta = context = None
    for key in np.unique(keys):
        pick = inside[keys == key]
        fill = 0 if read_options is None else read_options.fill_gaps_px  # inpainting context
        r0, c0 = int(rows[pick].min()) - h - fill, int(cols[pick].min()) - h - fill
        bh = int(rows[pick].max()) + h + 1 + fill - r0
        bw = int(cols[pick].max()) + h + 1 + fill - c0
        bgrid = grid.window(r0, c0, bh, bw)
        try:
            block_scene = read_scene(scene, grid=bgrid, options=read_options)
        except InputError as exc:
            if "no valid pixel" in exc.problem:
                continue  # every point of the block is invalid
            raise
        meta = block_scene
        if context is None:  # the whole scene's margins and sun, as mapping uses them
            context = terrain_context(block_scene, dem_path, outlines_path, grid=grid)
        stack = build_feature_stack(block_scene, dem_path, outlines_path,
                                    require_outline=False, context=context, device=device)
        feats = np.asarray(stack.features)[fidx]
        rr, cc = rows[pick] - r0, cols[pick] - c0
        windows, ok, _ = sample_windows(feats, rr, cc, patch_size)
        # as mapping: the features used must be finite over the window, and the pixel
        # itself observed (not removed by the product mask)
        obs = np.asarray(stack.observed)[rr, cc]
        windows, ok = windows[obs[ok]], ok & obs
        store[store_rows[pick[ok]]] = windows.astype(dt, copy=False)
        usable[pick[ok]] = True
        del stack, feats, windows
    return usable, edge, meta


#: Coordinate columns of a table without geometry (CSV): (x, y, CRS or None = a `crs` column)
XY_COLUMNS = (("lon", "lat", "EPSG:4326"), ("longitude", "latitude", "EPSG:4326"),
              ("x", "y", None))


def _points_from_columns(table: Any, path: Path) -> Any:
    """A GeoDataFrame of a table's coordinate columns (lon/lat in WGS 84; x/y in the CRS of
    a `crs` column); an InputError naming the file when it has none."""
    import geopandas as gpd
    import pandas as pd

    cols = {c.lower(): c for c in table.columns}
    for xn, yn, crs in XY_COLUMNS:
        if xn in cols and yn in cols:
            if crs is None:
                crs_col = cols.get("crs") or cols.get("epsg")
                values = set(table[crs_col].dropna().astype(str)) if crs_col else set()
                if len(values) != 1:
                    raise InputError(path, "labels have x,y columns but no single CRS: add a "
                                           "`crs` column (e.g. EPSG:32632), or give lon,lat")
                crs = values.pop()
                crs = f"EPSG:{crs}" if crs.isdigit() else crs
            try:
                x = pd.to_numeric(table[cols[xn]], errors="raise")
                y = pd.to_numeric(table[cols[yn]], errors="raise")
            except (ValueError, TypeError):
                raise InputError(path, f"coordinate columns {cols[xn]},{cols[yn]} must be "
                                       "numeric") from None
            if x.isna().any() or y.isna().any():
                raise InputError(path, f"{int((x.isna() | y.isna()).sum())} label(s) without "
                                       "coordinates")
            try:
                return gpd.GeoDataFrame(table.drop(columns="geometry", errors="ignore"),
                                        geometry=gpd.points_from_xy(x, y), crs=crs)
            except Exception as exc:  # noqa: BLE001 - pyproj's CRSError and others
                raise InputError(path, f"labels' CRS {crs!r} is not a CRS "
                                       f"({str(exc).splitlines()[0]})") from None
    raise InputError(path, "labels have no geometry: give points (GeoPackage), or a table "
                           "with lon,lat columns (WGS 84) or x,y and a crs column")


def read_labels(labels_path: str | os.PathLike) -> Any:
    """Labelled points (GeoPackage, or anything pyogrio reads; a CSV with lon,lat or x,y +
    crs columns) with checked columns."""
    import geopandas as gpd

    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise InputError(labels_path, "labels file does not exist")
    try:
        if labels_path.suffix.lower() in (".csv", ".txt"):
            import pandas as pd

            gdf = pd.read_csv(labels_path)
        else:
            gdf = gpd.read_file(labels_path)
    except Exception as exc:  # pyogrio raises several types
        raise InputError(labels_path, f"cannot read labels: {exc}".splitlines()[0]) from None
    missing = [c for c in ("class", "glacier", "scene_id") if c not in gdf.columns]
    if missing:
        raise InputError(labels_path, f"labels lack column(s) {missing}")
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf.columns \
            or gdf.geometry.isna().all():
        gdf = _points_from_columns(gdf, labels_path)
    if gdf.crs is None:
        raise InputError(labels_path, "labels have no CRS")
    if len(gdf) == 0:
        raise InputError(labels_path, "no labelled points")
    if gdf.geometry.isna().any() or gdf.geometry.is_empty.any():
        raise InputError(labels_path, f"{int((gdf.geometry.isna() | gdf.geometry.is_empty).sum())}"
                                      " label(s) without a point")
    if not (gdf.geometry.geom_type == "Point").all():
        raise InputError(labels_path, "labels must be points")
    for code, name in enumerate(gdf["class"].astype(str)):
        if name not in CLASS_NAMES:
            raise InputError(labels_path, f"unknown class {name!r} (row {code}); "
                                          f"known: {', '.join(CLASS_NAMES)}")
    return gdf


def check_label_glaciers(labels: Any, outlines_path: str | os.PathLike,
                         labels_path: str | os.PathLike | None = None) -> None:
    """InputError naming the labels when a label's `glacier` is an id of no outline (a typo
    would otherwise become one more glacier of its own fold). Ids are compared with every
    id column of the outlines (`outlines.ID_COLUMNS`); labels without a glacier are fine."""
    import pyogrio

    from glacierfacies.outlines import ID_COLUMNS

    if not Path(outlines_path).exists():
        return  # the outline reader says so, naming it
    try:
        info = pyogrio.read_info(outlines_path)
        cols = [c for c in ID_COLUMNS if c in list(info["fields"])]
        if not cols:
            return
        table = pyogrio.read_dataframe(outlines_path, columns=cols, read_geometry=False)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(outlines_path, f"cannot read outlines ({str(exc).splitlines()[0]})"
                         ) from None
    known = {str(v) for c in cols for v in table[c].dropna()}
    glaciers = labels["glacier"].dropna().astype(str)
    glaciers = glaciers[glaciers.str.strip() != ""]
    absent = sorted(set(glaciers) - known)
    if absent:
        n = int(glaciers.isin(absent).sum())
        raise InputError(labels_path, f"{n} label(s) name glacier(s) that no outline has "
                                      f"({', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''};"
                                      f" outline ids in {', '.join(cols)})")


def build_patchset(
    scene_paths: Sequence[str | os.PathLike],
    dem_path: str | os.PathLike,
    outlines_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    patch_size: int = 33,
    features: str | Sequence[str] = "all",
    dtype: str = "float32",
    k_folds: int = 6,
    fold_column: str | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = True,
    read_options: Any = None,
    device: str | None = None,
) -> PatchSet:
    """Sample S×S patches of the feature stack at every labelled point.

    Points are matched to scenes by `scene_id`, reprojected to the scene CRS and cut around
    their pixel. Points whose window crosses the scene edge or holds invalid (non-finite)
    pixels are skipped with a warning, and counted in `provenance["summary"]`. Labels whose
    scene is not given, or that lie outside their scene, raise InputError. With `out_dir`
    the patches are written straight to disk (never all in RAM) and the set is returned
    memory-mapped. `read_options` (`scenes.options.ReadOptions`) says how scenes are read.
    `device` ('auto', 'cpu', 'cuda'): where the terrain features are computed (CUDA: torch,
    `stack.build_feature_stack`; CPU: numpy).
    """
    if device is None or str(device) == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from rasterio.transform import rowcol

    from glacierfacies.progress import tqdm
    from glacierfacies.scenes.reader import scene_grid
    from glacierfacies.scenes.reader import scene_ids as ids_of_scenes

    patch_size = check_patch_size(patch_size)
    dt = check_dtype(dtype)
    try:
        feature_names = resolve_features(features)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    fidx = [FEATURE_NAMES.index(n) for n in feature_names]
    gdf = read_labels(labels_path)
    check_label_glaciers(gdf, outlines_path, labels_path)
    if fold_column is not None and fold_column not in gdf.columns:
        raise InputError(labels_path, f"fold column {fold_column!r} not in labels")
    scene_ids = gdf["scene_id"].astype(str).to_numpy()
    if fold_column is None:  # fail before the slow sampling when k > number of glaciers
        assign_folds(gdf["glacier"].astype(str).to_numpy(), k_folds, seed, labels_path)

    ids = [str(s) for s in ids_of_scenes(scene_paths)]  # from names/metadata, no pixels read
    scenes: dict[str, Any] = {}
    for sid, p in zip(ids, scene_paths, strict=True):
        scenes.setdefault(sid, p)
    unknown = sorted(set(scene_ids) - set(scenes))
    if unknown:
        n_bad = int(np.isin(scene_ids, unknown).sum())
        raise InputError(labels_path, f"{n_bad} label(s) fall in no given scene "
                                      f"(scene_id {unknown[:3]}{' ...' if len(unknown) > 3 else ''})")

    n = len(gdf)
    writer = None
    if out_dir is not None:
        writer = PatchSetWriter(out_dir, n, feature_names, patch_size, dt, overwrite).__enter__()
        store = writer.patches
    else:
        store = np.empty((n, len(feature_names), patch_size, patch_size), dtype=dt)
    try:
        keep = np.zeros(n, dtype=bool)
        xs = np.full(n, np.nan)
        ys = np.full(n, np.nan)
        crs_txt = np.full(n, "", dtype=object)
        sensors = np.full(n, "", dtype=object)
        dates = np.full(n, "", dtype=object)
        per_scene: dict[str, dict[str, int]] = {}
        for sid in tqdm(sorted(set(scene_ids)), desc="sampling scenes", unit="scene"):
            rows_i = np.flatnonzero(scene_ids == sid)
            grid = scene_grid(scenes[sid], 10.0 if read_options is None
                              else read_options.resolution_m)
            pts = gdf.geometry.iloc[rows_i].to_crs(grid.crs)
            x, y = pts.x.to_numpy(), pts.y.to_numpy()
            r, c = rowcol(grid.transform, x, y)
            r, c = np.asarray(r), np.asarray(c)
            outside = (r < 0) | (c < 0) | (r >= grid.height) | (c >= grid.width)
            if outside.any():
                raise InputError(labels_path, f"{int(outside.sum())} label(s) of scene {sid} "
                                              f"lie outside it (e.g. point at x={x[outside][0]:.1f}, "
                                              f"y={y[outside][0]:.1f} in {grid.crs})")
            usable, edge, sc = _sample_scene_windows(
                scenes[sid], grid, dem_path, outlines_path, r, c, patch_size, fidx,
                read_options, store, rows_i, dt, device=device)
            keep[rows_i[usable]] = True
            xs[rows_i], ys[rows_i] = x, y
            crs_txt[rows_i] = grid.crs.to_string()
            sensors[rows_i] = str(getattr(sc, "sensor", "")) if sc is not None else ""
            acq = getattr(sc, "acquired", None)
            dates[rows_i] = acq.date().isoformat() if acq is not None else ""
            n_edge, n_invalid = int(edge.sum()), int((~usable & ~edge).sum())
            per_scene[sid] = {"labels": len(rows_i), "kept": int(usable.sum()),
                              "skipped_edge": n_edge, "skipped_invalid": n_invalid}
            if n_edge or n_invalid:
                warnings.warn(
                    f"scene {sid}: skipped {n_edge} point(s) within {patch_size // 2} px of the "
                    f"scene edge and {n_invalid} whose {patch_size}x{patch_size} window has "
                    "invalid pixels", stacklevel=2)
        if not keep.any():
            raise InputError(labels_path, "no point has a full valid window in its scene")
        table = _labels_table(gdf, xs, ys, crs_txt, sensors, dates)
        table = table.iloc[np.flatnonzero(keep)].reset_index(drop=True)
        gdf_kept = gdf.iloc[np.flatnonzero(keep)]
        if fold_column is not None:
            folds, fold_config = folds_from_column(gdf_kept[fold_column].to_numpy(),
                                                   table["glacier"], labels_path)
        else:
            folds = assign_folds(table["glacier"], k_folds, seed, labels_path)
            fold_config = {"k": k_folds, "method": "glacier-greedy", "seed": seed}
        table["fold"] = folds
        summary = {
            "labels": n, "kept": int(keep.sum()),
            "skipped_edge": sum(v["skipped_edge"] for v in per_scene.values()),
            "skipped_invalid": sum(v["skipped_invalid"] for v in per_scene.values()),
            "per_scene": per_scene,
        }
        provenance = {
            "source": "scenes", "labels": str(labels_path), "dem": str(dem_path),
            "outlines": str(outlines_path), "scenes": {k: str(v) for k, v in scenes.items()},
            "features": list(feature_names), "summary": summary,
            "read_options": None if read_options is None else read_options.to_dict(),
            "edge_rule": "points whose window crosses the scene edge or holds non-finite "
                         "values are skipped",
        }
        if writer is not None:
            writer.shrink(keep)
            writer.finish(table, CLASS_NAMES, None, provenance, fold_config)
            writer.__exit__(None, None, None)
            writer = None
            return PatchSet.load(out_dir)
        labels = labels_from_names(table["class"].tolist())
        return PatchSet(store[keep], labels, table, feature_names, CLASS_NAMES, patch_size,
                        None, provenance, fold_config)
    except BaseException as exc:
        if writer is not None:
            writer.__exit__(type(exc), exc, None)
        raise


def _labels_table(gdf: Any, xs: np.ndarray, ys: np.ndarray, crs_txt: np.ndarray,
                  sensors: np.ndarray, dates: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    t = pd.DataFrame({
        "class": gdf["class"].astype(str).to_numpy(),
        "glacier": gdf["glacier"].astype(str).to_numpy(),
        "scene_id": gdf["scene_id"].astype(str).to_numpy(),
    })
    t["date"] = (gdf["date"].astype(str).str.slice(0, 10).to_numpy() if "date" in gdf
                 else dates)
    t["sensor"] = gdf["sensor"].astype(str).to_numpy() if "sensor" in gdf else sensors
    t["region"] = gdf["region"].astype(str).to_numpy() if "region" in gdf else ""
    t["fold"] = -1
    t["x"], t["y"], t["crs"] = xs, ys, crs_txt
    t["point_id"] = (gdf["point_id"].astype(str).to_numpy() if "point_id" in gdf
                     else np.arange(len(gdf)).astype(str))
    return normalise_table(t)

