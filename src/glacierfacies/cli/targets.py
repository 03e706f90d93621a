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
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="targets.csv (+ targets.csv.json with every column's unit and meaning); "
                   "with --format pygem a folder.")
@click.option("--format", "fmt", type=click.Choice(["targets", "pygem"]), default="targets",
              show_default=True,
              help="pygem: per glacier <RGI id>_snowline_elev.csv as PyGEM's snowline_1d "
                   "reader takes it, plus per scene the facies + confidence stack COG "
                   "(docs/massbalance.md).")
@click.option("--ref-dem", default=None,
              help="pygem: name of the DEM the altitudes come from (default: its file name).")
@click.option("--ref-dem-year", type=int, default=None,
              help="pygem: year of the DEM's elevations (required with --format pygem).")
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
def export_targets_cmd(products, output, fmt, ref_dem, ref_dem_year, wgms_dir, glamos, rgi6,
                       min_observed, min_years, no_guards, rule, hemisphere, season_months,
                       hydro_year_start, overwrite) -> None:
    """One row per glacier and balance year of PRODUCTS: RGI/WGMS ids, AAR, snowline and firn
    line with uncertainties, observed fraction, and the predicted annual balance with its
    interval (the glacier's own line where it passes the guards, else the global line).
    With --format pygem: PyGEM's per-glacier snowline files and the facies stacks."""
    if fmt == "pygem":
        _export_pygem(products, output, ref_dem, ref_dem_year, rgi6, min_observed,
                      hydro_year_start, overwrite)
        return
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


def _export_pygem(products: Path, output: Path, ref_dem: str | None, ref_dem_year: int | None,
                  rgi6: Path | None, min_observed: float, hydro_year_start: int | None,
                  overwrite: bool) -> None:
    """OUTPUT/<id>_snowline_elev.csv per glacier + OUTPUT/stacks/<stem>_facies_stack.tif."""
    import json

    from glacierfacies.mapping.facies_stack import write_facies_stack
    from glacierfacies.products.pygem import snowline_tables, write_snowline_csvs
    from glacierfacies.products.table import products_sidecar

    if output.exists() and not output.is_dir():
        raise InputError(output, "with --format pygem the output is a folder")
    if ref_dem_year is None:
        raise InputError(None, "--format pygem needs --ref-dem-year (the year of the DEM's "
                               "elevations, PyGEM's ref_dem_year)")
    side = products_sidecar(products)
    sources = json.loads(side.read_text()).get("sources", {}) if side.is_file() else {}
    if ref_dem is None:
        ref_dem = Path(sources["dem"]).name if sources.get("dem") else "unknown"
    table = read_linked_products(products, rgi6, min_observed, hydro_year_start)
    tables = snowline_tables(table, ref_dem=ref_dem, ref_dem_year=ref_dem_year,
                             min_observed=min_observed)
    if not tables:
        raise InputError(products, f"no glacier has a snowline in a scene observed >= "
                                   f"{min_observed:.0%}")
    paths = write_snowline_csvs(tables, output, overwrite=overwrite)
    maps = [Path(m) for m in sources.get("maps", [])] or sorted(
        (products.parent.parent / "maps").glob("*_facies.tif"))
    stacks = []
    for m in maps:
        prob = m.with_name(m.name.replace("_facies.tif", "_probabilities.tif"))
        if not prob.is_file():
            continue
        conf = m.with_name(m.name.replace("_facies.tif", "_confidence.tif"))
        (output / "stacks").mkdir(exist_ok=True)
        stacks.append(write_facies_stack(
            prob, output / "stacks" / m.name.replace("_facies.tif", "_facies_stack.tif"),
            confidence=conf if conf.is_file() else None, overwrite=overwrite))
    n_rows = sum(len(t) for t in tables.values())
    click.echo(f"{len(paths)} PyGEM snowline files ({n_rows} dates), {len(stacks)} facies "
               f"stacks -> {output}")
