"""Snowline observations for PyGEM: one CSV per glacier, as `pygem.shop.meltextent_and_snowline_1d`
(`snowline_1d_to_gdir`) reads them.

PyGEM looks for ``<snowline_1d_relpath>/<RGI id without 'RGI60-'>_snowline_elev.csv`` with
the columns ``date,z,z_min,z_max,direction,ref_dem,ref_dem_year`` (its example file,
``docs/_static/example_meltextent_and_snowline_1d/sample_snowline_elev.csv``, writes the
altitudes as floats with one decimal and the year as an integer). Its reader parses the
file with ``pd.read_csv`` and requires: dates as ``YYYY-MM-DD`` strings, z/z_min/z_max
numeric, direction a string, ref_dem a string, ref_dem_year an integer. `PYGEM_COLUMNS`
says how glacierfacies fills each column (also in docs/massbalance.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies.errors import InputError

#: PyGEM's column order (its example file's header) and how each is filled here.
PYGEM_COLUMNS: dict[str, str] = {
    "date": "acquisition date of the scene (YYYY-MM-DD)",
    "z": "snowline altitude snowline_m (m a.s.l. of the DEM), rounded to 1 m",
    "z_min": "z minus one standard uncertainty (snowline_unc_m), rounded to 1 m; z where the "
             "uncertainty is unknown",
    "z_max": "z plus one standard uncertainty, rounded to 1 m",
    "direction": "'descending': optical Sentinel-2 / Landsat scenes are taken on the "
                 "descending (daytime) pass of their sun-synchronous orbits (PyGEM's column "
                 "is the SAR orbit direction)",
    "ref_dem": "the DEM the altitudes are read from (--ref-dem; default the DEM file's name)",
    "ref_dem_year": "the year of that DEM's elevations (--ref-dem-year), an integer",
}
DIRECTION = "descending"


def pygem_file_name(glacier: str, rgi_id: str | None = None) -> str:
    """``<id>_snowline_elev.csv``: PyGEM's name, from the RGI id without its ``RGIxx-``
    prefix (``RGI60-11.01450`` -> ``11.01450``) when there is one, else the glacier id."""
    rid = str(rgi_id or "").strip()
    if not (rid and rid.lower() != "nan" and "-" in rid) and re.match(r"^RGI\d*-", str(glacier)):
        rid = str(glacier)  # the outlines' id column is the RGI id
    if rid and rid.lower() != "nan" and "-" in rid:
        key = rid.split("-", 1)[1]
    else:
        key = str(glacier)
    return re.sub(r"[^0-9A-Za-z._-]", "_", key) + "_snowline_elev.csv"


def snowline_tables(products: pd.DataFrame, *, ref_dem: str, ref_dem_year: int,
                    min_observed: float = 0.8) -> dict[str, pd.DataFrame]:
    """{file name: PyGEM snowline table} per glacier: every scene with a snowline altitude
    whose observed fraction is at least `min_observed`, by date (one row per date: the most
    observed scene where two share a date)."""
    if not isinstance(ref_dem_year, int | np.integer) or not 1900 <= int(ref_dem_year) <= 2100:
        raise InputError(None, f"--ref-dem-year must be a year, got {ref_dem_year!r}")
    if not str(ref_dem).strip():
        raise InputError(None, "--ref-dem must name the DEM")
    need = {"glacier", "date", "snowline_m", "snowline_unc_m", "observed_fraction"}
    missing = sorted(need - set(products.columns))
    if missing:
        raise InputError(None, f"products table lacks column(s) {missing}")
    df = products.copy()
    df["date"] = pd.to_datetime(df["date"], errors="coerce")
    ok = (np.isfinite(pd.to_numeric(df["snowline_m"], errors="coerce"))
          & (pd.to_numeric(df["observed_fraction"], errors="coerce") >= min_observed)
          & df["date"].notna())
    df = df[ok]
    out: dict[str, pd.DataFrame] = {}
    for glacier, g in df.groupby(df["glacier"].astype(str), sort=True):
        g = (g.sort_values(["date", "observed_fraction"], ascending=[True, False])
             .drop_duplicates("date", keep="first"))
        z = np.round(g["snowline_m"].to_numpy(float))
        unc = pd.to_numeric(g["snowline_unc_m"], errors="coerce").to_numpy(float)
        unc = np.where(np.isfinite(unc), unc, 0.0)
        table = pd.DataFrame({
            "date": g["date"].dt.strftime("%Y-%m-%d").to_numpy(),
            "z": z,
            "z_min": np.round(z - unc),
            "z_max": np.round(z + unc),
            "direction": DIRECTION,
            "ref_dem": str(ref_dem),
            "ref_dem_year": int(ref_dem_year),
        })
        rgi = g["rgi_id"].iloc[0] if "rgi_id" in g.columns else None
        out[pygem_file_name(glacier, rgi)] = table
    return out


def write_snowline_csvs(tables: dict[str, pd.DataFrame], folder: str | Path,
                        overwrite: bool = False) -> list[Path]:
    """Write each table as PyGEM's example does (``1182.0``: one decimal); returns the paths."""
    from glacierfacies._io import check_output, write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in tables]
    for p in paths:  # before writing any
        check_output(p, overwrite=overwrite)
    for p, table in zip(paths, tables.values(), strict=True):
        write_text(p, table.to_csv(index=False, float_format="%.1f", lineterminator="\n"),
                   overwrite=overwrite)
    return paths
