"""GLAMOS (Swiss glacier monitoring) mass-balance observations as balance records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies.errors import InputError
from glacierfacies.products.wgms import _numeric

# ---------------------------------------------------------------- GLAMOS
GLAMOS_COLUMNS = ("glacier name", "glacier id", "end date of observation",
                  "annual mass balance", "accumulation area ratio")


def read_glamos(path: str | Path) -> pd.DataFrame:
    """GLAMOS observation-period mass balances (semicolon CSV with a licence header).

    The balance year is the year of the end date; ``wgms_id``/``rgi_id`` are empty (GLAMOS
    uses Swiss Glacier Inventory ids, kept in ``sgi_id``), so link these by name or SGI id.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = next((i for i, line in enumerate(lines[:50]) if line.startswith("glacier name;")),
                  None)
    if header is None:
        raise InputError(path, "no 'glacier name;...' header line (not a GLAMOS CSV?)")
    df = pd.read_csv(path, sep=";", skiprows=list(range(header)) + [header + 1, header + 2],
                     encoding="utf-8", encoding_errors="replace")
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in GLAMOS_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    end = pd.to_datetime(df["end date of observation"], errors="coerce")
    out = pd.DataFrame({
        "wgms_id": pd.array([pd.NA] * len(df), dtype="Int64"),
        "rgi_id": pd.array([pd.NA] * len(df), dtype="string"),
        "sgi_id": df["glacier id"].astype(str).str.strip(),
        "name": df["glacier name"].astype(str).str.strip(),
        "year": end.dt.year.astype("Int64"),
        "annual_balance_mwe": _numeric(df["annual mass balance"]) / 1000.0,
        "winter_balance_mwe": _numeric(df.get("winter mass balance", np.nan)) / 1000.0,
        "summer_balance_mwe": _numeric(df.get("summer mass balance", np.nan)) / 1000.0,
        "ela_m": _numeric(df.get("equilibrium line altitude", np.nan)),
        "ela_prefix": "",
        "aar": _numeric(df["accumulation area ratio"]) / 100.0,
    })
    return out.dropna(subset=["year"]).reset_index(drop=True)

