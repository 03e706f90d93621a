"""glacierfacies: map glacier surface facies from Sentinel-2 and Landsat scenes.

The package import stays light (numpy only) so that pure-computation modules
(terrain, model, metrics, massbalance maths) run on machines with torch + numpy alone.
"""

__version__ = "0.1.0"

from glacierfacies._threads import configure_openmp as _configure_openmp

_configure_openmp()
