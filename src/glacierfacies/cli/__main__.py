"""`python -m glacierfacies.cli`: the same as the `glacierfacies` command."""

from glacierfacies.cli.main import main

main()
