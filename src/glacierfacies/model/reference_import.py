"""Import the paper's published fold models as glacierfacies model cards (weights left in place).

`models import-reference PATH -o DIR` reads a clone of the authors' repository
(konstantin-a-maslov/glacier_facies_classification) or a folder of their `.h5` files and
writes, per fold, a card `foldK.json` (features in the reference's order, our classes, patch
size 33, normalisation and where it came from, the weights file's path and sha256, GPL v2)
plus `model.json` for the ensemble. The weights are never copied: the cards point at the
user's files, which `model.card.load_model` reads (and checks by hash) where they lie.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import sweep_temporaries, temp_prefix
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.errors import InputError, ModelMismatchError
from glacierfacies.model.card import ModelCard
from glacierfacies.model.reference import PATCH, REFERENCE_FEATURE_SETS
from glacierfacies.model.reference_h5 import feature_set_of, file_sha256, reference_from_h5

__all__ = ["find_fold_files", "import_reference", "read_minmax_pickle"]

LICENCE = "GPL-2.0 (the authors' repository; weights are read in place, never copied)"
SOURCE = ("Maslov et al. (2026), Automating glacier facies classification: pan-European "
          "dataset and deep learning baseline, EarthArXiv, doi:10.31223/X5QN1V; code and "
          "weights: github.com/konstantin-a-maslov/glacier_facies_classification")
_FOLD_FILE = re.compile(r"^(\d+)_cnn_afterconfidentlearning_weights\.h5$")


def _fold_files_in(folder: Path) -> dict[int, Path]:
    out = {}
    for p in sorted(folder.glob("*.h5")):
        m = _FOLD_FILE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


def find_fold_files(path: Path, feature_set: int | None) -> tuple[dict[int, Path], int]:
    """({fold: .h5 file}, feature set) from a repository clone or a folder of .h5 files.

    Looks in PATH/weights/<SET>/, PATH/weights/ (the repository's top-level set-4 files),
    then PATH itself; the files' own input width decides their set, and a set other than
    the one asked for is an error naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "not a folder (give a clone of the authors' repository or a "
                               "folder of their .h5 files)")
    candidates = []
    if feature_set is not None:
        candidates.append(path / "weights" / str(feature_set))
    candidates += [path / "weights", path]
    for folder in candidates:
        files = _fold_files_in(folder) if folder.is_dir() else {}
        if files:
            break
    else:
        raise InputError(path, "no <FOLD>_cnn_afterconfidentlearning_weights.h5 files found "
                               "(looked in weights/<SET>/, weights/ and the folder itself)")
    sets = {}
    for fold, f in files.items():
        model = reference_from_h5(f)
        sets[fold] = feature_set_of(model.n_features)
        if feature_set is not None and sets[fold] != feature_set:
            raise ModelMismatchError(f, f"weights of feature set {sets[fold]} "
                                        f"({model.n_features} inputs), but --feature-set "
                                        f"{feature_set} was asked")
    found = set(sets.values())
    if len(found) != 1:
        raise InputError(path, f"the .h5 files mix feature sets {sorted(found)}")
    return files, found.pop()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: a pickle can run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("builtins", "list"), ("builtins", "tuple"),
                ("builtins", "dict"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_minmax_pickle(path: str | os.PathLike, n_features: int) -> dict[str, list[float]]:
    """The authors' globalminmax.pickle: (min, max), {'min', 'max'} or a (2, F) array; F the
    model's inputs (or all 11 features, of which the model's are taken by the caller)."""
    path = Path(path)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as exc:  # truncated, foreign or unsafe pickles raise many types
        raise InputError(path, f"cannot read the min-max pickle: {str(exc).splitlines()[0]}"
                         ) from None
    if isinstance(obj, dict):
        keys = {str(k).lower(): v for k, v in obj.items()}
        lo, hi = keys.get("min"), keys.get("max")
    elif isinstance(obj, list | tuple) and len(obj) == 2:
        lo, hi = obj
    else:
        arr = np.asarray(obj, dtype=object)
        lo, hi = (arr[0], arr[1]) if arr.ndim >= 1 and len(arr) == 2 else (None, None)
    try:
        lo = np.asarray(lo, dtype=np.float64).reshape(-1)
        hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or hi is None or lo.size == 0:
        raise InputError(path, "min-max pickle holds no (min, max) pair of arrays")
    if lo.size != hi.size or lo.size != n_features:
        raise InputError(path, f"min-max pickle has {lo.size} minima and {hi.size} maxima; "
                               f"the model takes {n_features} features")
    bad = np.flatnonzero(~(hi > lo))
    if bad.size:
        raise InputError(path, f"min-max pickle has max <= min for feature(s) "
                               f"{', '.join(map(str, bad))}")
    return {"min": lo.tolist(), "max": hi.tolist()}


def _minmax_from_dataset(folder: Path, features: tuple[str, ...]) -> dict[str, list[float]]:
    """Per-feature min and max over all patches of a PatchSet (as the reference computed its
    globalminmax over the training patches)."""
    from glacierfacies.data.normalisation import fit_minmax
    from glacierfacies.data.patchset import PatchSet

    ps = PatchSet.load(folder)
    names = list(ps.feature_names)
    missing = [f for f in features if f not in names]
    if missing:
        raise ModelMismatchError(folder, f"dataset lacks feature(s) {', '.join(missing)} of "
                                         f"the reference model")
    full = fit_minmax(ps, np.arange(len(ps)))
    idx = [names.index(f) for f in features]
    return {"min": [full["min"][i] for i in idx], "max": [full["max"][i] for i in idx]}


def _git_commit(path: Path) -> str | None:
    if not (path / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def import_reference(path: str | os.PathLike, out_dir: str | os.PathLike, *,
                     feature_set: int | None = None, minmax: str | os.PathLike | None = None,
                     dataset: str | os.PathLike | None = None, mode: str = "exact",
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the fold cards and the ensemble card of one feature set into OUT_DIR (atomic:
    a temporary folder renamed at the end). Returns the ensemble card. `mode` "dense" makes
    the cards run the dense approximation (`ReferenceCNN.approx_logits`) instead of the
    exact per-patch network."""
    if mode not in ("exact", "dense"):
        raise InputError(None, f"unknown mode {mode!r} (exact or dense)")
    path, out_dir = Path(path).resolve(), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InputError(out_dir, "output exists; pass --overwrite to replace it")
    if minmax is not None and dataset is not None:
        raise InputError(minmax, "give either a min-max pickle or a dataset, not both")
    files, fset = find_fold_files(path, feature_set)
    features = REFERENCE_FEATURE_SETS[fset]
    models = {fold: reference_from_h5(f) for fold, f in files.items()}
    if minmax is not None:
        norm = read_minmax_pickle(minmax, len(features))
        norm_info = {"method": "authors' file", "source": str(Path(minmax).resolve()),
                     "sha256": file_sha256(minmax)}
    elif dataset is not None:
        norm = _minmax_from_dataset(Path(dataset), features)
        norm_info = {"method": "dataset", "source": str(Path(dataset).resolve()),
                     "note": "per-feature min and max over all patches of the dataset"}
    else:
        from glacierfacies.model.reference_norm import recovered_minmax

        rec = recovered_minmax(list(models.values()), fset)
        norm = {"min": list(rec["min"]), "max": list(rec["max"])}
        norm_info = {"method": "recovered", "details": rec.get("details", {}),
                     "note": "recovered from the weights' BatchNorm statistics and a fit on "
                             "real training points (docs/models.md)"}
    prescale = None
    if "elevation" in features:
        prescale = {"elevation": "outline_minmax"}
        if "proximity" in features:
            prescale["proximity"] = "max"
    commit = _git_commit(path)
    calib_dir = next((d for d in (path / "confidence_calibration_models",
                                  path.parent / "confidence_calibration_models") if d.is_dir()),
                     None)
    members = []
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir), suffix=".tmp", dir=out_dir.parent))
    try:
        for fold, f in sorted(files.items()):
            calib = {"method": "none",
                     "note": "softmax probabilities as the network gives them"}
            cal_file = calib_dir / f"{fold}_calibration_model.pickle" if calib_dir else None
            if cal_file is not None and cal_file.is_file():
                calib["reference_kernel_ridge"] = {"path": str(cal_file),
                                                   "sha256": file_sha256(cal_file),
                                                   "applied": False}
            card = ModelCard(
                features=list(features), classes=list(CLASS_NAMES), patch_size=PATCH,
                normalisation={**norm, **norm_info},
                architecture={"type": "reference", "mode": mode, **models[fold].kwargs},
                training={"source": SOURCE, "feature_set": fset, "fold": fold,
                          "round": "after confident learning", "commit": commit},
                calibration=calib, fold={"index": fold}, resolution_m=10.0,
                weights={"path": str(f), "sha256": file_sha256(f), "licence": LICENCE},
                prescale=prescale,
            )
            (tmp / f"fold{fold}.json").write_text(card.to_json())
            members.append(f"fold{fold}.json")
        ensemble = {
            "kind": "reference", "mode": mode, "feature_set": fset, "features": list(features),
            "classes": list(CLASS_NAMES), "patch_size": PATCH, "members": members,
            "normalisation": {**norm, **norm_info}, "prescale": prescale,
            "source": SOURCE, "source_path": str(path), "commit": commit,
            "weights_sha256": {f.name: file_sha256(f) for f in files.values()},
            "licence": LICENCE,
        }
        (tmp / "model.json").write_text(json.dumps(ensemble, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ensemble
