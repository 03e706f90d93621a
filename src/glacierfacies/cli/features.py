"""`glacierfacies features`: the 11-feature stack of one scene as a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output_folder
from glacierfacies.cli.main import cli
from glacierfacies.errors import InputError


# ---------------------------------------------------------------- features (issue 3)
@cli.command("features")
@click.argument("scene_path", metavar="SCENE", type=click.Path(path_type=Path))
@click.option("--dem", "dem", required=True, type=click.Path(path_type=Path),
              help="DEM raster (any CRS; reprojected bilinearly onto the scene's 10 m grid).")
@click.option("--outlines", "outlines", required=True, type=click.Path(path_type=Path),
              help="Glacier outlines (GeoPackage/Shapefile; any CRS).")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output 11-band GeoTIFF.")
@click.option("--band-map", default=None,
              help="Plain GeoTIFF only: blue=1,green=2,red=3,nir=4,swir1=5,swir2=6.")
@click.option("--scale", type=float, default=None, help="Plain GeoTIFF only: DN scale.")
@click.option("--offset", type=float, default=None, help="Plain GeoTIFF only: DN offset.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def features_cmd(scene_path: Path, dem: Path, outlines: Path, output: Path,
                 band_map: str | None, scale: float | None, offset: float | None,
                 overwrite: bool) -> None:
    """Build the 11-feature stack (6 reflectances, elevation, slope, shadow_mask, hillshade,
    proximity) of SCENE (.SAFE, Landsat C2 L2 folder, S2 band folder or GeoTIFF)."""
    from glacierfacies.scenes.generic import parse_band_map
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, write_feature_stack

    if output.exists() and not overwrite:
        raise InputError(output, "output exists; pass --overwrite to replace it")
    check_output_folder(output.parent)
    try:
        bmap = parse_band_map(band_map) if band_map else None
    except ValueError as exc:
        raise InputError(None, f"--band-map: {exc}") from None
    scene = read_scene(scene_path, band_map=bmap, scale=scale, offset=offset)
    stack = build_feature_stack(scene, dem, outlines)
    write_feature_stack(stack, output, overwrite=overwrite)
    n_glac = int(len(stack.outlines))
    click.echo(f"{output}: {stack.shape[0]}x{stack.shape[1]} px, 11 bands, "
               f"{stack.valid.mean():.1%} valid, {n_glac} glacier(s), scene {scene.scene_id}")

