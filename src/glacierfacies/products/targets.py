"""Mass-balance targets for glacier models (OGGM, PyGEM): one row per glacier and balance year.

From a products table: the end-of-season scene of every glacier and balance year, its AAR,
snowline and firn-line altitude with uncertainties, and the annual balance that the
regressions predict from its AAR, with an interval. The balance comes from the glacier's
own line where it has one that passes the guards (``balance_model = "glacier"``), else from
the global line (``"global"``), else none (no records to fit on). The interval combines the
held-out RMSE of that line (leave-one-year-out for a glacier's own line,
leave-one-glacier-out for the global one) with the AAR uncertainty propagated through the
slope. `TARGET_COLUMNS` documents every column with its unit (also in
``docs/massbalance.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies._io import atomic_output, check_output, write_json
from glacierfacies.errors import InputError
from glacierfacies.products import massbalance as mb
from glacierfacies.products.linking import add_rgi6_ids
from glacierfacies.products.regression import link_products, select_end_of_season

#: z of the central 90% interval of a normal error (balance_lo_mwe .. balance_hi_mwe).
Z90 = 1.6448536269514722


#: column -> (unit, meaning). Units: "" for text; "1" for fractions.
TARGET_COLUMNS: dict[str, tuple[str, str]] = {
    "glacier": ("", "glacier id of the products (outline id column)"),
    "rgi6_id": ("", "RGI 6.0 id (given, or linked from RGI 7 by GLIMS id / outline overlap)"),
    "rgi7_id": ("", "RGI 7.0 id where the outlines are RGI 7"),
    "rgi6_link": ("", "how rgi6_id was found: given, glims, overlap, or empty"),
    "glims_id": ("", "GLIMS id of the outline, where known"),
    "wgms_id": ("", "WGMS id (from the outlines, or the WGMS record it was linked to)"),
    "name": ("", "glacier name, where known"),
    "hemisphere": ("", "north or south (from the outline's latitude or --hemisphere)"),
    "balance_year": ("year", "balance year whose ablation season the scene closes; WGMS "
                             "naming (the hydrological year in which the season window opens)"),
    "date": ("YYYY-MM-DD", "acquisition date of the end-of-season scene"),
    "scene_id": ("", "the end-of-season scene"),
    "sensor": ("", "sensor of that scene"),
    "end_of_season_rule": ("", "rule that chose the scene: robust, minimum or latest"),
    "season_months": ("month numbers", "season window the scene was chosen in"),
    "accumulation": ("", "definition of aar: snow (end-of-season snow cover) or snow+firn"),
    "shadow_method": ("", "how shadowed pixels were counted: snowline, exclude, probabilities"),
    "uncertainty_method": ("", "source of the *_unc columns: probabilities+members, "
                               "probabilities, fallback:confidence-bound or "
                               "fallback:cost-tolerance"),
    "glacier_area_km2": ("km2", "area of the outline"),
    "observed_fraction": ("1", "fraction of the glacier observed (not cloud, not nodata)"),
    "aar": ("1", "accumulation-area ratio under `accumulation` (0..1)"),
    "aar_unc": ("1", "one standard uncertainty of aar"),
    "aar_snow_firn": ("1", "AAR of snow + firn (0..1)"),
    "aar_snow_firn_unc": ("1", "one standard uncertainty of aar_snow_firn"),
    "snowline_m": ("m a.s.l.", "snowline altitude: lower limit of snow (the DEM's datum)"),
    "snowline_unc_m": ("m", "one standard uncertainty of snowline_m"),
    "firnline_m": ("m a.s.l.", "firn-line altitude: lower limit of snow + firn"),
    "firnline_unc_m": ("m", "one standard uncertainty of firnline_m"),
    "balance_mwe": ("m w.e. a-1", "predicted glacier-wide annual surface mass balance "
                                   "(x 1000 = kg m-2 a-1 = mm w.e. a-1, OGGM's unit)"),
    "balance_unc_mwe": ("m w.e. a-1", "one standard uncertainty of balance_mwe: "
                                       "sqrt(held-out RMSE^2 + (slope * aar_unc)^2)"),
    "balance_lo_mwe": ("m w.e. a-1", "lower end of the central 90% interval"),
    "balance_hi_mwe": ("m w.e. a-1", "upper end of the central 90% interval"),
    "balance_model": ("", "glacier (own line, passes the guards), global, or none"),
    "balance_slope_mwe": ("m w.e. a-1 per unit AAR", "slope of the line used"),
    "balance_intercept_mwe": ("m w.e. a-1", "intercept of the line used"),
    "balance_rmse_mwe": ("m w.e. a-1", "held-out RMSE of the line used"),
    "record_balance_mwe": ("m w.e. a-1", "the record's annual balance for this glacier-year, "
                                         "where one exists (the line was fitted on these)"),
}


ID_COLUMNS = ("glacier", "rgi6_id", "rgi7_id", "rgi6_link", "glims_id", "wgms_id", "name",
              "hemisphere", "date", "scene_id", "sensor", "end_of_season_rule",
              "season_months", "accumulation", "shadow_method", "uncertainty_method",
              "balance_model")


def build_targets(
    products: pd.DataFrame,
    records: pd.DataFrame | None = None,
    *,
    min_observed: float = 0.8,
    rule: str = "robust",
    hemisphere: str | None = None,
    season_months: tuple[int, ...] | None | str = "auto",
    start_month: int | None = None,
    guards: mb.RegressionGuards | None = None,
    rgi6=None,
    geometry=None,
    source: Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """(targets table, summary) from a products table and optional balance records.

    `rgi6` (from `linking.read_rgi6_outlines`) and `geometry` (the products' outlines, one
    per row) link RGI 7 outlines to RGI 6 ids and so to WGMS.
    """
    guards = guards or mb.RegressionGuards()
    linked = add_rgi6_ids(products, rgi6, geometry)
    sel = select_end_of_season(linked, min_observed, start_month, season_months, rule,
                               hemisphere, source)
    if sel.empty:
        raise InputError(source, f"no scene has observed_fraction >= {min_observed}, a finite "
                                 "AAR and a date in the season window")
    sel = sel.rename(columns={"year": "balance_year"})
    summary: dict = {"n_glacier_years": int(len(sel)), "n_glaciers": int(sel["glacier"].nunique())}
    sel["record_balance_mwe"] = np.nan
    for c in ("balance_mwe", "balance_unc_mwe", "balance_slope_mwe", "balance_intercept_mwe",
              "balance_rmse_mwe"):
        sel[c] = np.nan
    sel["balance_model"] = "none"
    if records is not None:
        sel = _predict_balances(sel, records, guards, summary)
    sel["balance_lo_mwe"] = sel["balance_mwe"] - Z90 * sel["balance_unc_mwe"]
    sel["balance_hi_mwe"] = sel["balance_mwe"] + Z90 * sel["balance_unc_mwe"]
    for c in TARGET_COLUMNS:
        if c not in sel.columns:
            sel[c] = pd.NA if c in ID_COLUMNS else np.nan
    out = sel[list(TARGET_COLUMNS)].copy()
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    out["balance_year"] = out["balance_year"].astype("int64")
    for c in ID_COLUMNS:
        out[c] = out[c].astype("string")
    out["wgms_id"] = out["wgms_id"].str.replace(r"\.0$", "", regex=True)
    return out.reset_index(drop=True), summary


def _predict_balances(sel: pd.DataFrame, records: pd.DataFrame, guards: mb.RegressionGuards,
                      summary: dict) -> pd.DataFrame:
    key_col = "sgi_id" if "sgi_id" in records.columns else "wgms_id"
    sel = sel.copy()
    sel["record_key"] = link_products(sel, records).to_numpy()
    if key_col == "wgms_id":
        wid = sel["wgms_id"].astype("string") if "wgms_id" in sel.columns else pd.Series(
            pd.NA, index=sel.index, dtype="string")
        sel["wgms_id"] = wid.fillna(sel["record_key"].astype("string"))
    rec = records.dropna(subset=["annual_balance_mwe"]).copy()
    rec["record_key"] = rec[key_col].astype("string")
    rec = rec.drop_duplicates(["record_key", "year"]).set_index(["record_key", "year"])
    keys = list(zip(sel["record_key"].astype("string"), sel["balance_year"].astype("int64"),
                    strict=True))
    bal = rec["annual_balance_mwe"]
    sel["record_balance_mwe"] = [float(bal.get(k, np.nan)) if isinstance(k[0], str) else np.nan
                                 for k in keys]
    fit_rows = sel[np.isfinite(sel["record_balance_mwe"]) & np.isfinite(sel["aar"])]
    summary["n_fit_glacier_years"] = int(len(fit_rows))
    if len(fit_rows) < 3:
        summary["fit"] = "fewer than 3 glacier-years with both AAR and a record balance"
        return sel
    res = mb.regress(fit_rows["aar"].to_numpy(float),
                     fit_rows["record_balance_mwe"].to_numpy(float),
                     fit_rows["glacier"].astype(str).to_numpy(), "aar", guards)
    gfit, g_rmse = res.global_fit, res.global_logo.rmse_mwe
    own = {gf.glacier: gf for gf in res.glaciers if gf.status == "fitted"}
    names = sel["glacier"].astype(str).to_numpy()
    slope = np.array([own[n].fit.slope if n in own else gfit.slope for n in names])
    icpt = np.array([own[n].fit.intercept if n in own else gfit.intercept for n in names])
    rmse = np.array([own[n].loyo.rmse_mwe if n in own else g_rmse for n in names])
    aar = sel["aar"].to_numpy(float)
    aar_unc = (sel["aar_unc"].to_numpy(float) if "aar_unc" in sel.columns
               else np.full(len(sel), np.nan))
    sel["balance_model"] = np.where(np.isin(names, list(own)), "glacier", "global")
    sel["balance_slope_mwe"], sel["balance_intercept_mwe"] = slope, icpt
    sel["balance_rmse_mwe"] = rmse
    sel["balance_mwe"] = icpt + slope * aar
    sel["balance_unc_mwe"] = np.sqrt(rmse**2 + (slope * np.nan_to_num(aar_unc)) ** 2)
    summary.update({
        "global_fit": {"slope": gfit.slope, "intercept": gfit.intercept,
                       "leave_one_glacier_out_rmse_mwe": g_rmse},
        "n_glacier_lines": len(own),
        "guarded": [g.glacier for g in res.glaciers if g.status == "guarded"],
    })
    return sel


def write_targets(table: pd.DataFrame, dest: str | Path, meta: dict | None = None, *,
                  overwrite: bool = False) -> Path:
    """CSV (full float precision) plus ``<dest>.json``: every column's unit and meaning.

    An existing CSV or sidecar is an InputError unless `overwrite`."""
    dest = Path(dest)
    if dest.suffix.lower() != ".csv":
        raise InputError(dest, "targets output must end in .csv")
    side = dest.with_name(dest.name + ".json")
    for path in (dest, side):
        check_output(path, overwrite=overwrite)
    with atomic_output(dest, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    write_json(side, {
        "columns": {c: {"unit": u, "meaning": m} for c, (u, m) in TARGET_COLUMNS.items()},
        **(meta or {})}, strict=True, overwrite=overwrite)
    return dest


def read_targets(path: str | Path) -> pd.DataFrame:
    """A targets CSV back, with the same values and types `build_targets` gave."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "targets file not found")
    df = pd.read_csv(path, dtype={c: "string" for c in ID_COLUMNS})
    missing = [c for c in TARGET_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    df["balance_year"] = df["balance_year"].astype("int64")
    return df
