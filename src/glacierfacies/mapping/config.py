"""What a map run is configured with: buffer, device, tiles, smoothing."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

import numpy as np

from glacierfacies.errors import InputError
from glacierfacies.scenes.options import ReadOptions

__all__ = ["MapConfig", "PathLike", "check_device", "parse_buffer"]

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



CONFIDENCE_DTYPES = ("uint8", "float32")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class MapConfig:
    """How a scene is mapped; shared by `map`, `map-many` and the main job's configuration.

    `buffer` is text ('50m', '0.1km') or metres. `block_size` None maps by blocks of
    `scene_map.DEFAULT_BLOCK_SIZE` (each computed on the window around its glacier pixels);
    0 forces whole-scene mapping (the whole feature stack) and N > 0 blocks of N pixels. Results do not depend on `tile_size`. `read` says
    how scenes are read (band map, DN coding, product masks: `scenes.options.ReadOptions`).
    """

    buffer: str | float = 0.0
    smoothing: bool = True
    device: str = "auto"  # CUDA when present (`inference.auto_device`)
    tile_size: int = 1024
    precision: str = "fp32"
    confidence_dtype: str = "uint8"
    block_size: int | None = None
    read: ReadOptions = field(default_factory=ReadOptions)

    @property
    def buffer_m(self) -> float:
        try:
            return parse_buffer(self.buffer)
        except ValueError as exc:
            raise InputError(None, str(exc)) from None

    def check(self) -> MapConfig:
        """InputError on the first bad option (before any pixel is read)."""
        check_device(self.device)
        if self.tile_size < 1:
            raise InputError(None, f"--tile-size must be >= 1, got {self.tile_size}")
        self.buffer_m  # noqa: B018 (raises on a bad buffer)
        if self.confidence_dtype not in CONFIDENCE_DTYPES:
            raise InputError(None, "confidence dtype must be uint8 or float32, got "
                                   f"{self.confidence_dtype}")
        if self.precision not in PRECISIONS:
            raise InputError(None, f"precision must be fp32 or bf16, got {self.precision}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
