"""The `glacierfacies` command line: one module per command group (after rasterio's `rio/`).

Importing this package registers every command on the `cli` group.
"""

from glacierfacies.cli import (  # noqa: F401
    dataset,
    features,
    map,
    models,
    predict,
    products,
    run,
    sample,
    targets,
    train,
)
from glacierfacies.cli.main import cli, main

__all__ = ["cli", "main"]
