"""End-of-season products joined with balance records and regressed against them.

Numbers only: `run_massbalance` writes stats.json and the tables; `scatter_panels` gives the
held-out predictions that `workflow.figures.massbalance_figures` draws as scatter_*.png.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies._io import atomic_output, check_output, to_json
from glacierfacies.errors import InputError
from glacierfacies.products import massbalance as mb
from glacierfacies.products.hemisphere import resolve_hemisphere, season_settings
from glacierfacies.products.wgms import link_glaciers, wgms_aar_table

__all__ = ["join_balances", "link_products", "run_massbalance", "scatter_panels",
           "massbalance_summary_lines", "select_end_of_season"]


# ---------------------------------------------------------------- mass balance
def select_end_of_season(products: pd.DataFrame, min_observed: float = 0.8,
                         start_month: int | None = None,
                         season_months: tuple[int, ...] | None | str = "auto",
                         rule: str = "robust", hemisphere: str | None = None,
                         source: Path | None = None) -> pd.DataFrame:
    """Rows of the end-of-season scene per glacier and balance year (+ column ``year``).

    Season window and hydrological-year start default to the hemisphere's (`hemisphere`,
    else the table's ``hemisphere`` column; see `hemisphere.resolve_hemisphere`); explicit
    values apply to every row. `rule` is `massbalance.end_of_season`'s; the chosen rule and
    window are written in the columns ``end_of_season_rule`` and ``season_months``.
    """
    ok = products["date"].notna()
    p = products[ok].reset_index(drop=True)
    if season_months == "auto" or start_month is None:
        p["hemisphere"] = resolve_hemisphere(p, hemisphere, source).to_numpy()
    elif hemisphere not in (None, "auto"):
        p["hemisphere"] = hemisphere
    parts = []
    groups = p.groupby("hemisphere", sort=True) if "hemisphere" in p.columns else [(None, p)]
    for hemi, part in groups:
        months, start = ((season_months, start_month) if hemi is None
                         else season_settings(hemi, season_months, start_month))
        dates = part["date"].to_numpy().astype("datetime64[D]")
        unc = part["aar_unc"].to_numpy(float) if "aar_unc" in part.columns else None
        idx = mb.end_of_season(part["glacier"].astype(str).to_numpy(), dates,
                               part["aar"].to_numpy(float),
                               part["observed_fraction"].to_numpy(float),
                               min_observed=min_observed, start_month=start,
                               season_months=months, rule=rule, aar_unc=unc)
        sel = part.iloc[idx].copy()
        sel_dates = sel["date"].to_numpy().astype("datetime64[D]")
        sel["year"] = (mb.hydrological_year(sel_dates, start) if months is None
                       else mb.balance_year(sel_dates, months, start))
        sel["end_of_season_rule"] = rule
        sel["season_months"] = "any" if months is None else ",".join(map(str, months))
        parts.append(sel)
    out = pd.concat(parts) if parts else p.iloc[:0].assign(year=pd.Series(dtype="int64"))
    return out.sort_values(["glacier", "year"], kind="stable").reset_index(drop=True)


def link_products(products: pd.DataFrame, records: pd.DataFrame) -> pd.Series:
    """Record key per product row: by a wgms_id column, else rgi_id, else the glacier name."""
    key = pd.Series(pd.NA, index=products.index, dtype="string")
    for c in ("wgms_id", "sgi_id", "rgi6_id", "rgi_id", "glacier", "name"):
        if c in products.columns and key.isna().any():
            vals = products[c].astype("string")
            if c == "wgms_id":
                vals = vals.str.replace(r"\.0$", "", regex=True)
            found = link_glaciers(vals, records)
            key = key.fillna(found)
    return key


def join_balances(selected: pd.DataFrame, records: pd.DataFrame, source: Path) -> pd.DataFrame:
    """End-of-season products with the annual balance of the same glacier and year."""
    key_col = "sgi_id" if "sgi_id" in records.columns else "wgms_id"
    sel = selected.copy()
    sel["record_key"] = link_products(sel, records).to_numpy()
    rec = records.dropna(subset=["annual_balance_mwe"]).copy()
    rec["record_key"] = rec[key_col].astype("string")
    rec = rec.drop_duplicates(["record_key", "year"])
    rec = rec[["record_key", "year", "annual_balance_mwe", "aar", "ela_m"]].rename(
        columns={"aar": "record_aar", "ela_m": "record_ela_m"})
    sel["year"] = sel["year"].astype("int64")
    rec["year"] = rec["year"].astype("int64")
    joined = sel.dropna(subset=["record_key"]).merge(rec, on=["record_key", "year"])
    if joined.empty:
        linked = sorted(set(sel["record_key"].dropna()))
        raise InputError(
            source,
            f"no overlap between products ({sel['glacier'].nunique()} glaciers, years "
            f"{sel['year'].min()}-{sel['year'].max()}; linked to records: "
            f"{', '.join(linked[:5]) or 'none'}) and the mass-balance records")
    return joined


def _score_line(s: dict) -> str:
    """A score of stats.json as a title line, "r 0.650, RMSE 0.600 m w.e., n 120" (null: nan)."""
    r, rmse = (np.nan if s[k] is None else s[k] for k in ("r", "rmse_mwe"))
    return f"r {r:.3f}, RMSE {rmse:.3f} m w.e., n {s['n']}"


def scatter_panels(out_dir: str | Path) -> list[dict]:
    """The held-out predictions of a finished `run_massbalance` folder, one panel per
    product and regression: name (scatter_<product>_<global|glacier>), title, predicted and
    observed balance (m w.e.), read back from its stats.json and glacier_years.csv."""
    out_dir = Path(out_dir)
    stats = json.loads((out_dir / "stats.json").read_text())
    table = pd.read_csv(out_dir / "glacier_years.csv")
    y = table["annual_balance_mwe"].to_numpy(float)
    panels = []
    for k, r in stats["regressions"].items():
        panels.append({"name": f"scatter_{k}_global", "observed": y,
                       "predicted": table[f"pred_global_{k}"].to_numpy(float),
                       "title": f"balance ~ {k}, one global line, leave-one-glacier-out\n"
                                f"{_score_line(r['global_leave_one_glacier_out'])}"})
        panels.append({"name": f"scatter_{k}_glacier", "observed": y,
                       "predicted": table[f"pred_glacier_{k}"].to_numpy(float),
                       "title": f"balance ~ {k}, per glacier, leave-one-year-out\n"
                                f"{_score_line(r['per_glacier_leave_one_year_out'])}"})
    return panels


def run_massbalance(
    products: pd.DataFrame | None,
    records: pd.DataFrame,
    out_dir: str | Path,
    source: Path,
    min_years: int = 8,
    min_observed: float = 0.8,
    start_month: int | None = None,
    guards: bool = True,
    season_months: tuple[int, ...] | None | str = "auto",
    rule: str = "robust",
    hemisphere: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    overwrite: bool = False,
) -> dict:
    """End-of-season selection, join with balances, regressions; writes OUT_DIR.

    `products=None` uses the records' own AAR and ELA as the products (the ceiling a
    satellite AAR could reach). OUT_DIR gets ``stats.json`` (strict JSON: NaN -> null),
    ``per_glacier.csv`` and ``glacier_years.csv`` (joined table with held-out predictions);
    `workflow.figures.massbalance_figures` adds the ``scatter_*.png`` from them. Held-out r
    and RMSE carry bootstrap intervals over glacier-years (`n_boot` resamples, `seed`; 0
    resamples: none). An existing OUT_DIR is an InputError unless `overwrite` (then it is
    replaced whole).
    """
    out_dir = check_output(out_dir, overwrite=overwrite)
    if products is None:
        table = wgms_aar_table(records).rename(
            columns={"ela_m": "snowline_m"})
        table["glacier"] = table[("sgi_id" if "sgi_id" in table.columns else "wgms_id")
                                 ].astype(str)
        table["record_aar"] = table["aar"]
        n_selected = len(table)
    else:
        selected = select_end_of_season(products, min_observed, start_month, season_months,
                                        rule, hemisphere, source)
        if selected.empty:
            raise InputError(source, f"no scene has observed_fraction >= {min_observed}, "
                                     f"a finite AAR and a month in the season window "
                                     f"({season_months})")
        n_selected = len(selected)
        table = join_balances(selected, records, source)
    g = (mb.RegressionGuards(min_years=min_years) if guards
         else mb.RegressionGuards.off(min_years=min_years))
    results: dict[str, mb.RegressionResult] = {}
    for product in ("aar", "snowline_m"):
        if product not in table.columns:
            continue
        x = table[product].to_numpy(float)
        ok = np.isfinite(x)
        if ok.sum() < 3 or pd.Series(table["glacier"][ok]).nunique() < 1:
            continue
        res = mb.regress(x, table["annual_balance_mwe"].to_numpy(float),
                         table["glacier"].astype(str).to_numpy(), product, g, n_boot, seed)
        results[product] = res
        table[f"pred_global_{product}"] = res.global_predicted
        table[f"pred_glacier_{product}"] = res.per_glacier_predicted
    if "aar" not in results:
        raise InputError(source, "fewer than 3 glacier-years with both AAR and a balance")
    stats = {
        "source": str(source),
        "product_source": "mass-balance records' own AAR/ELA" if products is None
        else "facies products",
        "n_product_rows_selected": int(n_selected),
        "n_glacier_years": int(len(table)),
        "n_glaciers": int(table["glacier"].nunique()),
        "min_observed": min_observed,
        **({} if products is None else _season_stats(table, rule)),
        "scores": "r and RMSE pooled over all held-out predictions",
        "bootstrap": {"resamples": int(n_boot), "seed": int(seed), "over": "glacier-years",
                      "interval": "2.5-97.5 percentiles (r_ci95, rmse_mwe_ci95)"},
        "regressions": {k: v.to_dict() for k, v in results.items()},
    }
    per_glacier = pd.DataFrame([
        {"product": k, "glacier": gf.glacier, "n_years": gf.n_years, "status": gf.status,
         "reason": gf.reason,
         **({f"fit_{a}": b for a, b in asdict(gf.fit).items()} if gf.fit else {}),
         **({f"loyo_{a}": b for a, b in asdict(gf.loyo).items()} if gf.loyo else {})}
        for k, v in results.items() for gf in v.glaciers
    ])
    with atomic_output(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir()
        (tmp / "stats.json").write_text(to_json(stats, indent=2, strict=True))
        per_glacier.to_csv(tmp / "per_glacier.csv", index=False)
        keep = [c for c in table.columns if c != "geometry"]
        table[keep].to_csv(tmp / "glacier_years.csv", index=False)
    return stats


def _season_stats(table: pd.DataFrame, rule: str) -> dict:
    """How the end-of-season scenes were chosen, per hemisphere (for stats.json)."""
    hemi = table["hemisphere"] if "hemisphere" in table.columns else pd.Series(
        "given", index=table.index)
    windows = {str(h): sorted(set(table.loc[hemi == h, "season_months"].astype(str)))
               for h in sorted(set(hemi))} if "season_months" in table.columns else {}
    return {"end_of_season_rule": rule,
            "hemispheres": {str(k): int(v) for k, v in hemi.value_counts().items()},
            "season_months": windows,
            "balance_year": "the hydrological year in which the scene's season window opens"}


def massbalance_summary_lines(stats: dict) -> list[str]:
    """Human summary of `run_massbalance` stats for the CLI."""
    lines = [f"{stats['n_glacier_years']} glacier-years of {stats['n_glaciers']} glaciers "
             f"({stats['product_source']})"]
    for k, r in stats["regressions"].items():
        gl, pg = r["global_leave_one_glacier_out"], r["per_glacier_leave_one_year_out"]
        lines.append(f"balance ~ {k}: global leave-one-glacier-out r {_f(gl['r'])}"
                     f"{_ci(gl.get('r_ci95'))} RMSE {_f(gl['rmse_mwe'])}"
                     f"{_ci(gl.get('rmse_mwe_ci95'))} m w.e. (n {gl['n']}); per-glacier "
                     f"leave-one-year-out r {_f(pg['r'])}{_ci(pg.get('r_ci95'))} RMSE "
                     f"{_f(pg['rmse_mwe'])}{_ci(pg.get('rmse_mwe_ci95'))} (n {pg['n']}, "
                     f"{r['n_fitted']} fitted, {len(r['guarded'])} guarded, "
                     f"{len(r['skipped'])} skipped)")
    return lines


def _f(v) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{_f(ci[0])}, {_f(ci[1])}]"
