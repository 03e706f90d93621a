"""The run configuration's schema: every key's type and range, checked before anything runs.

`check_config` turns a wrong type (`k_folds: 2.5`, `patch_size: big`, `scenes: 5`), a value
out of range (`min_observed: 1.5`), a text where a switch belongs (`smoothing: "no"`) or
an unknown key (with a "did you mean") into one InputError naming the configuration file,
so a bad configuration stops before the first stage writes anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from glacierfacies.errors import InputError

__all__ = ["SCHEMA", "check_config", "did_you_mean"]

Check = Callable[[Any], str | None]  # None when the value is fine, else what is wrong


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """' (did you mean `x`?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not _is_int(v):
            return "must be a whole number"
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"must be in {lo}..{hi}" if hi is not None else f"must be >= {lo}"
        return None
    return check


def _number(lo: float | None = None, hi: float | None = None, optional: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if not _is_number(v):
            return "must be a number" + (" or null" if optional else "")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"must be in [{lo}, {hi}]" if hi is not None else f"must be >= {lo}"
        return None
    return check


def _boolean(v: Any) -> str | None:
    if not isinstance(v, bool):
        return "must be true or false (unquoted)"
    return None


def _choice(*values: Any, optional: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if v not in values or isinstance(v, bool):
            return f"must be one of {', '.join(map(repr, values))}"
        return None
    return check


def _text(optional: bool = True) -> Check:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v.strip():
            return "must be a path (text)" + (" or null" if optional else "")
        return None
    return check


def _scenes(v: Any) -> str | None:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) and s.strip()
                                                       for s in items):
        return "must be a path or glob, or a list of them"
    return None


def _features(v: Any) -> str | None:
    from glacierfacies.features import resolve_features

    if not isinstance(v, str):
        return "must be a feature set name or a comma list of features"
    try:
        resolve_features(v)
    except (ValueError, KeyError) as exc:
        return str(exc).splitlines()[0]
    return None


def _buffer(v: Any) -> str | None:
    from glacierfacies.mapping.config import parse_buffer

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return "must be a distance such as 50m or 0.1km"
    try:
        parse_buffer(v)
    except ValueError as exc:
        return str(exc)
    return None


def _device(v: Any) -> str | None:
    import re

    if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
        return "must be auto, cpu, cuda or cuda:N"
    return None


def _band_map(v: Any) -> str | None:
    if v is None or isinstance(v, str) and v.strip():
        return None
    if isinstance(v, Mapping) and all(isinstance(k, str) and _is_int(b) for k, b in v.items()):
        return None
    return "must be text (blue=1,green=2,...) or a mapping of band names to band numbers"


def _training(v: Any) -> str | None:
    from glacierfacies.training.config import TrainConfig

    if not isinstance(v, Mapping):
        return "must be a mapping of training settings"
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in v:
        if key not in known:
            return f"unknown setting `{key}`{did_you_mean(key, known)}"
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for key, value in v.items():
        t = str(types[key])
        if t.startswith("int") and not (value is None and "None" in t) and not _is_int(value):
            return f"`{key}` must be a whole number, got {value!r}"
        if t.startswith("float") and not (value is None and "None" in t) and not _is_number(value):
            return f"`{key}` must be a number, got {value!r}"
        if t == "bool" and not isinstance(value, bool):
            return f"`{key}` must be true or false, got {value!r}"
        if t == "str" and not isinstance(value, str):
            return f"`{key}` must be text, got {value!r}"
    return None


#: key -> check of its value (None = fine)
SCHEMA: dict[str, Check] = {
    "scenes": _scenes,
    "dem": _text(), "outlines": _text(), "labels": _text(), "wgms": _text(),
    "seed": _integer(0),
    "patch_size": _integer(1, 65),
    "features": _features,
    "k_folds": _integer(2, 100),
    "training": _training,
    "training_preset": _choice("sample", "paper", optional=True),
    "buffer": _buffer,
    "tile_size": _integer(64, 65536),
    "device": _device,
    "smoothing": _boolean,
    "min_observed": _number(0, 1),
    "include_refrozen": _boolean,
    "accumulation": _choice("snow", "snow+firn"),
    "min_years": _integer(3),
    "band_map": _band_map,
    "scale": _number(optional=True), "offset": _number(optional=True),
    "nodata": _number(optional=True),
    "product_mask": _boolean, "mask_saturated": _boolean,
    "s2_offset": _number(optional=True),
    "resolution": _choice(10, 20, 30),
    "fill_gaps": _integer(0, 64),
}


def check_config(raw: Mapping[str, Any], path: str | Path | None) -> None:
    """One InputError naming `path` for the first bad key of a run configuration: unknown
    (with a "did you mean"), of the wrong type or out of range; then the patch size against
    the network the training settings build."""
    from glacierfacies.workflow.config import RunConfig

    known = [f.name for f in dataclasses.fields(RunConfig)]
    assert set(known) == set(SCHEMA), "the schema must name every RunConfig field"
    unknown = [k for k in raw if k not in SCHEMA]
    if unknown:
        k = unknown[0]
        raise InputError(path, f"unknown configuration key `{k}`{did_you_mean(k, known)}"
                               + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    for key, value in raw.items():
        problem = SCHEMA[key](value)
        if problem:
            raise InputError(path, f"`{key}` {problem}, got {value!r}"
                             if problem.startswith("must") else f"`{key}`: {problem}")
    if "patch_size" in raw:
        from glacierfacies.model.network import pooled_grid_size

        training = raw.get("training") or {}
        try:
            pooled_grid_size(raw["patch_size"], training.get("fine_depth", 3),
                             training.get("coarse_depth", 3))
        except ValueError as exc:
            raise InputError(path, f"`patch_size`: {exc}") from None
