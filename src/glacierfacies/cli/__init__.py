"""The `glacierfacies` command line."""

from glacierfacies.cli.main import cli, main

__all__ = ["cli", "main"]
