"""Patch datasets: the packed, memory-mapped `PatchSet` store, folds by glacier, min–max
normalisation, and sampling patches from feature stacks at labelled points.

Loading a whole set is one memory map (`DIR/patches.npy`), so training never re-reads
thousands of small GeoTIFFs. Only numpy is imported at module level: the trainer on a GPU
box with torch + numpy can import `PatchSet`, `fit_minmax`, `apply_minmax` and
`validation_fold`; pandas, rasterio and geopandas are imported inside the functions that
need them. The published per-patch GeoTIFF layout and point tables live in `published.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.errors import InputError
from glacierfacies.features import FEATURE_NAMES, resolve_features

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS: tuple[str, ...] = (
    "class", "glacier", "scene_id", "date", "sensor", "region", "fold", "x", "y", "crs",
    "point_id",
)
STR_COLUMNS = ("class", "glacier", "scene_id", "date", "sensor", "region", "crs", "point_id")
DTYPES = ("float32", "float16")
META_VERSION = 1
CHUNK = 4096  # patches per chunk when streaming over a memory map


def check_patch_size(patch_size: int) -> int:
    """Patch sizes are odd (a centre pixel) and 1..65 (the paper uses 33)."""
    s = int(patch_size)
    if s != patch_size or s < 1 or s > 65 or s % 2 == 0:
        raise InputError(None, f"patch size must be odd and in 1..65, got {patch_size}")
    return s


def check_dtype(dtype: str | np.dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise InputError(None, f"patch dtype must be one of {DTYPES}, got {dt.name}")
    return dt


def validation_fold(test_fold: int, k: int) -> int:
    """The paper's rule: the validation fold is the test fold minus one (mod k)."""
    return (int(test_fold) - 1) % int(k)


def normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Give a table all `TABLE_COLUMNS` with stable dtypes (missing strings -> "")."""
    import pandas as pd

    t = pd.DataFrame(index=pd.RangeIndex(len(table)))
    for col in TABLE_COLUMNS:
        values = table[col].to_numpy() if col in table.columns else None
        if col in STR_COLUMNS:
            t[col] = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                      for v in values] if values is not None else ""
        elif col == "fold":
            t[col] = np.asarray(values, dtype=np.int64) if values is not None else -1
        else:
            t[col] = np.asarray(values, dtype=np.float64) if values is not None else np.nan
    extra = [c for c in table.columns if c not in TABLE_COLUMNS]
    for col in extra:
        t[col] = table[col].to_numpy()
    return t


def labels_from_names(names: Sequence[str], class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Class names -> int64 codes in `class_names` order (ValueError names unknown ones)."""
    lookup = {c: i for i, c in enumerate(class_names)}
    try:
        return np.fromiter((lookup[n] for n in names), dtype=np.int64, count=len(names))
    except KeyError as exc:
        raise ValueError(
            f"unknown class {exc.args[0]!r}; known classes: {', '.join(class_names)}"
        ) from None


