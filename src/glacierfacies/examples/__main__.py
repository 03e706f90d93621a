"""`python -m glacierfacies.examples [NAME]` prints the folder of an example data set."""

import sys

from glacierfacies.examples import example_path

print(example_path(sys.argv[1] if len(sys.argv) > 1 else "athabasca"))
