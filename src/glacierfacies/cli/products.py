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
              help="Confidence map per MAP, in order (default: the one the map's CONFIDENCE "
                   "tag names).")
@click.option("--probabilities", multiple=True, type=click.Path(path_type=Path),
              help="Class-probability raster per MAP, in order (default: the one the map's "
                   "PROBABILITIES tag names; `map` writes it). The uncertainties come from "
                   "it whenever there is one.")
@click.option("--shadow", type=click.Choice(["snowline", "exclude", "probabilities"]),
              default="snowline", show_default=True,
              help="Shadowed glacier pixels: side of the snowline they lie on (needs --dem), "
              "unobserved, or their most likely facies (needs --probabilities); a missing "
              "input is an error, never a silent switch.")
@click.option("--accumulation", type=click.Choice(["snow", "snow+firn"]), default="snow",
              show_default=True,
              help="What `aar` counts: end-of-season snow cover (WGMS AAR/ELA: firn exposed "
                   "below the snowline is ablation area) or snow + firn. Both AARs, the "
                   "snowline and the firn line are always written.")
@click.option("--refrozen-accumulation", is_flag=True,
              help="Count refrozen-like as accumulation in the AAR.")
@click.option("--scene-id", help="Scene id (single MAP; default: map tags, else file name).")
@click.option("--date", "date_", help="Acquisition date YYYY-MM-DD (single MAP).")
@click.option("--sensor", help="Sensor (single MAP).")
@overwrite_option("OUTPUT and OUTPUT.json")
def products_cmd(maps, outlines, dem, output, id_column, confidence, probabilities, shadow,
                 accumulation, refrozen_accumulation, scene_id, date_, sensor, overwrite) -> None:
    """Per-glacier products (class areas, observed fraction, AAR of snow and of snow + firn,
    snowline and firn line with uncertainties) of facies MAPS."""
    from glacierfacies.products.massbalance import ProductConfig
    from glacierfacies.products.table import (
        check_product_inputs,
        compute_products,
        products_sidecar,
        write_products,
    )

    for name, opt in (("--confidence", confidence), ("--probabilities", probabilities)):
        if opt and len(opt) != len(maps):
            raise InputError(None, f"{name} given {len(opt)} times for {len(maps)} maps")
    if output.suffix.lower() not in (".gpkg", ".csv"):
        raise InputError(output, "output must end in .gpkg or .csv")
    for path in (output, products_sidecar(output)):  # before reading any map
        check_output(path, overwrite=overwrite)
    config = ProductConfig(refrozen_is_accumulation=refrozen_accumulation, shadow=shadow,
                           accumulation=accumulation)
    check_product_inputs(config, dem, list(probabilities))
    check_date(date_)
    checked = check_outlines(outlines, id_column)  # invalid, non-polygon, duplicate ids
    if dem is not None:
        from glacierfacies.dem import check_dem

        check_dem(dem)  # all nodata, or voids without a nodata tag
    table = compute_products(list(maps), outlines, dem, config, list(confidence) or None,
                             list(probabilities) or None, id_column,
                             {"scene_id": scene_id, "date": date_, "sensor": sensor})
    if table.empty:
        raise InputError(outlines, "no glacier outline overlaps the map(s)")
    write_products(table, output, config, {"maps": [str(m) for m in maps],
                                           "outlines": str(outlines), "dem": str(dem),
                                           "outlines_repaired": checked["repaired"]},
                   overwrite=overwrite)
    click.echo(f"{len(table)} glacier-scene rows ({table['glacier'].nunique()} glaciers, "
               f"{table['scene_id'].nunique()} scenes) -> {output}")
    for method, n in table["uncertainty_method"].value_counts().sort_index().items():
        if str(method).startswith("fallback"):  # never silent: which rows, and why
            note = table.loc[table["uncertainty_method"] == method, "uncertainty_note"].iloc[0]
            click.echo(f"uncertainties of {n} row(s): {method} ({note})")


def check_date(date: str | None) -> None:
    """--date must be a calendar date (YYYY-MM-DD)."""
    if date is None:
        return
    import datetime as dt

    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise InputError(None, f"--date must be a date YYYY-MM-DD, got {date!r}") from None


def check_outlines(outlines: Path, id_column: str | None) -> dict[str, int]:
    """Read the outlines once before any map: polygons only, invalid ones repaired (counted),
    an id column without duplicates."""
    from glacierfacies.outlines import find_id_column, read_outlines

    gdf = read_outlines(outlines)
    find_id_column(gdf, path=outlines, id_column=id_column)
    return {"repaired": int(gdf.attrs.get("repaired", 0))}


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
@click.option("--hydro-year-start", type=int, default=None,
              help="First month of the balance records' hydrological year (default: 10 north, "
                   "4 south; 1 = calendar years). Pairs the scenes' balance years with records.")
@click.option("--season-months", default=None,
              help="Months whose scenes may stand for the end of the ablation season (comma "
                   "list of consecutive months; 'any'; default 8,9,10 north, 2,3,4 south). A "
                   "scene belongs to the balance year whose ablation season it closes.")
