"""Names of the 11 per-pixel features and the named subsets used in the paper's ablations."""

from __future__ import annotations

OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir", "swir1", "swir2")
TERRAIN_FEATURES: tuple[str, ...] = ("elevation", "slope", "shadow_mask", "hillshade", "proximity")
FEATURE_NAMES: tuple[str, ...] = OPTICAL_BANDS + TERRAIN_FEATURES

FEATURE_SUBSETS: dict[str, tuple[str, ...]] = {
    "optical": OPTICAL_BANDS,
    "optical+elevation": OPTICAL_BANDS + ("elevation",),
    "optical+elevation+slope": OPTICAL_BANDS + ("elevation", "slope"),
    "optical+terrain": OPTICAL_BANDS + ("elevation", "slope", "shadow_mask", "hillshade"),
    "all": FEATURE_NAMES,
}


def resolve_features(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A subset name ("optical", "all", ...) or comma list of feature names -> ordered names."""
    if isinstance(spec, str):
        if spec in FEATURE_SUBSETS:
            return FEATURE_SUBSETS[spec]
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = tuple(spec)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names:
        raise ValueError(
            f"unknown feature(s) {unknown or spec!r}; use one of {sorted(FEATURE_SUBSETS)} "
            f"or names from {', '.join(FEATURE_NAMES)}"
        )
    return names
