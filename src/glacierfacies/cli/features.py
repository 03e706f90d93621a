"""`glacierfacies features`: the 11-feature stack of one scene as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output
from glacierfacies.cli.main import cli
from glacierfacies.cli.options import (
    dem_option,
    outlines_option,
    overwrite_option,
    read_options,
    read_options_decorator,
)

__all__ = ["features_cmd"]


@cli.command("features")
@click.argument("scene_path", metavar="SCENE", type=click.Path(path_type=Path))
@dem_option()
@outlines_option()
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output 11-band GeoTIFF.")
@read_options_decorator
@overwrite_option("OUTPUT")
def features_cmd(scene_path: Path, dem: Path, outlines: Path, output: Path,
                 overwrite: bool, **read_kw) -> None:
    """Build the 11-feature stack (6 reflectances, elevation, slope, shadow_mask, hillshade,
    proximity) of SCENE (.SAFE/.SAFE.zip, Landsat C2 L2 folder/.tar, HLS granule, S2 band
    folder or GeoTIFF)."""
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, write_feature_stack

    options = read_options(read_kw)
    check_output(output, overwrite=overwrite)  # before reading anything
    scene = read_scene(scene_path, options=options)
    stack = build_feature_stack(scene, dem, outlines)
    write_feature_stack(stack, output, overwrite=overwrite)
    n_glac = int(len(stack.outlines))
    click.echo(f"{output}: {stack.shape[0]}x{stack.shape[1]} px, 11 bands, "
               f"{stack.valid.mean():.1%} valid, {n_glac} glacier(s), scene {scene.scene_id}")
