"""RGI 7 <-> RGI 6 links, so that RGI 7 outlines reach WGMS records (which carry RGI 6 ids).

WGMS and the ``rgi_wgms_links`` table know glaciers by WGMS id and RGI 6.0 id. RGI 7.0
outlines (ids like ``RGI2000-v7.0-G-11-01706``) carry a ``glims_id`` but no RGI 6 id, and
their outlines were redrawn, so a glacier's id changed. Two ways to link, both needing the
RGI 6 outlines of the region (``RGIId``, ``GLIMSId`` and geometry, as RGI 6.0 distributes
them; there is no RGI 7 file in the shared data, so the tests build both):

* **GLIMS id**: an RGI 7 outline and an RGI 6 outline with the same GLIMS id
  (``G010758E46800N``) are the same glacier.
* **Outline overlap**: otherwise the RGI 6 outline that covers the largest part of the RGI 7
  outline, if it covers at least `min_overlap` (default 0.5) of it *and* the RGI 7 outline
  covers at least `min_overlap` of it (so a split or merged glacier links only where one
  side dominates the other). Areas in an equal-area projection (EPSG:6933).

`add_rgi6_ids` writes ``rgi6_id`` and ``rgi6_link`` ("given", "glims", "overlap"; empty: none)
columns; `regression.link_products` then links ``rgi6_id`` to WGMS like any RGI 6 id.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies.errors import InputError

RGI6_RE = re.compile(r"^RGI60?-\d{2}\.\d{5}$", re.IGNORECASE)


RGI7_RE = re.compile(r"^RGI2000-v7\.0-[A-Z]-\d{2}-\d{5}$", re.IGNORECASE)


EQUAL_AREA_CRS = "EPSG:6933"


RGI6_ID_COLUMNS = ("RGIId", "rgi_id", "RGI60_ID", "rgi6_id")


GLIMS_COLUMNS = ("GLIMSId", "glims_id", "GLIMS_ID")


def is_rgi6(ident) -> bool:
    return isinstance(ident, str) and bool(RGI6_RE.match(ident.strip()))


def is_rgi7(ident) -> bool:
    return isinstance(ident, str) and bool(RGI7_RE.match(ident.strip()))


def _column(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in df.columns), None)


def read_rgi6_outlines(path: str | Path):
    """RGI 6 outlines with columns ``rgi6_id``, ``glims_id`` (may be empty) and geometry."""
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise InputError(path, "RGI 6 outline file not found")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(path, f"not a readable vector file ({str(exc).splitlines()[0]})"
                         ) from None
    id_col = _column(gdf, RGI6_ID_COLUMNS)
    if id_col is None:
        raise InputError(path, f"no RGI 6 id column (tried {', '.join(RGI6_ID_COLUMNS)})")
    if gdf.crs is None:
        raise InputError(path, "outlines have no CRS")
    glims = _column(gdf, GLIMS_COLUMNS)
    out = gpd.GeoDataFrame({
        "rgi6_id": gdf[id_col].astype("string").str.strip(),
        "glims_id": (gdf[glims].astype("string").str.strip() if glims
                     else pd.Series(pd.NA, index=gdf.index, dtype="string")),
    }, geometry=gdf.geometry, crs=gdf.crs)
    return out[out.geometry.notna() & ~out.geometry.is_empty].reset_index(drop=True)


def link_by_glims(glims_ids: pd.Series, rgi6: pd.DataFrame) -> pd.Series:
    """RGI 6 id for each GLIMS id (NA where none; the first RGI 6 outline if several)."""
    table = rgi6.dropna(subset=["glims_id"]).drop_duplicates("glims_id")
    lut = dict(zip(table["glims_id"].str.upper(), table["rgi6_id"], strict=True))
    ids = pd.Series(glims_ids, dtype="string").str.strip().str.upper()
    return pd.Series([lut.get(g) if isinstance(g, str) else None for g in ids],
                     index=ids.index, dtype="string")


def link_by_overlap(outlines, rgi6, min_overlap: float = 0.5) -> pd.DataFrame:
    """For each outline (GeoSeries/GeoDataFrame): ``rgi6_id``, ``overlap_fraction`` (part of
    the outline covered by that RGI 6 outline) and ``rgi6_fraction`` (part of the RGI 6
    outline covered), NA where no RGI 6 outline passes both `min_overlap` tests."""
    import geopandas as gpd

    geoms = outlines.geometry if hasattr(outlines, "geometry") else outlines
    a = gpd.GeoDataFrame({"_i": np.arange(len(geoms))}, geometry=geoms.to_numpy(),
                         crs=geoms.crs).to_crs(EQUAL_AREA_CRS)
    b = gpd.GeoDataFrame({"rgi6_id": rgi6["rgi6_id"].to_numpy()},
                         geometry=rgi6.geometry.to_numpy(), crs=rgi6.crs).to_crs(EQUAL_AREA_CRS)
    out = pd.DataFrame({"rgi6_id": pd.array([pd.NA] * len(a), dtype="string"),
                        "overlap_fraction": np.nan, "rgi6_fraction": np.nan})
    if len(a) == 0 or len(b) == 0:
        return out
    area_a = a.geometry.area.to_numpy()
    area_b = b.geometry.area.to_numpy()
    left, right = b.sindex.query(a.geometry, predicate="intersects")
    if left.size == 0:
        return out
    inter = a.geometry.iloc[left].reset_index(drop=True).intersection(
        b.geometry.iloc[right].reset_index(drop=True), align=False).area.to_numpy()
    pairs = pd.DataFrame({"a": left, "b": right, "frac_a": inter / area_a[left],
                          "frac_b": inter / area_b[right]})
    best = pairs.sort_values(["a", "frac_a"], ascending=[True, False]).drop_duplicates("a")
    best = best[(best.frac_a >= min_overlap) & (best.frac_b >= min_overlap)]
    out.loc[best["a"].to_numpy(), "rgi6_id"] = b["rgi6_id"].to_numpy()[best["b"].to_numpy()]
    out.loc[best["a"].to_numpy(), "overlap_fraction"] = best["frac_a"].to_numpy()
    out.loc[best["a"].to_numpy(), "rgi6_fraction"] = best["frac_b"].to_numpy()
    return out


def add_rgi6_ids(products: pd.DataFrame, rgi6=None, geometry=None,
                 min_overlap: float = 0.5) -> pd.DataFrame:
    """`products` with ``rgi7_id``, ``rgi6_id`` and ``rgi6_link`` columns.

    An id that already is RGI 6 (in ``rgi_id`` or ``glacier``) is kept ("given"). RGI 7 ids
    (``rgi_id``/``glacier``/``rgi7_id``) are linked through ``glims_id`` to `rgi6` (from
    `read_rgi6_outlines`), else by overlap of `geometry` (the products' outlines, one per
    row) with the RGI 6 outlines. Without `rgi6` only given RGI 6 ids are filled.
    """
    out = products.copy()
    cols = [c for c in ("rgi7_id", "rgi_id", "glacier") if c in out.columns]

    def first(pred) -> pd.Series:
        res = pd.Series(pd.NA, index=out.index, dtype="string")
        for c in cols:
            vals = out[c].astype("string").str.strip()
            hit = vals.map(lambda v: isinstance(v, str) and pred(v)).astype(bool)
            res = res.mask(res.isna() & hit, vals)
        return res

    given6, rgi7 = first(is_rgi6), first(is_rgi7)
    if "rgi6_id" in out.columns:
        given6 = out["rgi6_id"].astype("string").fillna(given6)
    out["rgi7_id"] = rgi7
    out["rgi6_id"] = given6
    out["rgi6_link"] = pd.Series(pd.NA, index=out.index, dtype="string").mask(
        given6.notna(), "given")
    if rgi6 is None:
        return out
    todo = out["rgi6_id"].isna() & out["rgi7_id"].notna()
    if todo.any() and "glims_id" in out.columns:
        found = link_by_glims(out.loc[todo, "glims_id"], rgi6)
        hit = found.notna()
        out.loc[found.index[hit], "rgi6_id"] = found[hit]
        out.loc[found.index[hit], "rgi6_link"] = "glims"
    todo = out["rgi6_id"].isna() & out["rgi7_id"].notna()
    if todo.any() and geometry is not None:
        geom = geometry[todo.to_numpy()]
        found = link_by_overlap(geom, rgi6, min_overlap)
        idx = out.index[todo.to_numpy()]
        hit = found["rgi6_id"].notna().to_numpy()
        out.loc[idx[hit], "rgi6_id"] = found.loc[hit, "rgi6_id"].to_numpy()
        out.loc[idx[hit], "rgi6_link"] = "overlap"
    return out
