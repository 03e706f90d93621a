"""End-of-season products joined with balance records and regressed against them."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from glacierfacies._io import atomic_output
from glacierfacies.errors import InputError
from glacierfacies.products import massbalance as mb
from glacierfacies.products.hemisphere import resolve_hemisphere, season_settings
from glacierfacies.products.wgms import link_glaciers, wgms_aar_table


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


def _scatter(predicted: np.ndarray, observed: np.ndarray, title: str, dest: Path) -> None:
    """Held-out predicted vs observed balance, with the 1:1 line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = np.isfinite(predicted) & np.isfinite(observed)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(observed[ok], predicted[ok], s=6, alpha=0.5, edgecolors="none")
    if ok.any():
        lo = float(min(observed[ok].min(), predicted[ok].min()))
        hi = float(max(observed[ok].max(), predicted[ok].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        ax.legend(loc="upper left")
    ax.set_xlabel("observed annual balance (m w.e.)")
    ax.set_ylabel("predicted, held out (m w.e.)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(dest)
    plt.close(fig)


def _score_line(s: mb.Score) -> str:
    return f"r {s.r:.3f}, RMSE {s.rmse_mwe:.3f} m w.e., n {s.n}"


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
) -> dict:
    """End-of-season selection, join with balances, regressions; writes OUT_DIR.

    `products=None` uses the records' own AAR and ELA as the products (the ceiling a
    satellite AAR could reach). OUT_DIR gets ``stats.json``, ``per_glacier.csv``,
    ``glacier_years.csv`` (joined table with held-out predictions) and ``scatter_*.png``.
    Held-out r and RMSE carry bootstrap intervals over glacier-years (`n_boot` resamples,
    `seed`; 0 resamples: none).
    """
    out_dir = Path(out_dir)
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
    with atomic_output(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "stats.json").write_text(
            json.dumps(_clean(stats), indent=2, default=_json_default, allow_nan=False))
        per_glacier.to_csv(tmp / "per_glacier.csv", index=False)
        keep = [c for c in table.columns if c != "geometry"]
        table[keep].to_csv(tmp / "glacier_years.csv", index=False)
        y = table["annual_balance_mwe"].to_numpy(float)
        for k, v in results.items():
            _scatter(v.global_predicted, y, f"balance ~ {k}, one global line, leave-one-glacier-"
                     f"out\n{_score_line(v.global_logo)}", tmp / f"scatter_{k}_global.png")
            _scatter(v.per_glacier_predicted, y, f"balance ~ {k}, per glacier, leave-one-year-"
                     f"out\n{_score_line(v.per_glacier_loyo)}", tmp / f"scatter_{k}_glacier.png")
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


def _clean(o):
    """NaN -> null, recursively, so stats.json is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    return str(o)


def summary_lines(stats: dict) -> list[str]:
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
