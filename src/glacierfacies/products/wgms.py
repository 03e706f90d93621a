""""""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies.errors import InputError

OVERVIEW_NAME = "WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv"


LINKS_NAME = "rgi_wgms_links_20220112.csv"


MBDATA_DIR = "mbdata"


OVERVIEW_COLUMNS = ("NAME", "WGMS_ID", "Year", "ELA_PREFIX", "ELA", "AAR")


MBDATA_COLUMNS = ("YEAR", "WGMS_ID", "NAME", "ANNUAL_BALANCE", "RGI_ID")


LINK_COLUMNS = ("NAME", "WGMS_ID", "RGI60_ID")


RECORD_COLUMNS = (
    "wgms_id", "rgi_id", "name", "year", "annual_balance_mwe", "winter_balance_mwe",
    "summer_balance_mwe", "ela_m", "ela_prefix", "aar",
)


def _read_csv(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """CSV with a one-line InputError for a missing file, bad encoding or missing columns."""
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        try:
            df = pd.read_csv(path, low_memory=False, **kwargs)
        except UnicodeDecodeError:
            df = pd.read_csv(path, low_memory=False, encoding="latin-1", **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise InputError(path, f"not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    _check_complete(path, len(df.columns))
    df.attrs["path"] = str(path)
    return df


def _check_complete(path: Path, n_columns: int) -> None:
    """InputError when the file ends in the middle of a row (a truncated copy or download):
    its last line, without a newline, has fewer fields than the header."""
    import csv
    import io

    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    if not tail or tail.endswith((b"\n", b"\r")):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode("latin-1")
    fields = next(csv.reader(io.StringIO(last)), [])
    if len(fields) < n_columns:
        raise InputError(path, f"the last row has {len(fields)} of {n_columns} fields: the "
                               "file is cut short (truncated copy?)")


def _numeric(s: pd.Series, df: pd.DataFrame | None = None) -> pd.Series:
    """The numbers of a column; a text that is not one (`n.a.`, `-`) is an InputError naming
    the file, column and row instead of a silently dropped glacier-year (leave a missing
    value empty, as WGMS does)."""
    out = pd.to_numeric(s, errors="coerce")
    if df is not None and isinstance(s, pd.Series) and not pd.api.types.is_numeric_dtype(s):
        text = s.astype("string").str.strip()
        bad = out.isna() & text.notna() & (text != "") & ~text.str.lower().isin(["nan"])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(df.attrs.get("path"), f"column {s.name}: {int(bad.sum())} value(s) "
                                                   f"are not numbers (row {i + 2}: {text.iloc[i]!r});"
                                                   " leave missing values empty")
    return out


def read_overview(path: str | Path) -> pd.DataFrame:
    """The FoG mass-balance overview (ELA, AAR per glacier-year; latin-1)."""
    path = Path(path)
    df = _read_csv(path, OVERVIEW_COLUMNS, encoding="latin-1")
    out = pd.DataFrame({
        "wgms_id": _numeric(df["WGMS_ID"], df).astype("Int64"),
        "name": df["NAME"].astype(str).str.strip(),
        "year": _numeric(df["Year"], df).astype("Int64"),
        "ela_prefix": df["ELA_PREFIX"].astype("string").fillna("").str.strip(),
        "ela_m": _numeric(df["ELA"], df),
        "aar": _numeric(df["AAR"], df) / 100.0,
    })
    return out.dropna(subset=["wgms_id", "year"])


def read_mbdata(folder: str | Path) -> pd.DataFrame:
    """All ``mbdata_WGMS-NNNNN.csv`` series of a folder, balances converted to m w.e."""
    folder = Path(folder)
    files = sorted(folder.glob("mbdata_*.csv")) if folder.is_dir() else []
    if not files:
        raise InputError(folder, "no mbdata_*.csv files")
    frames = []
    for f in files:
        df = _read_csv(f, MBDATA_COLUMNS)
        frames.append(pd.DataFrame({
            "wgms_id": _numeric(df["WGMS_ID"], df).astype("Int64"),
            "rgi_id": df["RGI_ID"].astype("string").str.strip(),
            "name": df["NAME"].astype(str).str.strip(),
            "year": _numeric(df["YEAR"], df).astype("Int64"),
            "annual_balance_mwe": _numeric(df["ANNUAL_BALANCE"], df) / 1000.0,
            "winter_balance_mwe": _numeric(df.get("WINTER_BALANCE", np.nan), df) / 1000.0,
            "summer_balance_mwe": _numeric(df.get("SUMMER_BALANCE", np.nan), df) / 1000.0,
        }))
    return pd.concat(frames, ignore_index=True).dropna(subset=["wgms_id", "year"])


def read_links(path: str | Path) -> pd.DataFrame:
    """WGMS id <-> RGI 6 id <-> name (``rgi_wgms_links_*.csv``)."""
    path = Path(path)
    df = _read_csv(path, LINK_COLUMNS)
    return pd.DataFrame({
        "wgms_id": _numeric(df["WGMS_ID"]).astype("Int64"),
        "rgi_id": df["RGI60_ID"].astype("string").str.strip(),
        "name": df["NAME"].astype(str).str.strip(),
    }).dropna(subset=["wgms_id"])


@functools.lru_cache(maxsize=4)
def _read_wgms_cached(folder: str, mtime: float) -> pd.DataFrame:
    folder_p = Path(folder)
    overview = read_overview(folder_p / OVERVIEW_NAME)
    mb = read_mbdata(folder_p / MBDATA_DIR)
    dup = mb.duplicated(["wgms_id", "year"])
    if dup.any():
        mb = mb[~dup]
    ov = overview.drop(columns=["name"]).drop_duplicates(["wgms_id", "year"])
    records = mb.merge(ov, on=["wgms_id", "year"], how="left")
    links_path = folder_p / LINKS_NAME
    if links_path.is_file():
        links = read_links(links_path).drop_duplicates("wgms_id").set_index("wgms_id")["rgi_id"]
        fill = records["wgms_id"].map(links)
        records["rgi_id"] = records["rgi_id"].fillna(fill)
    records["ela_prefix"] = records["ela_prefix"].fillna("")
    return records[list(RECORD_COLUMNS)].sort_values(["wgms_id", "year"]).reset_index(drop=True)


def read_wgms(folder: str | Path) -> pd.DataFrame:
    """Annual balances (m w.e.) joined with the overview's ELA and AAR on (WGMS id, year).

    One row per glacier-year that has an mbdata row; ``aar`` / ``ela_m`` are NaN where the
    overview has none. Cached per folder (and modification time) within a process.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "WGMS folder not found")
    return _read_wgms_cached(str(folder.resolve()), folder.stat().st_mtime).copy()


def wgms_aar_table(records: pd.DataFrame) -> pd.DataFrame:
    """WGMS's own AAR as a product: glacier-years with a balance and 0 <= AAR <= 1.

    This is the ceiling a satellite AAR could reach (the same AAR that the glaciologists
    derived from their own field maps).
    """
    keep = records["annual_balance_mwe"].notna() & records["aar"].between(0.0, 1.0)
    key = "sgi_id" if "sgi_id" in records.columns else "wgms_id"
    out = records[keep].drop_duplicates([key, "year"], keep="last")  # one row per glacier-year
    return out.reset_index(drop=True)


# ---------------------------------------------------------------- linking
_WGMS_RE = re.compile(r"^(?:wgms[-_ ]?)?0*(\d+)$", re.IGNORECASE)


_RGI_RE = re.compile(r"^RGI\d{2}-\d{2}\.\d{5}$", re.IGNORECASE)


_SUFFIXES = ("GLETSCHER", "FERNER", "GLACIER", "GLACIAR", "GHIACCIAIO", "BREEN", "JOKULL",
             "KEES", "GL", "G", "F", "K")


def normalise_name(name: str) -> str:
    """Case-, accent- and suffix-insensitive name: "Hintereisferner" == "HINTEREIS F."."""
    import unicodedata

    s = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode().upper()
    tokens = re.findall(r"[A-Z0-9]+", s)
    if len(tokens) > 1 and tokens[-1] in _SUFFIXES:
        tokens = tokens[:-1]
    if tokens and tokens[0] in ("GLACIER", "GHIACCIAIO", "GLACIAR") and len(tokens) > 1:
        tokens = tokens[1:]
        while len(tokens) > 1 and tokens[0] in ("DE", "DU", "DES", "D", "DELLA", "DEL"):
            tokens = tokens[1:]
    joined = "".join(tokens)
    for suffix in _SUFFIXES[:8]:
        if joined.endswith(suffix) and len(joined) > len(suffix) + 2:
            return joined[: -len(suffix)]
    return joined


def link_glaciers(
    identifiers: pd.Series | list, records: pd.DataFrame, sgi: bool = True
) -> pd.Series:
    """Record key (WGMS id, or SGI id for GLAMOS) for each product glacier identifier.

    An identifier can be a WGMS id (``491``, ``WGMS-00491``), an RGI id (``RGI60-11.00897``),
    an SGI id (GLAMOS) or a name; unmatched ones map to NA. Returns a string Series.
    """
    ids = pd.Series(identifiers, dtype="string").fillna("").str.strip()
    key_col = "sgi_id" if sgi and "sgi_id" in records.columns else "wgms_id"
    keys = records[key_col].astype("string")
    by_key = dict(zip(keys, keys, strict=True))
    by_rgi: dict[str, str] = {}
    if "rgi_id" in records.columns:
        for r, k in zip(records["rgi_id"].astype("string"), keys, strict=True):
            if not pd.isna(r) and not pd.isna(k):
                by_rgi.setdefault(str(r).upper(), str(k))
                by_rgi.setdefault(str(r).upper().replace("RGI60", "RGI6"), str(k))
    by_name: dict[str, str] = {}
    for n, k in zip(records["name"], keys, strict=True):
        if not pd.isna(k):
            by_name.setdefault(normalise_name(n), str(k))

    def one(ident: str) -> str | None:
        if not ident:
            return None
        if ident in by_key:
            return ident
        m = _WGMS_RE.match(ident)
        if m and key_col == "wgms_id" and m.group(1) in by_key:
            return m.group(1)
        if _RGI_RE.match(ident):
            return by_rgi.get(ident.upper())
        return by_name.get(normalise_name(ident))

    return pd.Series([one(i) for i in ids], index=ids.index, dtype="string")

