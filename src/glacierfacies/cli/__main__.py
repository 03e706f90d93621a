"""`python -m glacierfacies.cli`: the same as the `glacierfacies` command."""

from glacierfacies.cli.main import main

__all__: list[str] = []

main()
