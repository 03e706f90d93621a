"""The 8 surface classes: names, order, colours. The single source of truth.

Order follows Maslov et al. (2026): ice, snow, debris, firn, shadow, refrozen-like, water,
cloud. The first five except shadow are glacier *facies*; shadow, water and cloud are
*miscellaneous* classes that hide the surface and are never pruned by confident learning.
"""

from __future__ import annotations

from dataclasses import dataclass

NODATA_CLASS = 255  # class-map value for "not classified" (off-glacier, nodata)


@dataclass(frozen=True)
class FaciesClass:
    code: int
    name: str
    colour: tuple[int, int, int]
    is_facies: bool
    description: str


CLASSES: tuple[FaciesClass, ...] = (
    FaciesClass(0, "ice", (80, 160, 230), True, "bare glacier ice"),
    FaciesClass(1, "snow", (255, 255, 255), True, "seasonal snow"),
    FaciesClass(2, "debris", (140, 100, 60), True, "supraglacial debris"),
    FaciesClass(3, "firn", (200, 220, 140), True, "firn (old, metamorphosed snow)"),
    FaciesClass(4, "shadow", (40, 40, 60), False, "cast or self shadow"),
    FaciesClass(5, "refrozen-like", (150, 110, 200), True, "refrozen / slush-like surfaces"),
    FaciesClass(6, "water", (20, 60, 200), False, "lakes, ponds, streams"),
    FaciesClass(7, "cloud", (255, 150, 150), False, "cloud"),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
N_CLASSES = len(CLASSES)
FACIES_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.is_facies)
FACIES_CODES: tuple[int, ...] = tuple(c.code for c in CLASSES if c.is_facies)
MISC_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES if not c.is_facies)
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {c.name: c.colour for c in CLASSES}

_ALIASES = {"refrozen": "refrozen-like", "refrozen_like": "refrozen-like", "clouds": "cloud"}


def class_index(name: str) -> int:
    """Code of a class name (case-insensitive, a few aliases); ValueError names unknown ones."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return CLASS_NAMES.index(key)
    except ValueError:
        raise ValueError(
            f"unknown class {name!r}; known classes: {', '.join(CLASS_NAMES)}"
        ) from None


def colour_table() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table (code -> RGBA) with nodata transparent, for class GeoTIFFs."""
    table = {c.code: (*c.colour, 255) for c in CLASSES}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table
