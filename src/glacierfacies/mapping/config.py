"""What a map run is configured with: buffer, device, tiles, smoothing."""

from __future__ import annotations

import os
import re

import numpy as np

from glacierfacies.errors import InputError

PathLike = str | os.PathLike


def parse_buffer(text: str | float | int | None) -> float:
    """'50m', '50 m', '0.05km' or a number (metres) -> metres (>= 0); ValueError otherwise."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m|km)?\s*", str(text).lower())
        if not m:
            raise ValueError(f"cannot read buffer {text!r}; use e.g. 50m or 0.1km")
        value = float(m.group(1)) * (1000.0 if m.group(2) == "km" else 1.0)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"buffer must be >= 0 m, got {text!r}")
    return value


def check_device(device: str) -> str:
    """Validate --device early (before any reading); InputError on unknown/unavailable."""
    from glacierfacies.mapping.inference import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    return device

