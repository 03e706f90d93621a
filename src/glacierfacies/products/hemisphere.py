"""Which hemisphere a glacier is in, and the season window and balance-year start it implies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from glacierfacies.errors import InputError
from glacierfacies.products import massbalance as mb

HEMISPHERES = ("north", "south")


def hemisphere_from_latitude(latitude: np.ndarray) -> np.ndarray:
    """'north' for latitude >= 0, else 'south' (object array)."""
    lat = np.asarray(latitude, dtype=float)
    return np.where(lat >= 0, "north", "south").astype(object)


def outline_hemispheres(geometry) -> np.ndarray:
    """Hemisphere of each outline (a GeoSeries with a CRS) from its centroid's latitude."""
    import warnings

    if len(geometry) == 0:
        return np.empty(0, dtype=object)
    if geometry.crs is None:
        raise ValueError("outlines have no CRS")
    with warnings.catch_warnings():  # centroids of geographic coordinates are fine here
        warnings.simplefilter("ignore")
        lat = geometry.to_crs(4326).centroid.y.to_numpy()
    return hemisphere_from_latitude(lat)


def resolve_hemisphere(products: pd.DataFrame, hemisphere: str | None, source=None
                       ) -> pd.Series:
    """Per-row hemisphere: the given one, else the table's ``hemisphere`` column (written by
    `products` from the outlines, or derived from a GeoPackage's geometry on reading)."""
    if hemisphere not in (None, "auto"):
        if hemisphere not in HEMISPHERES:
            raise InputError(None, f"--hemisphere must be north or south, got {hemisphere!r}")
        return pd.Series(hemisphere, index=products.index, dtype=object)
    if "hemisphere" in products.columns and products["hemisphere"].notna().all():
        bad = sorted(set(products["hemisphere"]) - set(HEMISPHERES))
        if bad:
            raise InputError(source, f"unknown hemisphere value(s) {bad}")
        return products["hemisphere"].astype(object)
    raise InputError(source, "products have no outline geometry or hemisphere column: pass "
                             "--hemisphere north or south")


def season_settings(hemisphere: str, season_months: tuple[int, ...] | None | str = "auto",
                    start_month: int | None = None) -> tuple[tuple[int, ...] | None, int]:
    """(season months, hydrological-year start month): explicit values win, else the
    hemisphere's defaults (north Aug-Oct and October, south Feb-Apr and April)."""
    months = mb.SEASON_MONTHS[hemisphere] if season_months == "auto" else season_months
    start = mb.HYDRO_YEAR_START[hemisphere] if start_month is None else int(start_month)
    return (tuple(months) if months is not None else None), start
