"""The model file: a state dict plus a card of features, classes, normalisation and calibration."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glacierfacies._io import atomic_output, write_text
from glacierfacies._io import to_json as _to_json
from glacierfacies.errors import InputError, ModelMismatchError
from glacierfacies.features import FEATURE_NAMES
from glacierfacies.model.network import TwoScaleCNN

__all__ = ["ModelCard", "check_resolution", "load_members", "load_model", "save_model",
           "trained_classes"]

PathLike = str | os.PathLike


@dataclass
class ModelCard:
    """What a model file needs to be used correctly: inputs, classes, calibration, scores."""

    features: list[str]
    classes: list[str]
    patch_size: int
    normalisation: dict[str, list[float]]
    architecture: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    metrics: dict[str, Any] = field(default_factory=dict)
    fold: dict[str, Any] = field(default_factory=dict)
    resolution_m: float = 10.0  # the grid of the training scenes (ReadOptions.resolution_m)
    #: weights read where they lie (the paper's Keras files: path, sha256, licence), else None
    weights: dict[str, Any] | None = None
    #: scene-wise pre-scaling before min-max ({"elevation": "outline_minmax",
    #: "proximity": "max"}: the reference's apply.py), else None
    prescale: dict[str, str] | None = None
    path: str | None = None

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("path")
        return _to_json(d, indent=2)

    @classmethod
    def from_json(cls, text: str, path: str | None = None) -> ModelCard:
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)} - {"path"}
        return cls(**{k: v for k, v in d.items() if k in known}, path=path)

    def check_features(self, names: Sequence[str], source: str | os.PathLike | None = None) -> None:
        """One-line ModelMismatchError when the data's features are not the model's (order
        matters)."""
        names = list(names)
        if names != list(self.features):
            missing = [n for n in self.features if n not in names]
            detail = f"missing {missing}" if missing else "in a different order"
            raise ModelMismatchError(
                source or self.path,
                f"model expects features {','.join(self.features)} but the data has "
                f"{','.join(names)} ({detail})",
            )

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))


def check_resolution(model_paths: Sequence[PathLike], resolution_m: float) -> None:
    """ModelMismatchError naming the model when it was trained on another grid than the one
    the scenes are read onto (cards without the field are 10 m); `builtin:NAME` is checked
    through its fold models, as `load_members` loads them."""
    from glacierfacies.model.builtin import resolve_models

    for path in resolve_models(model_paths):
        js = Path(path).with_suffix(".json")
        if not js.is_file():
            continue  # load_model says what is missing
        try:
            trained = float(json.loads(js.read_text()).get("resolution_m", 10.0))
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
            continue  # load_model says the card is invalid
        if trained != float(resolution_m):
            raise ModelMismatchError(path, f"model was trained on a {trained:g} m grid, but "
                                           f"scenes are read on {float(resolution_m):g} m "
                                           f"(--resolution {trained:g})")


def save_model(model: TwoScaleCNN, card: ModelCard, path: str | os.PathLike) -> Path:
    """Write PATH (state_dict, .pt) and the card beside it (.json), both atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    write_text(path.with_suffix(".json"), card.to_json())
    return path


