"""Options shared by several commands, defined once (after rasterio's `rio/options.py`).

Each is a decorator, or a factory of one where commands differ only in whether the option
is required, must exist, or what it replaces, so an option reads the same in every command.
`--overwrite` means the same everywhere: without it a command refuses to replace an existing
output (one line naming it, exit 1) and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from glacierfacies.mapping.config import MapConfig

__all__ = [
    "dem_option",
    "device_option",
    "fold_options",
    "map_config",
    "map_config_options",
    "map_input_options",
    "models_option",
    "outlines_option",
    "point_table_options",
    "overwrite_option",
    "patch_dtype_option",
    "tile_size_option",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*options: Decorator) -> Decorator:
    """Apply several options in the order given (as they appear in `--help`)."""

    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return decorate


#: How a point table's band values are read (`dataset import-points`, `predict`): the same
#: options, so a table that imports also predicts.
point_table_options = _stack(
    click.option("--bands", default=None,
                 help="sentinel2 | landsat89 | blue=COL,green=COL,... | a preset with "
                      "overrides, e.g. sentinel2,swir2=B11 (default: columns named "
                      "blue..swir2). A column read for two bands is a named substitution: "
                      "reported, and recorded in predict's scores."),
    click.option("--scale", type=float, default=None, help="value * scale + offset."),
    click.option("--offset", type=float, default=None),
    click.option("--class-map", default=None,
                 help="CODE=class,... or a JSON/YAML file; rows of unmapped classes are "
                      "dropped (import-points) or not scored (predict)."),
    click.option("--layer", default=None, help="GeoPackage layer."),
)


def dem_option(*, required: bool = True, must_exist: bool = False,
               help: str = "DEM raster (any CRS; reprojected bilinearly onto the scene's "
                           "10 m grid).") -> Decorator:
    """`--dem`: the elevation raster the terrain features (or snowline altitude) come from."""
    return click.option("--dem", "dem", required=required,
                        type=click.Path(exists=must_exist, path_type=Path), help=help)


def outlines_option(*, required: bool = True, must_exist: bool = False) -> Decorator:
    """`--outlines`: the glacier polygons (reprojected onto the raster they are used with)."""
    return click.option("--outlines", "outlines", required=required,
                        type=click.Path(exists=must_exist, path_type=Path),
                        help="Glacier outlines (GeoPackage/Shapefile, any CRS).")


def device_option(*, auto: bool = False) -> Decorator:
    """`--device`: where torch runs. With `auto` (training) the default is left to the
    preset, which takes CUDA when present; mapping, features and dataset build default to
    'auto' (CUDA when present)."""
    if auto:
        return click.option("--device", default=None,
                            help="auto (default: CUDA when present, else CPU), cpu, cuda or "
                                 "cuda:N.")
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")


def overwrite_option(what: str = "the output", *, help: str | None = None) -> Decorator:
    """`--overwrite`: replace `what` if present; without the flag the command refuses."""
    return click.option("--overwrite", is_flag=True,
                        help=help or f"Replace {what} if present (default: refuse).")


models_option: Decorator = click.option(
    "--model", "models", required=True, multiple=True, type=click.Path(path_type=Path),
    help="Model file (foldK.pt) or builtin:NAME (`glacierfacies models` lists them); "
         "repeat for an ensemble (mean probabilities).")

tile_size_option: Decorator = click.option(
    "--tile-size", type=int, default=1024, show_default=True,
    help="Output tile side in pixels (results do not depend on it).")

patch_dtype_option: Decorator = click.option(
    "--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
    help="Storage type of the patches.")

fold_options: Decorator = _stack(
    click.option("--folds", "k_folds", default=6, show_default=True,
                 help="Number of folds, assigned by glacier."),
    click.option("--fold-column", default=None,
                 help="Use this column of the labels as the folds (instead of --folds)."),
    click.option("--seed", default=0, show_default=True, help="Seed of the fold assignment."),
)


map_input_options: Decorator = _stack(dem_option(), outlines_option(), models_option)
"""`--dem`, `--outlines` and `--model` of `map` and `map-many`."""

map_config_options: Decorator = _stack(
    click.option("--buffer", default="0m", show_default=True,
                 help="Also classify pixels within this distance of the outlines (e.g. 50m)."),
    click.option("--no-smoothing", is_flag=True, help="Skip the 3x3 mode smoothing."),
    device_option(),
    tile_size_option,
    click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
                 show_default=True, help="bf16: faster on GPUs, not bit-exact."),
    click.option("--confidence-dtype", type=click.Choice(["uint8", "float32"]),
                 default="uint8", show_default=True,
                 help="Confidence as percent (uint8, 255 nodata) or probability (float32)."),
)
"""The options of `map` and `map-many` that make their `MapConfig` (see `map_config`)."""


def map_config(buffer: str, no_smoothing: bool, device: str, tile_size: int, precision: str,
               confidence_dtype: str, read=None) -> MapConfig:
    """The `MapConfig` of the values `map_config_options` (and `read_options`) parsed."""
    extra = {} if read is None else {"read": read}
    return MapConfig(buffer=buffer, smoothing=not no_smoothing, device=device,
                     tile_size=tile_size, confidence_dtype=confidence_dtype, precision=precision,
                     **extra)


# ---------------------------------------------------------------- scene reading (issue 12)
def read_options_decorator(f):
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
        click.option("--resolution", type=click.Choice(["10", "20", "30"]), default="10",
                     show_default=True, callback=lambda _c, _p, v: float(v),
                     help="Target grid in metres (30 for Landsat-only work); a model is "
                          "used only on the grid it was trained on."),
        click.option("--fill-gaps", type=click.IntRange(0, 64), default=0, show_default=True,
                     help="Inpaint optical gaps (e.g. Landsat 7 SLC-off stripes) of up to N "
                          "pixels; never pixels the product mask removed; QA bit 8."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


READ_OPTION_NAMES = ("band_map", "scale", "offset", "nodata", "no_product_mask",
                     "mask_saturated", "s2_offset", "resolution",
                     "fill_gaps")


def read_options(kwargs: dict):
    """Pop the `read_options_decorator` values out of a command's kwargs into a `ReadOptions`."""
    from glacierfacies.scenes.options import ReadOptions

    return ReadOptions.from_cli(**{k: kwargs.pop(k) for k in READ_OPTION_NAMES})


