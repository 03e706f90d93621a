"""`glacierfacies features`: the 11-feature stack of one scene as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output
from glacierfacies.cli.main import cli
from glacierfacies.cli.options import (
    dem_option,
    device_option,
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
@device_option()
@read_options_decorator
@overwrite_option("OUTPUT")
def features_cmd(scene_path: Path, dem: Path, outlines: Path, output: Path, device: str,
                 overwrite: bool, **read_kw) -> None:
    """Build the 11-feature stack (6 reflectances, elevation, slope, shadow_mask, hillshade,
    proximity) of SCENE (.SAFE/.SAFE.zip, Landsat C2 L2 folder/.tar, HLS granule, S2 band
    folder or GeoTIFF)."""
    from glacierfacies.mapping.config import check_device
    from glacierfacies.mapping.inference import auto_device
    from glacierfacies.stack import write_feature_stack_blocks

    device = check_device(auto_device(device))  # terrain on CUDA when present
    options = read_options(read_kw)
    check_output(output, overwrite=overwrite)  # before reading anything
    # block by block (RAM of one block); equal to the whole-scene stack on glacier pixels
    info = write_feature_stack_blocks(scene_path, dem, outlines, output, read_options=options,
                                      overwrite=overwrite, device=device)
    h, w = info["shape"]
    click.echo(f"{output}: {h}x{w} px, 11 bands, {info['valid_fraction']:.1%} valid, "
               f"{info['glaciers']} glacier(s), scene {info['scene_id']}")
