"""PatchSet: the packed, memory-mapped store of labelled patches, and its writer."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glacierfacies._io import atomic_output, to_json
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.data.folds import validation_fold
from glacierfacies.errors import InputError
from glacierfacies.features import resolve_features

if TYPE_CHECKING:
    import pandas as pd


__all__ = ["CHUNK", "DTYPES", "META_VERSION", "STR_COLUMNS", "TABLE_COLUMNS", "PatchSet",
           "PatchSetWriter", "check_dtype", "check_patch_size", "labels_from_names", "load_arrays",
           "normalise_table"]


TABLE_COLUMNS: tuple[str, ...] = (
    "class", "glacier", "scene_id", "date", "sensor", "region", "fold", "x", "y", "crs",
    "point_id",
)


STR_COLUMNS = ("class", "glacier", "scene_id", "date", "sensor", "region", "crs", "point_id")


DTYPES = ("float32", "float16")


META_VERSION = 1


CHUNK = 4096  # patches per chunk when streaming over a memory map


def check_patch_size(patch_size: int) -> int:
    """The patch size a PatchSet may hold: odd (a centre pixel) and 1..65 (the paper uses 33);
    InputError otherwise. Whether a network takes it is `model.network.pooled_grid_size`."""
    s = int(patch_size)
    if s != patch_size or s < 1 or s > 65 or s % 2 == 0:
        raise InputError(None, f"patch size must be odd and in 1..65, got {patch_size}")
    return s


def check_dtype(dtype: str | np.dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise InputError(None, f"patch dtype must be one of {DTYPES}, got {dt.name}")
    return dt


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
        try:
            patches = np.load(path / "patches.npy", mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:  # e.g. cut short by an interrupted write
            raise InputError(path / "patches.npy", f"cannot read patches ({exc})") from None
        try:
            table = pd.read_parquet(path / "table.parquet")
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            raise InputError(path / "table.parquet",
                             f"cannot read table ({str(exc).splitlines()[0]})") from None
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
        with contextlib.ExitStack() as stack:  # closed (temporary folder removed) on error
            self.tmp = stack.enter_context(atomic_output(self.dest, overwrite=self.overwrite))
            self.tmp.mkdir()
            shape = (self.n, len(self.feature_names), self.patch_size, self.patch_size)
            self.patches = np.lib.format.open_memmap(self.tmp / "patches.npy", mode="w+",
                                                     dtype=self.dtype, shape=shape)
            self._output = stack.pop_all()
        return self

    def shrink(self, keep: np.ndarray) -> None:
        """Keep only rows `keep` (indices or mask), copying in chunks into a new file."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            keep = np.flatnonzero(keep)
        if len(keep) == self.n and np.array_equal(keep, np.arange(self.n)):
            return
        old = self.patches
        with atomic_output(self.tmp / "patches.npy") as new_path:
            new = np.lib.format.open_memmap(new_path, mode="w+", dtype=self.dtype,
                                            shape=(len(keep), *old.shape[1:]))
            for start in range(0, len(keep), CHUNK):
                new[start:start + CHUNK] = old[keep[start:start + CHUNK]]
            new.flush()
            del new, old
            self.patches = None
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
        (self.tmp / "meta.json").write_text(to_json(meta, indent=1))
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> None:
        """Rename the folder onto `dest` (`_io.atomic_output`) or, on error, remove it."""
        self.patches = None
        if exc_type is None and not self._finished:
            error = RuntimeError("PatchSetWriter: finish() was not called")
            self._output.__exit__(RuntimeError, error, None)
            raise error
        self._output.__exit__(exc_type, exc, tb)