@click.option("--hemisphere", type=click.Choice(["auto", "north", "south"]), default="auto",
              show_default=True,
              help="auto: from the outlines' latitude (GeoPackage products, or the products' "
                   "hemisphere column); a CSV without that column needs north or south.")
@click.option("--end-of-season", "rule", type=click.Choice(["robust", "minimum", "latest"]),
              default="robust", show_default=True,
              help="robust: minimum AAR after dropping scenes that depart from their "
                   "neighbours by more than twice their combined uncertainty; minimum; latest.")
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True,
              help="Bootstrap resamples of glacier-years for the r / RMSE intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--rgi6", type=click.Path(path_type=Path),
              help="RGI 6 outlines (RGIId, GLIMSId): link RGI 7 products to WGMS through GLIMS "
                   "ids or outline overlap.")
@click.option("--no-guards", is_flag=True, help="Fit every glacier with >= --min-years alone.")
@click.option("--records-aar", is_flag=True,
              help="Use the records' own AAR/ELA as the product (the ceiling); no PRODUCTS.")
@overwrite_option("the output folder")
def massbalance_cmd(products, wgms_dir, glamos, out_dir, min_years, min_observed,
                    hydro_year_start, season_months, hemisphere, rule, n_boot, seed, rgi6,
                    no_guards, records_aar, overwrite) -> None:
    """Regress annual mass balance on AAR and snowline altitude of end-of-season PRODUCTS."""
    from glacierfacies.products.regression import massbalance_summary_lines, run_massbalance
    from glacierfacies.workflow.figures import massbalance_figures

    if (products is None) != records_aar:
        raise InputError(None, "give PRODUCTS, or --records-aar without PRODUCTS")
    if min_years < 3:
        raise InputError(None, f"--min-years must be >= 3, got {min_years}")
    if n_boot < 0:
        raise InputError(None, f"--bootstrap must be >= 0, got {n_boot}")
    check_selection_options(min_observed, hydro_year_start)
    months = parse_season_months(season_months)
    check_output(out_dir, overwrite=overwrite)  # before reading the records
    records, source = read_records(wgms_dir, glamos)
    table = (read_linked_products(products, rgi6, min_observed, hydro_year_start)
             if products is not None else None)
    stats = run_massbalance(table, records, out_dir, products or source, min_years,
                            min_observed, hydro_year_start, guards=not no_guards,
                            season_months=months, rule=rule, hemisphere=hemisphere,
                            n_boot=n_boot, seed=seed, overwrite=overwrite)
    massbalance_figures(out_dir)
    for line in massbalance_summary_lines(stats):
        click.echo(line)
    click.echo(f"-> {out_dir}")


def parse_season_months(text: str | None):
    """--season-months: None -> per hemisphere ("auto"), 'any' -> None, else a tuple."""
    if text is None or text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() == "any":
        return None
    months = _month_list(text)
    from glacierfacies.products.massbalance import _season_run

    try:
        _season_run(months)
    except ValueError as exc:
        raise InputError(None, f"--season-months: {exc}") from None
    return months


def check_selection_options(min_observed: float, hydro_year_start: int | None) -> None:
    if not 0 <= min_observed <= 1:
        raise InputError(None, f"--min-observed must be in [0, 1], got {min_observed}")
    if hydro_year_start is not None and not 1 <= hydro_year_start <= 12:
        raise InputError(None, f"--hydro-year-start must be 1..12, got {hydro_year_start}")


def read_records(wgms_dir: Path | None, glamos: Path | None, required: bool = True):
    """(records, source) from exactly one of --wgms / --glamos (or neither if not required)."""
    from glacierfacies.products.glamos import read_glamos
    from glacierfacies.products.wgms import read_wgms

    if wgms_dir is not None and glamos is not None or (required and wgms_dir is None
                                                       and glamos is None):
        raise InputError(None, "give exactly one of --wgms DIR or --glamos FILE")
    if wgms_dir is None and glamos is None:
        return None, None
    return (read_wgms(wgms_dir), Path(wgms_dir)) if wgms_dir else (read_glamos(glamos),
                                                                  Path(glamos))


def read_linked_products(path: Path, rgi6: Path | None, min_observed: float,
                         hydro_year_start: int | None):
    """A products table, with RGI 6 ids linked from RGI 7 ones when --rgi6 is given."""
    from glacierfacies.products.table import read_products

    check_selection_options(min_observed, hydro_year_start)
    if rgi6 is None:
        return read_products(path)
    from glacierfacies.products.linking import add_rgi6_ids, read_rgi6_outlines

    table = read_products(path, with_geometry=path.suffix.lower() == ".gpkg")
    geometry = table.geometry if hasattr(table, "geometry") else None
    linked = add_rgi6_ids(table, read_rgi6_outlines(rgi6), geometry)
    return linked.drop(columns="geometry", errors="ignore")
