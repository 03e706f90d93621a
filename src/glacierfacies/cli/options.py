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



# ---------------------------------------------------------------- scene reading (issue 12)
def _read_options(f):
    """How scenes are read, on every command that reads one (features, map, map-many,
    dataset build): `read_options(kwargs)` pops them into a `ReadOptions`."""
    opts = [
        click.option("--band-map", default=None,
                     help="GeoTIFF stacks: which band is which, "
                          "blue=1,green=2,red=3,nir=4,swir1=5,swir2=6."),
        click.option("--scale", type=float, default=None,
                     help="GeoTIFF stacks: reflectance = DN * scale + offset (e.g. 0.0001)."),
        click.option("--offset", type=float, default=None, help="GeoTIFF stacks: DN offset."),
        click.option("--nodata", type=float, default=None,
                     help="GeoTIFF stacks: a DN that is nodata (e.g. -9999)."),
        click.option("--no-product-mask", is_flag=True,
                     help="Do not apply the product's own cloud / cloud-shadow mask "
                          "(SCL, QA_PIXEL, Fmask)."),
        click.option("--mask-saturated", is_flag=True,
                     help="Also drop pixels the product flags as saturated (SCL 1, QA_RADSAT)."),
        click.option("--s2-offset", type=float, default=None,
                     help="Sentinel-2 BOA_ADD_OFFSET in DN (-1000 or 0), overriding the "
                          "metadata, the product name's _Nxxxx_ and the date."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


READ_OPTION_NAMES = ("band_map", "scale", "offset", "nodata", "no_product_mask",
                     "mask_saturated", "s2_offset")


def read_options(kwargs: dict):
    """Pop the `_read_options` values out of a command's kwargs into a `ReadOptions`."""
    from glacierfacies.scenes.options import ReadOptions

    return ReadOptions.from_cli(**{k: kwargs.pop(k) for k in READ_OPTION_NAMES})
