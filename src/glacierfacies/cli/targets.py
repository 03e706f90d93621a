"""`glacierfacies export-targets`: mass-balance targets for glacier models (OGGM, PyGEM)."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output
from glacierfacies.cli.main import cli
from glacierfacies.cli.options import overwrite_option
from glacierfacies.cli.products import (
    parse_season_months,
    read_linked_products,
    read_records,
)
from glacierfacies.errors import InputError


@cli.command("export-targets")
@click.argument("products", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="targets.csv (+ targets.csv.json with every column's unit and meaning).")
@click.option("--wgms", "wgms_dir", type=click.Path(path_type=Path),
              help="WGMS FoG folder: fit the balance ~ AAR lines on its records.")
@click.option("--glamos", type=click.Path(path_type=Path),
              help="GLAMOS massbalance_observation CSV (instead of --wgms).")
@click.option("--rgi6", type=click.Path(path_type=Path),
              help="RGI 6 outlines (RGIId, GLIMSId): link RGI 7 products to RGI 6 / WGMS.")
@click.option("--min-observed", type=float, default=0.8, show_default=True,
              help="Observed fraction a scene needs to be an end-of-season candidate.")
@click.option("--min-years", type=int, default=8, show_default=True,
              help="Years a glacier needs for its own line.")
@click.option("--no-guards", is_flag=True, help="Fit every glacier with >= --min-years alone.")
@click.option("--end-of-season", "rule", type=click.Choice(["robust", "minimum", "latest"]),
              default="robust", show_default=True, help="End-of-season rule (see massbalance).")
@click.option("--hemisphere", type=click.Choice(["auto", "north", "south"]), default="auto",
              show_default=True, help="auto: from the outlines' latitude.")
@click.option("--season-months", default=None,
              help="Season window (default 8,9,10 north, 2,3,4 south).")
@click.option("--hydro-year-start", type=int, default=None,
              help="First month of the records' hydrological year (default 10 north, 4 south).")
@overwrite_option("OUTPUT and OUTPUT.json")
def export_targets_cmd(products, output, wgms_dir, glamos, rgi6, min_observed, min_years,
                       no_guards, rule, hemisphere, season_months, hydro_year_start,
                       overwrite) -> None:
    """One row per glacier and balance year of PRODUCTS: RGI/WGMS ids, AAR, snowline and firn
    line with uncertainties, observed fraction, and the predicted annual balance with its
    interval (the glacier's own line where it passes the guards, else the global line)."""
    from glacierfacies.products import massbalance as mb
    from glacierfacies.products.linking import read_rgi6_outlines
    from glacierfacies.products.table import read_products
    from glacierfacies.products.targets import build_targets, write_targets

    if output.suffix.lower() != ".csv":
        raise InputError(output, "targets output must end in .csv")
    if min_years < 3:
        raise InputError(None, f"--min-years must be >= 3, got {min_years}")
    for path in (output, output.with_name(output.name + ".json")):  # before any work
        check_output(path, overwrite=overwrite)
    records, source = read_records(wgms_dir, glamos, required=False)
    months = parse_season_months(season_months)
    table = read_linked_products(products, None, min_observed, hydro_year_start)
    rgi6_table = geometry = None
    if rgi6 is not None:
        rgi6_table = read_rgi6_outlines(rgi6)
        if products.suffix.lower() == ".gpkg":
            geometry = read_products(products, with_geometry=True).geometry
    guards = (mb.RegressionGuards(min_years=min_years) if not no_guards
              else mb.RegressionGuards.off(min_years=min_years))
    targets, summary = build_targets(
        table, records, min_observed=min_observed, rule=rule, hemisphere=hemisphere,
        season_months=months, start_month=hydro_year_start, guards=guards, rgi6=rgi6_table,
        geometry=geometry, source=products)
    write_targets(targets, output, {"products": str(products), "records": str(source or ""),
                                    "end_of_season_rule": rule, "min_observed": min_observed,
                                    "summary": summary}, overwrite=overwrite)
    models = targets["balance_model"].value_counts().to_dict()
    click.echo(f"{len(targets)} glacier-years of {targets['glacier'].nunique()} glaciers; "
               f"balance from: {', '.join(f'{k} {v}' for k, v in sorted(models.items()))} "
               f"-> {output}")
