"""`glacierfacies products` and `massbalance`: glacier products and regressions."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output
from glacierfacies.cli.main import cli
from glacierfacies.cli.options import dem_option, outlines_option, overwrite_option
from glacierfacies.errors import InputError

__all__ = ["massbalance_cmd", "products_cmd"]


@cli.command("products")
@click.argument("maps", nargs=-1, required=True, type=click.Path(path_type=Path))
@outlines_option()
@dem_option(required=False, help="DEM raster for the snowline altitude (any CRS).")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="products.gpkg (with outline geometry) or products.csv; OUTPUT.json "
                   "beside it records configuration and sources.")
@click.option("--id-column", help="Outline column naming glaciers (default: first of "
              "glacier, rgi_id, RGIId, name, Name, wgms_id).")
@click.option("--confidence", "confidence", multiple=True, type=click.Path(path_type=Path),
              help="Confidence map per MAP, in order (default: band/sibling named *confidence*).")
@click.option("--probabilities", multiple=True, type=click.Path(path_type=Path),
              help="8-band class-probability raster per MAP, in order (resolves shadow).")
@click.option("--shadow", type=click.Choice(["snowline", "exclude", "probabilities"]),
              default="snowline", show_default=True,
              help="Shadowed glacier pixels: side of the snowline they lie on (needs --dem), "
              "unobserved, or their most likely facies (needs --probabilities).")
@click.option("--refrozen-accumulation", is_flag=True,
              help="Count refrozen-like as accumulation in the AAR.")
@click.option("--scene-id", help="Scene id (single MAP; default: map tags, else file name).")
@click.option("--date", "date_", help="Acquisition date YYYY-MM-DD (single MAP).")
@click.option("--sensor", help="Sensor (single MAP).")
@overwrite_option("OUTPUT and OUTPUT.json")
def products_cmd(maps, outlines, dem, output, id_column, confidence, probabilities, shadow,
                 refrozen_accumulation, scene_id, date_, sensor, overwrite) -> None:
    """Per-glacier products (class areas, observed fraction, AAR, snowline) of facies MAPS."""
    from glacierfacies.products.massbalance import ProductConfig
    from glacierfacies.products.table import compute_products, products_sidecar, write_products

    for name, opt in (("--confidence", confidence), ("--probabilities", probabilities)):
        if opt and len(opt) != len(maps):
            raise InputError(None, f"{name} given {len(opt)} times for {len(maps)} maps")
    if output.suffix.lower() not in (".gpkg", ".csv"):
        raise InputError(output, "output must end in .gpkg or .csv")
    for path in (output, products_sidecar(output)):  # before reading any map
        check_output(path, overwrite=overwrite)
    config = ProductConfig(refrozen_is_accumulation=refrozen_accumulation, shadow=shadow)
    table = compute_products(list(maps), outlines, dem, config, list(confidence) or None,
                             list(probabilities) or None, id_column,
                             {"scene_id": scene_id, "date": date_, "sensor": sensor})
    if table.empty:
        raise InputError(outlines, "no glacier outline overlaps the map(s)")
    write_products(table, output, config, {"maps": [str(m) for m in maps],
                                           "outlines": str(outlines), "dem": str(dem)},
                   overwrite=overwrite)
    click.echo(f"{len(table)} glacier-scene rows ({table['glacier'].nunique()} glaciers, "
               f"{table['scene_id'].nunique()} scenes) -> {output}")


def _month_list(text: str) -> tuple[int, ...]:
    try:
        months = tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        months = ()
    if not months or not all(1 <= m <= 12 for m in months):
        raise InputError(None, f"--season-months must be months 1-12 separated by commas or "
                               f"'any', got {text!r}")
    return months


@cli.command("massbalance")
@click.argument("products", required=False, type=click.Path(path_type=Path))
@click.option("--wgms", "wgms_dir", type=click.Path(path_type=Path),
              help="WGMS FoG folder (overview CSV + mbdata/).")
@click.option("--glamos", type=click.Path(path_type=Path),
              help="GLAMOS massbalance_observation CSV (instead of --wgms).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (stats.json, per_glacier.csv, glacier_years.csv, plots).")
@click.option("--min-years", type=int, default=8, show_default=True,
              help="Years a glacier needs for its own regression.")
@click.option("--min-observed", type=float, default=0.8, show_default=True,
              help="Observed fraction a scene needs to be an end-of-season candidate.")
@click.option("--hydro-year-start", type=int, default=10, show_default=True,
              help="First month of the hydrological year (10 north, 4 south, 1 calendar).")
@click.option("--season-months", default="8,9,10", show_default=True,
              help="Months whose scenes may stand for the end of the ablation season "
                   "(comma list; 'any' for every month; southern hemisphere e.g. 2,3,4).")
@click.option("--no-guards", is_flag=True, help="Fit every glacier with >= --min-years alone.")
@click.option("--records-aar", is_flag=True,
              help="Use the records' own AAR/ELA as the product (the ceiling); no PRODUCTS.")
@overwrite_option("the output folder")
def massbalance_cmd(products, wgms_dir, glamos, out_dir, min_years, min_observed,
                    hydro_year_start, season_months, no_guards, records_aar, overwrite) -> None:
    """Regress annual mass balance on AAR and snowline altitude of end-of-season PRODUCTS."""
    from glacierfacies.products.glamos import read_glamos
    from glacierfacies.products.regression import massbalance_summary_lines, run_massbalance
    from glacierfacies.products.table import read_products
    from glacierfacies.products.wgms import read_wgms
    from glacierfacies.workflow.figures import massbalance_figures

    if (wgms_dir is None) == (glamos is None):
        raise InputError(None, "give exactly one of --wgms DIR or --glamos FILE")
    if (products is None) != records_aar:
        raise InputError(None, "give PRODUCTS, or --records-aar without PRODUCTS")
    if min_years < 3:
        raise InputError(None, f"--min-years must be >= 3, got {min_years}")
    if not 0 <= min_observed <= 1:
        raise InputError(None, f"--min-observed must be in [0, 1], got {min_observed}")
    months = None if season_months.strip().lower() == "any" else _month_list(season_months)
    check_output(out_dir, overwrite=overwrite)  # before reading the records
    source = Path(wgms_dir or glamos)
    records = read_wgms(wgms_dir) if wgms_dir else read_glamos(glamos)
    table = read_products(products) if products is not None else None
    stats = run_massbalance(table, records, out_dir, products or source, min_years,
                            min_observed, hydro_year_start, guards=not no_guards,
                            season_months=months, overwrite=overwrite)
    massbalance_figures(out_dir)
    for line in massbalance_summary_lines(stats):
        click.echo(line)
    click.echo(f"-> {out_dir}")