@dataclass
class PatchSet:
    """Labelled patches (N, F, S, S), their per-patch table and the metadata to use them."""

    patches: np.ndarray
    labels: np.ndarray
    table: pd.DataFrame
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...] = CLASS_NAMES
    patch_size: int = 33
    normalisation: dict[str, list[float]] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    fold_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feature_names = tuple(self.feature_names)
        self.class_names = tuple(self.class_names)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        shape = (n, len(self.feature_names), self.patch_size, self.patch_size)
        if tuple(self.patches.shape) != shape:
            raise ValueError(f"patches have shape {self.patches.shape}, expected {shape}")
        if len(self.table) != n:
            raise ValueError(f"table has {len(self.table)} rows for {n} patches")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def folds(self) -> np.ndarray:
        return self.table["fold"].to_numpy(dtype=np.int64)

    def fold_split(self, test_fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, validation, test) indices for a test fold, validation = test - 1 (mod k)."""
        k = int(self.fold_config.get("k", len(np.unique(self.folds))))
        folds = self.folds
        val = validation_fold(test_fold, k)
        test_idx = np.flatnonzero(folds == test_fold)
        val_idx = np.flatnonzero(folds == val)
        train_idx = np.flatnonzero((folds != test_fold) & (folds != val))
        return train_idx, val_idx, test_idx

    def meta(self) -> dict[str, Any]:
        return {
            "version": META_VERSION,
            "n_patches": len(self),
            "feature_names": list(self.feature_names),
            "class_names": list(self.class_names),
            "patch_size": self.patch_size,
            "dtype": np.dtype(self.patches.dtype).name,
            "normalisation": self.normalisation,
            "provenance": self.provenance,
            "fold_config": self.fold_config,
        }

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> PatchSet:
        """Open DIR (patches memory-mapped read-only unless mmap=False)."""
        import pandas as pd

        path = Path(path)
        for name in ("meta.json", "patches.npy", "table.parquet"):
            if not (path / name).is_file():
                raise InputError(path, f"not a PatchSet folder (missing {name})")
        try:
            meta = json.loads((path / "meta.json").read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path / "meta.json", f"invalid JSON: {exc}") from None
        patches = np.load(path / "patches.npy", mmap_mode="r" if mmap else None)
        table = pd.read_parquet(path / "table.parquet")
        class_names = tuple(meta["class_names"])
        try:
            labels = labels_from_names(table["class"].tolist(), class_names)
        except ValueError as exc:
            raise InputError(path / "table.parquet", str(exc)) from None
        try:
            return cls(
                patches=patches, labels=labels, table=table,
                feature_names=tuple(meta["feature_names"]), class_names=class_names,
                patch_size=int(meta["patch_size"]), normalisation=meta.get("normalisation"),
                provenance=meta.get("provenance", {}), fold_config=meta.get("fold_config", {}),
            )
        except ValueError as exc:
            raise InputError(path, f"inconsistent PatchSet: {exc}") from None

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write DIR atomically; patches are streamed in chunks (a memory map stays one)."""
        path = Path(path)
        with PatchSetWriter(path, len(self), self.feature_names, self.patch_size,
                            self.patches.dtype, overwrite=overwrite) as w:
            for start in range(0, len(self), CHUNK):
                w.patches[start:start + CHUNK] = self.patches[start:start + CHUNK]
            w.finish(self.table, self.class_names, self.normalisation, self.provenance,
                     self.fold_config)
        return path

    def read_batch(self, idx: np.ndarray | Sequence[int], out: np.ndarray | None = None
                   ) -> np.ndarray:
        """Copy rows `idx` of the (memory-mapped) patches into `out` (a reused buffer).

        This is the training loop's read. With torch present the gather runs on all torch
        CPU threads (`index_select`), several times faster than numpy's single-threaded
        `take` on this memory-bound copy; without torch it falls back to `numpy.take`.
        Sorted indices read the map front to back.
        """
        idx = np.asarray(idx, dtype=np.int64)
        view = np.asarray(self.patches)
        if out is None:
            out = np.empty((len(idx), *view.shape[1:]), view.dtype)
        elif out.shape != (len(idx), *view.shape[1:]) or out.dtype != view.dtype:
            raise ValueError(f"out must be {(len(idx), *view.shape[1:])} {view.dtype}, "
                             f"got {out.shape} {out.dtype}")
        try:
            import warnings

            import torch
        except ImportError:
            return np.take(view, idx, axis=0, out=out)
        with warnings.catch_warnings():  # a read-only map is fine: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            source = torch.from_numpy(view)
        torch.index_select(source, 0, torch.from_numpy(idx), out=torch.from_numpy(out))
        return out

    def subset(self, idx: np.ndarray | Sequence[int]) -> PatchSet:
        """A new in-memory PatchSet of the given rows (bool mask or indices)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return PatchSet(
            patches=np.asarray(self.patches[idx]),
            labels=self.labels[idx], table=self.table.iloc[idx].reset_index(drop=True),
            feature_names=self.feature_names, class_names=self.class_names,
            patch_size=self.patch_size, normalisation=self.normalisation,
            provenance=dict(self.provenance), fold_config=dict(self.fold_config),
        )

    def select_features(self, names: str | Sequence[str]) -> PatchSet:
        """Keep a feature subset ("optical", "optical+elevation", or names), in that order."""
        wanted = resolve_features(names)
        missing = [n for n in wanted if n not in self.feature_names]
        if missing:
            raise InputError(None, f"features {missing} are not in this PatchSet "
                                   f"(has {', '.join(self.feature_names)})")
        fidx = [self.feature_names.index(n) for n in wanted]
        norm = None
        if self.normalisation is not None:
            norm = {k: [self.normalisation[k][i] for i in fidx] for k in ("min", "max")}
        return PatchSet(
            patches=np.asarray(self.patches[:, fidx]), labels=self.labels.copy(),
            table=self.table.copy(), feature_names=wanted, class_names=self.class_names,
            patch_size=self.patch_size, normalisation=norm,
            provenance=dict(self.provenance), fold_config=dict(self.fold_config),
        )

    def summary(self) -> str:
        """A few lines for the CLI: size, features, classes, folds."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        cls = ", ".join(f"{c} {n}" for c, n in zip(self.class_names, counts, strict=True) if n)
        folds = np.unique(self.folds, return_counts=True)
        fold_txt = ", ".join(f"{f}: {n}" for f, n in zip(*folds, strict=True))
        return (
            f"{len(self)} patches, {len(self.feature_names)} features x "
            f"{self.patch_size}x{self.patch_size} {np.dtype(self.patches.dtype).name}\n"
            f"features: {', '.join(self.feature_names)}\n"
            f"classes: {cls}\n"
            f"glaciers: {self.table['glacier'].nunique()}, scenes: "
            f"{self.table['scene_id'].nunique()}\n"
            f"folds ({self.fold_config.get('method', '?')}): {fold_txt}\n"
            f"normalisation: {'stored' if self.normalisation else 'none'}"
        )


