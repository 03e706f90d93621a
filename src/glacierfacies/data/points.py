"""Point tables of per-point reflectance (CSV or GeoPackage) as a PatchSet of 1x1 patches."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES, class_index
from glacierfacies.data.folds import assign_folds, folds_from_column
from glacierfacies.data.patchset import (
    PatchSet,
    check_dtype,
    labels_from_names,
    normalise_table,
)
from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS

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


def conflicting_duplicates(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Bool per row: its values (all columns, exactly) also occur in a row of another class."""
    import pandas as pd

    df = pd.DataFrame(values)
    key = pd.util.hash_pandas_object(df, index=False).to_numpy()
    n_classes = pd.Series(np.asarray(classes, dtype=object).astype(str)).groupby(key).transform(
        "nunique").to_numpy()
    return n_classes > 1


def _band_columns(band_columns: str | Mapping[str, str] | None) -> dict[str, str]:
    """Our band -> table column: a preset name, a mapping, or columns named as our bands."""
    if isinstance(band_columns, str) and band_columns in SENSOR_BAND_COLUMNS:
        return SENSOR_BAND_COLUMNS[band_columns]
    return parse_mapping(band_columns) or {b: b for b in OPTICAL_BANDS}


def _map_classes(raw: Any, class_map: Mapping[str, str] | str | None, path: Path) -> Any:
    """The table's class codes or names (a string Series) -> our class names, NaN where
    none: through `class_map` (whose targets must be classes), else by name or index."""
    cmap = parse_mapping(class_map)
    if cmap is not None:
        bad = sorted({v for v in cmap.values() if v not in CLASS_NAMES})
        if bad:
            raise InputError(path, f"class map targets {bad} are not classes "
                                   f"({', '.join(CLASS_NAMES)})")
        return raw.map(cmap)

    def to_ours(v: str) -> str | None:
        try:
            return CLASS_NAMES[class_index(v)]
        except ValueError:
            return None
    return raw.map(to_ours)


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
    drop_conflicting: bool = False,
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
    bands = _band_columns(band_columns)
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
    raw = df[class_column].astype(str).str.strip()
    mapped = _map_classes(raw, class_map, path)
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
    n_conflict = 0
    if drop_conflicting:
        conflict = conflicting_duplicates(values, mapped.to_numpy()) & ok
        n_conflict = int(conflict.sum())
        if n_conflict:
            warnings.warn(f"{path}: dropped {n_conflict} row(s) whose band values repeat "
                          "with another class", stacklevel=2)
        ok &= ~conflict
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        raise InputError(path, "no usable rows after class mapping")
    check_point_reflectance(values[idx][:, :3], path)

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
                  "scale": scale, "offset": offset, "class_map": parse_mapping(class_map),
                  "dropped_unmapped": int(unmapped.sum()), "dropped_missing": n_nan,
                  "dropped_conflicting": n_conflict}
    return PatchSet(patches, labels_from_names(table["class"].tolist()), table, OPTICAL_BANDS,
                    CLASS_NAMES, 1, None, provenance, fold_config)



#: Fewer rows than this say too little about a table's coding to refuse it.
PLAUSIBILITY_MIN_ROWS = 10


def check_point_reflectance(rgb: np.ndarray, path: Path) -> None:
    """The scenes' guard (`scenes.base.check_plausible`) on a point table: the median of its
    blue, green and red values (after --scale/--offset) must be plausible reflectance, so DN
    x 10,000 read without --scale is refused instead of scored."""
    from glacierfacies.scenes.base import check_plausible

    rgb = np.asarray(rgb, dtype=np.float64).T  # (3, N)
    check_plausible(rgb, np.isfinite(rgb).all(axis=0), path, min_pixels=PLAUSIBILITY_MIN_ROWS)


@dataclass
class PointValues:
    """A point table read for prediction: its rows, the feature values it can supply, and
    (when it has a class column) the labels mapped to our class names."""

    table: Any  # pandas DataFrame of the input rows (geometry dropped; x, y added)
    values: np.ndarray  # (N, F) float64, value * scale + offset
    feature_names: list[str]  # the features of `values`' columns
    columns: dict[str, str]  # feature -> the table column it came from (or would)
    labels: Any | None  # pandas Series of class names (None: no class column); NaN unmapped
    raw_labels: Any | None  # the class column as strings


def read_point_values(
    table_path: str | os.PathLike,
    band_columns: Mapping[str, str] | str | None = None,
    class_column: str = "class",
    class_map: Mapping[str, str] | str | None = None,
    scale: float | None = None,
    offset: float | None = None,
    layer: str | None = None,
) -> PointValues:
    """A point table -> the feature values it holds, for `predict` (no glacier or class
    needed). Optical bands come from `band_columns` (as in `import_points`; `scale` and
    `offset` apply to them), other features from columns named as the feature. Features whose
    column is absent are simply not in `feature_names`: the caller names those its models
    need."""
    import pandas as pd

    from glacierfacies.features import FEATURE_NAMES, TERRAIN_FEATURES

    path = Path(table_path)
    df, xs, ys, _ = _read_point_table(path, layer)
    bands = _band_columns(band_columns)
    unknown = [b for b in bands if b not in OPTICAL_BANDS]
    if unknown:
        raise InputError(path, f"band map names {unknown}, not bands ({', '.join(OPTICAL_BANDS)})")
    columns = {b: bands.get(b, b) for b in OPTICAL_BANDS}
    columns.update({f: f for f in TERRAIN_FEATURES})
    names = [f for f in FEATURE_NAMES if columns[f] in df.columns]
    try:
        values = (np.array(df[[columns[f] for f in names]].apply(pd.to_numeric), np.float64)
                  if names else np.zeros((len(df), 0)))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"feature columns must be numeric: {exc}".splitlines()[0]) from None
    optical = [i for i, f in enumerate(names) if f in OPTICAL_BANDS]
    values[:, optical] = (values[:, optical] * (1.0 if scale is None else scale)
                          + (0.0 if offset is None else offset))
    rgb = [names.index(b) for b in OPTICAL_BANDS[:3] if b in names]
    if len(rgb) == 3:
        check_point_reflectance(values[:, rgb], path)
    labels = raw = None
    if class_column in df.columns:
        raw = df[class_column].astype(str).str.strip()
        labels = _map_classes(raw, class_map, path)
    out = pd.DataFrame(df)
    if "x" not in out and np.isfinite(xs).any():
        out["x"], out["y"] = xs, ys
    return PointValues(out, values, names, columns, labels, raw)