def _load_reference(card: ModelCard, js: Path) -> torch.nn.Module:
    """The paper's network from the Keras file the card points to (checked by its hash)."""
    from glacierfacies.model.reference_h5 import file_sha256, reference_from_h5

    src = Path(str((card.weights or {}).get("path", "")))
    if not src.is_file():
        raise InputError(js, f"the model's weights file {src} is missing (imported models read "
                             f"the authors' .h5 where it lies; re-run models import-reference)")
    want = (card.weights or {}).get("sha256")
    if want and file_sha256(src) != want:
        raise InputError(src, "weights file changed since it was imported (sha256 differs); "
                              "re-run models import-reference")
    model = reference_from_h5(src)
    mode = card.architecture.get("mode", "exact")
    if mode not in model.MODES:
        raise InputError(js, f"unknown reference mode {mode!r} (one of {', '.join(model.MODES)})")
    model.mode = mode
    if model.n_features != len(card.features):
        raise ModelMismatchError(src, f"weights take {model.n_features} features, the card "
                                      f"lists {len(card.features)}")
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[torch.nn.Module, ModelCard]:
    """(model in eval mode, card) from foldK.pt or foldK.json (an imported reference model
    has only the card: its weights stay in the authors' file)."""
    path = Path(path)
    pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
    if js.is_file() and not pt.is_file():
        card = read_card(js)
        if card.architecture.get("type") == "reference":
            return _load_reference(card, js).to(device).eval(), card
    for p in (pt, js):
        if not p.is_file():
            raise InputError(p, "model file not found (need foldK.pt and its foldK.json card)")
    card = read_card(js)
    if card.architecture.get("type") == "reference":
        return _load_reference(card, js).to(device).eval(), card
    try:
        model = TwoScaleCNN(**card.architecture)
    except (TypeError, ValueError) as exc:
        raise InputError(js, f"invalid model card architecture: {_first_line(exc)}") from None
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises several types for bad files
        raise InputError(pt, f"cannot load weights: {_first_line(exc)}") from None
    return model.to(device).eval(), card


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_card(js: Path) -> ModelCard:
    """The model card foldK.json, its fields checked: a one-line InputError naming it when it
    is not JSON text, not a card, or holds fields of the wrong type."""
    try:
        card = ModelCard.from_json(js.read_text(encoding="utf-8"), path=str(js))
    except (ValueError, TypeError, AttributeError) as exc:  # JSON, UTF-8, not a mapping
        raise InputError(js, f"invalid model card: {_first_line(exc)}") from None
    names = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    norm = card.normalisation
    numbers = lambda v: isinstance(v, list) and all(  # noqa: E731
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    problems = [
        name for name, ok in (
            ("features", names(card.features) and card.features),
            ("classes", names(card.classes) and card.classes),
            ("patch_size", isinstance(card.patch_size, int) and card.patch_size >= 1),
            ("architecture", isinstance(card.architecture, dict)),
            ("normalisation", norm is None or (isinstance(norm, dict) and numbers(norm.get("min"))
                                               and numbers(norm.get("max")) and
                                               len(norm["min"]) == len(norm["max"]) ==
                                               len(card.features or []))),
            ("calibration", isinstance(card.calibration, dict) and (
                "temperature" not in card.calibration or (
                    isinstance(card.calibration["temperature"], (int, float))
                    and card.calibration["temperature"] > 0))),
        ) if not ok]
    if problems:
        raise InputError(js, f"invalid model card: bad {', '.join(problems)}")
    return card


def _card_get(card: Any, key: str, default: Any = None) -> Any:
    if isinstance(card, dict):
        return card.get(key, default)
    return getattr(card, key, default)


def load_members(model_paths: Sequence[PathLike]) -> list:
    """Load fold models and their cards into `inference.Member`s (features, norm, temperature).

    A model that expects a feature this run cannot build is a one-line ModelMismatchError
    naming it. `builtin:NAME` stands for the fold models of a built-in model.
    """
    from glacierfacies.model.builtin import resolve_models
    from glacierfacies.model.member import Member

    if not model_paths:
        raise InputError(None, "no model given (--model)")
    model_paths = resolve_models(model_paths)
    members = []
    for path in model_paths:
        if not Path(path).exists():
            raise InputError(path, "model file does not exist")
        model, card = load_model(path)
        names = list(_card_get(card, "features") or [])
        missing = [n for n in names if n not in FEATURE_NAMES]
        if missing or not names:
            raise ModelMismatchError(
                path,
                f"model expects feature(s) {missing or names} that mapping cannot build "
                f"(available: {', '.join(FEATURE_NAMES)})",
            )
        norm = _card_get(card, "normalisation")
        calib = _card_get(card, "calibration") or {}
        temperature = float(calib.get("temperature", 1.0)) if isinstance(calib, dict) else 1.0
        members.append(
            Member(
                model=model,
                temperature=temperature,
                feature_index=[FEATURE_NAMES.index(n) for n in names],
                minimum=None if norm is None else list(norm["min"]),
                maximum=None if norm is None else list(norm["max"]),
                prescale=_card_get(card, "prescale"),
            )
        )
    sizes = {m.patch_size for m in members}
    if len(sizes) > 1:
        raise ModelMismatchError(model_paths[0],
                                 f"ensemble models have different patch sizes {sizes}")
    return members



def trained_classes(model_specs: Sequence[PathLike]) -> list[str] | None:
    """The classes an ensemble can predict: the union of what its members were trained on.

    From an ensemble card's ``classes_trained`` (`builtin:NAME`, a model folder's
    ``model.json``), else each fold card's ``fold.classes_trained``, else a ``model.json``
    beside the fold file, else the card's ``classes`` (an imported reference model: all 8).
    None when no card says (the map then makes no claim). Pure JSON reading.
    """
    from glacierfacies.model.builtin import builtin_card, is_builtin

    found: set[str] = set()
    for spec in model_specs:
        if is_builtin(spec):
            classes = builtin_card(spec).get("classes_trained")
            if not classes:
                return None
            found.update(classes)
            continue
        path = Path(spec)
        cards = sorted(path.glob("fold*.json")) if path.is_dir() else [path.with_suffix(".json")]
        ensemble = (path if path.is_dir() else path.parent) / "model.json"
        ens = _read_json(ensemble).get("classes_trained") if ensemble.is_file() else None
        if path.is_dir() and ens:
            found.update(ens)
            continue
        for js in cards:
            card = _read_json(js) if js.is_file() else {}
            classes = ((card.get("fold") or {}).get("classes_trained") or ens
                       or card.get("classes"))
            if not classes:
                return None
            found.update(classes)
    return sorted(found) if found else None


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}
