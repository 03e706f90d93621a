"""`glacierfacies map` and `map-many`: facies maps of scenes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import _map_options
from glacierfacies.mapping.config import MapConfig


@cli.command("map")
@click.argument("scene", type=click.Path(path_type=Path))
@_map_options
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Facies map (Cloud-Optimised GeoTIFF); a .qml style is written beside it.")
@click.option("--confidence", "confidence_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated confidence COG here.")
@click.option("--probabilities", "probabilities_out",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated class probabilities here (8-band float32 COG; "
                   "`products --probabilities` takes it for uncertainties).")
def map_cmd(scene: Path, dem: Path, outlines: Path, models: tuple[Path, ...], buffer: str,
            no_smoothing: bool, device: str, tile_size: int, precision: str,
            confidence_dtype: str, overwrite: bool, out: Path, confidence_out: Path | None,
            probabilities_out: Path | None) -> None:
    """Map the facies of one SCENE (Sentinel-2 .SAFE, Landsat folder or GeoTIFF stack)."""
    from glacierfacies.mapping.scene_map import map_scene

    config = MapConfig(buffer=buffer, smoothing=not no_smoothing, device=device,
                       tile_size=tile_size, confidence_dtype=confidence_dtype, precision=precision)
    res = map_scene(scene, dem, outlines, list(models), out, config=config,
                    confidence_out=confidence_out, overwrite=overwrite,
                    probabilities_out=probabilities_out)
    shares = ", ".join(f"{k} {v / max(res.n_classified, 1):.0%}"
                       for k, v in res.class_counts.items() if v)
    click.echo(f"{out}: {res.n_classified} pixels classified in {res.seconds:.1f} s ({shares})")


@cli.command("map-many")
@click.argument("scenes_glob")
@_map_options
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Existing folder for <scene>_facies.tif (+ _confidence.tif).")
@click.option("--confidence", is_flag=True, help="Also write <scene>_confidence.tif.")
@click.option("--scheduler", default="local", show_default=True,
              help="'local' (a LocalCluster) or a Dask scheduler address (tcp://host:8786).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Workers of the LocalCluster (ignored with an address).")
def map_many_cmd(scenes_glob: str, dem: Path, outlines: Path, models: tuple[Path, ...],
                 buffer: str, no_smoothing: bool, device: str, tile_size: int, precision: str,
                 confidence_dtype: str, overwrite: bool, out_dir: Path, confidence: bool,
                 scheduler: str, workers: int) -> None:
    """Map every scene matching SCENES_GLOB on Dask; finished scenes are skipped on rerun."""
    from glacierfacies.mapping.distributed import expand_scenes, map_many

    config = MapConfig(buffer=buffer, smoothing=not no_smoothing, device=device,
                       tile_size=tile_size, confidence_dtype=confidence_dtype, precision=precision)
    res = map_many(expand_scenes(scenes_glob), dem, outlines, list(models), out_dir,
                   config=config, scheduler=scheduler, workers=workers, confidence=confidence,
                   overwrite=overwrite)
    click.echo(res.summary())
    if res.count("failed") or res.count("bad input"):
        sys.exit(1)

