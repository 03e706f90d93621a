"""`glacierfacies map` and `map-many`: facies maps of scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import (
    map_config,
    map_config_options,
    map_input_options,
    overwrite_option,
    read_options,
    read_options_decorator,
)

__all__ = ["map_cmd", "map_many_cmd"]


@cli.command("map")
@click.argument("scene", type=click.Path(path_type=Path))
@map_input_options
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Facies map (Cloud-Optimised GeoTIFF); a .qml style is written beside it.")
@click.option("--confidence", "confidence_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated confidence COG here.")
@click.option("--probabilities", "probabilities_out",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where the calibrated class probabilities go (8-band float32 COG, what "
                   "`products` draws its uncertainties from; default: <OUT stem>"
                   "_probabilities.tif beside the map, named in the map's PROBABILITIES tag).")
@click.option("--no-probabilities", is_flag=True,
              help="Do not write the probabilities: `products` then falls back to the "
                   "confidence bound (labelled in `uncertainty_method`).")
@map_config_options
@read_options_decorator
@overwrite_option("the map, its .qml style and the confidence map")
def map_cmd(scene: Path, dem: Path, outlines: Path, models: tuple[Path, ...], out: Path,
            confidence_out: Path | None, probabilities_out: Path | None,
            no_probabilities: bool, overwrite: bool, **options) -> None:
    """Map the facies of one SCENE (Sentinel-2 .SAFE/.SAFE.zip, Landsat folder/.tar, HLS
    granule, GeoTIFF stack, or a STAC item JSON); a STAC Item of the map is written beside
    it (<map stem>.stac.json)."""
    from glacierfacies.mapping.scene_map import map_scene

    if no_probabilities:
        probabilities_out = None
    elif probabilities_out is None:
        probabilities_out = out.with_name(out.stem + "_probabilities.tif")
    read = read_options(options)
    res = map_scene(scene, dem, outlines, list(models), out,
                    config=map_config(**options, read=read), confidence_out=confidence_out,
                    overwrite=overwrite, probabilities_out=probabilities_out)
    shares = ", ".join(f"{k} {v / max(res.n_classified, 1):.0%}"
                       for k, v in res.class_counts.items() if v)
    click.echo(f"{out}: {res.n_classified} pixels classified in {res.seconds:.1f} s ({shares})")


@cli.command("map-many")
@click.argument("scenes_glob")
@map_input_options
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Existing folder for <scene>_facies.tif (+ _confidence.tif).")
@click.option("--confidence", is_flag=True, help="Also write <scene>_confidence.tif.")
@map_config_options
@read_options_decorator
@click.option("--scheduler", default="local", show_default=True,
              help="'local' (a LocalCluster) or a Dask scheduler address (tcp://host:8786).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Workers of the LocalCluster (ignored with an address).")
@overwrite_option(help="Map again the scenes whose map exists (default: skip them).")
def map_many_cmd(scenes_glob: str, dem: Path, outlines: Path, models: tuple[Path, ...],
                 out_dir: Path, confidence: bool, scheduler: str, workers: int,
                 overwrite: bool, **options) -> None:
    """Map every scene matching SCENES_GLOB (or every item of a STAC ItemCollection /
    catalog) on Dask; finished scenes are skipped on rerun; OUT_DIR/catalog.json is a static
    STAC catalog of the maps."""
    from glacierfacies.mapping.distributed import map_many
    from glacierfacies.scenes.reader import expand_scenes

    read = read_options(options)
    res = map_many(expand_scenes(scenes_glob), dem, outlines, list(models), out_dir,
                   config=map_config(**options, read=read), scheduler=scheduler, workers=workers,
                   confidence=confidence, overwrite=overwrite)
    click.echo(res.summary())
    if res.count("failed") or res.count("bad input"):
        sys.exit(1)
