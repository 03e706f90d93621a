"""Built-in models shipped inside the package: `--model builtin:NAME` on every command.

Each built-in model is a small spectral ensemble (patch size 1, the six optical bands): the
fold models of the training protocol run on real labelled points, in `builtin/NAME/` as
`foldK.pt` + `foldK.json` (the usual model files) beside `model.json`, the card of the whole
ensemble (training data, licence, attribution, rebuild command, leave-one-glacier-out
scores). `glacierfacies models` lists them; `make models` rebuilds them
(docs/models.md). Pure: paths and JSON only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glacierfacies.errors import InputError

__all__ = ["BUILTIN_DIR", "BUILTIN_MODELS", "PREFIX", "BuiltinSpec", "builtin_card",
           "builtin_files", "is_builtin", "resolve_models", "sensor_family", "sensor_warning"]

BUILTIN_DIR = Path(__file__).resolve().parent
PREFIX = "builtin:"
#: Aberle et al.'s class codes -> ours (docs/real-data.md: rock is debris, shadowed snow shadow)
ABERLE_CLASS_MAP = "1=snow,2=shadow,3=ice,4=debris,5=water"


@dataclass(frozen=True)
class BuiltinSpec:
    """What a built-in model is for and how it is rebuilt from ../shared/data/aberle."""

    name: str
    sensors: tuple[str, ...]
    table: str  # file in the Aberle folder
    bands: str  # a `data.points.SENSOR_BAND_COLUMNS` preset
    offset: float | None
    nir: str  # the NIR band the model was trained on, and why
    class_map: str = ABERLE_CLASS_MAP
    glacier_column: str = "site_name"
    #: TrainConfig fields changed from the `sample` preset (docs/models.md says why)
    train: tuple[tuple[str, float], ...] = ()


BUILTIN_MODELS: dict[str, BuiltinSpec] = {
    "landsat": BuiltinSpec(
        "landsat", ("Landsat 8/9 Collection 2 Level 2", "HLS v2.0 L30"),
        "Landsat_training_data.csv", "landsat89", -0.2,
        "OLI band 5 (SR_B5); the points are DN x 2.75e-5 without the C2 offset, hence -0.2",
        train=(("brightness", 0.1),)),
    "sentinel2": BuiltinSpec(
        "sentinel2", ("Sentinel-2 L2A", "HLS v2.0 S30"),
        "Sentinel-2_SR_training_data.csv", "sentinel2", None,
        "B8 (10 m broad NIR, what L2A products give as B08); HLS S30's B8A maps as well "
        "(docs/models.md)",
        train=(("dropout", 0.1), ("class_weight_power", 0.5))),
}


def is_builtin(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(PREFIX)


def _name(spec: str | os.PathLike) -> str:
    name = str(spec)[len(PREFIX):]
    if name not in BUILTIN_MODELS:
        raise InputError(spec, f"unknown built-in model; known: "
                               f"{', '.join(PREFIX + n for n in BUILTIN_MODELS)}")
    return name


def builtin_files(spec: str | os.PathLike) -> list[Path]:
    """The fold model files (.pt) of `builtin:NAME` (or NAME), in fold order."""
    name = _name(spec if is_builtin(spec) else PREFIX + str(spec))
    files = sorted((BUILTIN_DIR / name).glob("fold*.pt"))
    if not files:
        raise InputError(BUILTIN_DIR / name, "built-in model files are not installed "
                                             "(package data missing; run `make models`)")
    return files


def model_folder_files(folder: Path) -> list[Path]:
    """The fold model cards of a model folder (an imported reference ensemble, a
    `train` run's models/): foldK.json in fold order.

    A folder is a model only when finished: a `train` run's models/ holds `complete.json`
    (written after its last fold), an imported or built ensemble its `model.json`; a
    folder of a killed training (4 of 6 folds) is refused, naming what is missing."""
    from glacierfacies.layout import COMPLETE_MARKER

    files = sorted(folder.glob("fold*.json"))
    if not files:
        raise InputError(folder, "model folder holds no foldK.json model cards")
    marker = folder / COMPLETE_MARKER
    if marker.is_file():
        try:
            listed = [folder / Path(str(n)).with_suffix(".json").name
                      for n in json.loads(marker.read_text())["models"]]
        except (ValueError, KeyError, TypeError):
            raise InputError(marker, "unreadable model-folder marker; rerun train") from None
        absent = [p.name for p in listed if not p.is_file()]
        if absent:
            raise InputError(folder, f"model folder lacks {', '.join(absent)} that its "
                                     f"{COMPLETE_MARKER} lists")
        return listed
    if (folder / "model.json").is_file():
        return files
    raise InputError(folder, f"incomplete model folder: {len(files)} fold model(s) but no "
                             f"{COMPLETE_MARKER}, which training writes after its last fold "
                             "(an interrupted `train`? rerun it to finish; or give the "
                             "fold files one by one)")


def resolve_models(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Model paths with every `builtin:NAME` and every model folder expanded into its fold
    models (an ensemble)."""
    out: list[Path] = []
    for s in specs:
        if is_builtin(s):
            out.extend(builtin_files(s))
        elif Path(s).is_dir():
            out.extend(model_folder_files(Path(s)))
        else:
            out.append(Path(s))
    return out


def sensor_family(sensor: str) -> str | None:
    """'landsat' or 'sentinel2' for a scene's sensor name (landsat8, hls-l30, sentinel2,
    hls-s30, ...), else None (a generic stack: nothing to compare)."""
    s = str(sensor).lower().replace("-", "").replace("_", "")
    if "landsat" in s or "l30" in s:
        return "landsat"
    if "sentinel2" in s or "s30" in s:
        return "sentinel2"
    return None


def sensor_warning(models: Sequence[str | os.PathLike], sensor: str) -> str | None:
    """The warning for built-in models applied to a scene of another sensor family than
    their card names (a model of Landsat reflectance on a Sentinel-2 scene), else None."""
    family = sensor_family(sensor)
    if family is None:
        return None
    for m in models:
        if is_builtin(m):
            name = _name(m)
            if name != family:
                return (f"{m} was trained on {' and '.join(BUILTIN_MODELS[name].sensors)}, "
                        f"this scene is {sensor}: expect biased classes (use "
                        f"{PREFIX}{family})")
    return None


def builtin_card(spec: str | os.PathLike) -> dict[str, Any]:
    """The ensemble card (`model.json`) of `builtin:NAME` (or NAME)."""
    name = _name(spec if is_builtin(spec) else PREFIX + str(spec))
    path = BUILTIN_DIR / name / "model.json"
    if not path.is_file():
        raise InputError(path, "built-in model card is not installed (run `make models`)")
    return json.loads(path.read_text())