def load_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """numpy-only view of a PatchSet folder (no pandas/pyarrow): for a bare GPU box.

    Returns `patches` (memory map), `labels`, `fold`, `glacier`, `scene_id`, `sensor`
    arrays and `meta` (the meta.json dict).
    """
    path = Path(path)
    if not (path / "index.npz").is_file():
        raise InputError(path, "not a PatchSet folder (missing index.npz)")
    meta = json.loads((path / "meta.json").read_text())
    with np.load(path / "index.npz") as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    out["patches"] = np.load(path / "patches.npy", mmap_mode="r")
    out["meta"] = meta
    return out


class PatchSetWriter:
    """Write a PatchSet folder without holding the patches in RAM.

    `with PatchSetWriter(dest, n, features, size, dtype) as w:` fill `w.patches` (a writable
    `np.lib.format.open_memmap` in a temporary sibling folder), call `w.finish(table, ...)`,
    and the folder is renamed onto `dest` when the block ends without error.
    `w.shrink(keep)` drops rows (chunked copy) when some candidates were skipped.
    """

    def __init__(self, dest: str | os.PathLike, n: int, feature_names: Sequence[str],
                 patch_size: int, dtype: str | np.dtype = "float32", overwrite: bool = True):
        self.dest = Path(dest)
        self.n = int(n)
        self.feature_names = tuple(feature_names)
        self.patch_size = check_patch_size(patch_size)
        self.dtype = check_dtype(dtype)
        self.overwrite = overwrite
        self._finished = False

    def __enter__(self) -> PatchSetWriter:
        if not self.dest.parent.exists():
            raise InputError(self.dest.parent, "output folder does not exist")
        if self.dest.exists() and not self.overwrite:
            raise InputError(self.dest, "output exists; pass --overwrite to replace it")
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", suffix=".tmp",
                                         dir=self.dest.parent))
        shape = (self.n, len(self.feature_names), self.patch_size, self.patch_size)
        self.patches = np.lib.format.open_memmap(self.tmp / "patches.npy", mode="w+",
                                                 dtype=self.dtype, shape=shape)
        return self

    def shrink(self, keep: np.ndarray) -> None:
        """Keep only rows `keep` (indices or mask), copying in chunks into a new file."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        if len(keep) == self.n and np.array_equal(keep, np.arange(self.n)):
            return
        old = self.patches
        new_path = self.tmp / "patches.shrink.npy"
        new = np.lib.format.open_memmap(new_path, mode="w+", dtype=self.dtype,
                                        shape=(len(keep), *old.shape[1:]))
        for start in range(0, len(keep), CHUNK):
            new[start:start + CHUNK] = old[keep[start:start + CHUNK]]
        new.flush()
        del old
        self.patches = None
        os.replace(new_path, self.tmp / "patches.npy")
        self.n = len(keep)
        self.patches = np.load(self.tmp / "patches.npy", mmap_mode="r+")

    def finish(self, table: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES,
               normalisation: dict | None = None, provenance: dict | None = None,
               fold_config: dict | None = None) -> None:
        table = normalise_table(table)
        if len(table) != self.n:
            raise ValueError(f"table has {len(table)} rows for {self.n} patches")
        labels_from_names(table["class"].tolist(), class_names)  # validates names
        self.patches.flush()
        table.to_parquet(self.tmp / "table.parquet", index=False)
        np.savez(self.tmp / "index.npz",
                 labels=labels_from_names(table["class"].tolist(), class_names),
                 fold=table["fold"].to_numpy(np.int64),
                 **{c: table[c].to_numpy(str) for c in ("glacier", "scene_id", "sensor")})
        meta = {
            "version": META_VERSION, "n_patches": self.n,
            "feature_names": list(self.feature_names), "class_names": list(class_names),
            "patch_size": self.patch_size, "dtype": self.dtype.name,
            "normalisation": normalisation, "provenance": provenance or {},
            "fold_config": fold_config or {},
        }
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> None:
        self.patches = None
        try:
            if exc_type is None:
                if not self._finished:
                    raise RuntimeError("PatchSetWriter: finish() was not called")
                if self.dest.is_dir() and not self.dest.is_symlink():
                    shutil.rmtree(self.dest)
                elif self.dest.exists():
                    self.dest.unlink()
                os.replace(self.tmp, self.dest)
        finally:
            if self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------- folds


def assign_folds(glaciers: Sequence[str], k: int = 6, seed: int = 0,
                 source: str | os.PathLike | None = None) -> np.ndarray:
    """Fold per patch: whole glaciers go, largest first, onto the fold with fewest patches.

    Ties in glacier size are broken by a seeded shuffle, so `seed` gives other, equally
    balanced splits. A fold left without any glacier (k > number of glaciers) is an error.
    """
    glaciers = np.asarray([str(g) for g in glaciers])
    if k < 2:
        raise InputError(source, f"need at least 2 folds, got k={k}")
    names, inverse, counts = np.unique(glaciers, return_inverse=True, return_counts=True)
    if len(names) < k:
        raise InputError(source, f"fold(s) {list(range(len(names), k))} would have no glacier: "
                                 f"{len(names)} glacier(s) for k={k} folds")
    tiebreak = np.random.default_rng(seed).permutation(len(names))
    order = np.lexsort((tiebreak, -counts))
    loads = np.zeros(k, dtype=np.int64)
    glacier_fold = np.empty(len(names), dtype=np.int64)
    for g in order:
        f = int(np.argmin(loads))
        glacier_fold[g] = f
        loads[f] += counts[g]
    return glacier_fold[inverse]


def folds_from_column(values: Sequence, glaciers: Sequence[str],
                      source: str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """User-given folds (integers); values are mapped in sorted order to 0..k-1."""
    try:
        vals = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(source, "fold column must hold integers") from None
    if np.isnan(vals).any() or (vals != np.round(vals)).any():
        raise InputError(source, "fold column must hold integers (no blanks)")
    vals = vals.astype(np.int64)
    uniq = np.unique(vals)
    if len(uniq) < 2:
        raise InputError(source, f"fold column has {len(uniq)} distinct fold(s); need >= 2")
    folds = np.searchsorted(uniq, vals)
    split = {}
    g = np.asarray([str(x) for x in glaciers])
    for name in np.unique(g):
        fs = np.unique(folds[g == name])
        if len(fs) > 1:
            split[str(name)] = fs.tolist()
    if split:
        warnings.warn(f"user folds split {len(split)} glacier(s) across folds "
                      f"(e.g. {next(iter(split))}); results are not glacier-independent",
                      stacklevel=2)
    return folds, {"k": len(uniq), "method": "column", "values": uniq.tolist()}


# ---------------------------------------------------------------- normalisation


def fit_minmax(patchset: PatchSet | np.ndarray, train_idx: np.ndarray | Sequence[int]
               ) -> dict[str, list[float]]:
    """Global per-feature min and max over the training patches only (as the paper).

    Streams over the memory map in chunks; NaNs are ignored.
    """
    patches = getattr(patchset, "patches", patchset)
    idx = np.asarray(train_idx)
    if idx.dtype == bool:
        idx = np.flatnonzero(idx)
    idx = np.sort(idx)
    if len(idx) == 0:
        raise ValueError("fit_minmax needs at least one training patch")
    n_feat = patches.shape[1]
    lo = np.full(n_feat, np.inf)
    hi = np.full(n_feat, -np.inf)
    for start in range(0, len(idx), CHUNK):
        block = np.asarray(patches[idx[start:start + CHUNK]], dtype=np.float32)
        block = np.moveaxis(block, 1, 0).reshape(n_feat, -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.fmin(lo, np.nanmin(block, axis=1))
            hi = np.fmax(hi, np.nanmax(block, axis=1))
    return {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}


def apply_minmax(x: Any, norm: dict[str, Sequence[float]] | None) -> Any:
    """(x - min) / (max - min) per feature on (..., F, S, S) arrays or torch tensors.

    Pure numpy / torch: usable on a GPU box. A constant feature (max == min) maps to 0.
    """
    if norm is None:
        return x
    lo = np.asarray(norm["min"], dtype=np.float64)
    span = np.asarray(norm["max"], dtype=np.float64) - lo
    span = np.where(span > 0, span, 1.0)
    if hasattr(x, "new_tensor"):  # torch tensor, keep device
        dtype = x.dtype if x.is_floating_point() else None
        lo_t = x.new_tensor(lo, dtype=dtype).reshape(-1, 1, 1)
        span_t = x.new_tensor(span, dtype=dtype).reshape(-1, 1, 1)
        return (x - lo_t) / span_t
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    return ((x - lo.reshape(-1, 1, 1).astype(dtype)) / span.reshape(-1, 1, 1).astype(dtype)
            ).astype(dtype, copy=False)


# ---------------------------------------------------------------- build from scenes


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


def read_labels(labels_path: str | os.PathLike) -> Any:
    """Labelled points (GeoPackage, or anything pyogrio reads) with checked columns."""
    import geopandas as gpd

    labels_path = Path(labels_path)
    if not labels_path.exists():
        raise InputError(labels_path, "labels file does not exist")
    try:
        gdf = gpd.read_file(labels_path)
    except Exception as exc:  # pyogrio raises several types
        raise InputError(labels_path, f"cannot read labels: {exc}".splitlines()[0]) from None
    missing = [c for c in ("class", "glacier", "scene_id") if c not in gdf.columns]
    if missing:
        raise InputError(labels_path, f"labels lack column(s) {missing}")
    if gdf.crs is None:
        raise InputError(labels_path, "labels have no CRS")
    if len(gdf) == 0:
        raise InputError(labels_path, "no labelled points")
    if not (gdf.geometry.geom_type == "Point").all():
        raise InputError(labels_path, "labels must be points")
    for code, name in enumerate(gdf["class"].astype(str)):
        if name not in CLASS_NAMES:
            raise InputError(labels_path, f"unknown class {name!r} (row {code}); "
                                          f"known: {', '.join(CLASS_NAMES)}")
    return gdf


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
) -> PatchSet:
    """Sample S×S patches of the feature stack at every labelled point.

    Points are matched to scenes by `scene_id`, reprojected to the scene CRS and cut around
    their pixel. Points whose window crosses the scene edge or holds invalid (non-finite)
    pixels are skipped with a warning, and counted in `provenance["summary"]`. Labels whose
    scene is not given, or that lie outside their scene, raise InputError. With `out_dir`
    the patches are written straight to disk (never all in RAM) and the set is returned
    memory-mapped.
    """
    from rasterio.transform import rowcol
    from tqdm import tqdm

    from glacierfacies import scene as scene_mod
    from glacierfacies.scene import build_feature_stack, read_scene

    patch_size = check_patch_size(patch_size)
    dt = check_dtype(dtype)
    try:
        feature_names = resolve_features(features)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    fidx = [FEATURE_NAMES.index(n) for n in feature_names]
    gdf = read_labels(labels_path)
    if fold_column is not None and fold_column not in gdf.columns:
        raise InputError(labels_path, f"fold column {fold_column!r} not in labels")
    scene_ids = gdf["scene_id"].astype(str).to_numpy()
    if fold_column is None:  # fail before the slow sampling when k > number of glaciers
        assign_folds(gdf["glacier"].astype(str).to_numpy(), k_folds, seed, labels_path)

    if hasattr(scene_mod, "scene_ids"):  # ids from names/metadata, no pixels read
        ids = [str(s) for s in scene_mod.scene_ids(scene_paths)]
    else:
        ids = [str(read_scene(p).scene_id) for p in scene_paths]
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
            sc = read_scene(scenes[sid])
            stack = build_feature_stack(sc, dem_path, outlines_path)
            feats = np.asarray(stack.features)[fidx]
            rows_i = np.flatnonzero(scene_ids == sid)
            pts = gdf.geometry.iloc[rows_i].to_crs(stack.crs)
            x, y = pts.x.to_numpy(), pts.y.to_numpy()
            r, c = rowcol(stack.transform, x, y)
            r, c = np.asarray(r), np.asarray(c)
            height, width = feats.shape[1:]
            outside = (r < 0) | (c < 0) | (r >= height) | (c >= width)
            if outside.any():
                raise InputError(labels_path, f"{int(outside.sum())} label(s) of scene {sid} "
                                              f"lie outside it (e.g. point at x={x[outside][0]:.1f}, "
                                              f"y={y[outside][0]:.1f} in {stack.crs})")
            windows, usable, edge = sample_windows(feats, r, c, patch_size)
            store[rows_i[usable]] = windows.astype(dt, copy=False)
            keep[rows_i[usable]] = True
            xs[rows_i], ys[rows_i] = x, y
            crs_txt[rows_i] = stack.crs.to_string()
            sensors[rows_i] = str(getattr(sc, "sensor", ""))
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

