"""Options shared by several commands, defined once (after rasterio's `rio/options.py`)."""

from __future__ import annotations

from pathlib import Path

import click


# ---------------------------------------------------------------- map / map-many (issue 6)
def _map_options(f):
    """Options shared by `map` and `map-many`."""
    opts = [
        click.option("--dem", required=True, type=click.Path(path_type=Path),
                     help="DEM raster (any CRS; resampled to the scene grid)."),
        click.option("--outlines", required=True, type=click.Path(path_type=Path),
                     help="Glacier outlines (GeoPackage/Shapefile, any CRS)."),
        click.option("--model", "models", required=True, multiple=True,
                     type=click.Path(path_type=Path),
                     help="Model file (foldK.pt); repeat for an ensemble (mean probabilities)."),
        click.option("--buffer", default="0m", show_default=True,
                     help="Also classify pixels within this distance of the outlines (e.g. 50m)."),
        click.option("--no-smoothing", is_flag=True, help="Skip the 3x3 mode smoothing."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--tile-size", type=int, default=1024, show_default=True,
                     help="Output tile side in pixels (results do not depend on it)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
                     show_default=True, help="bf16: faster on GPUs, not bit-exact."),
        click.option("--confidence-dtype", type=click.Choice(["uint8", "float32"]),
                     default="uint8", show_default=True,
                     help="Confidence as percent (uint8, 255 nodata) or probability (float32)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f

