"""Real example data shipped with the package (see each folder's README.md for attribution).

`example_path("athabasca")` is the folder of the Athabasca Glacier HLS clips, DEM and outline.
"""

from __future__ import annotations

from pathlib import Path

from glacierfacies.errors import InputError

__all__ = ["ATHABASCA_ZONES", "EXAMPLES", "example_path", "zone_shares"]

EXAMPLES = ("athabasca",)


def example_path(name: str = "athabasca") -> Path:
    """The folder of example `name` inside the installed package."""
    if name not in EXAMPLES:
        raise InputError(None, f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    path = Path(__file__).resolve().parent / name
    if not path.is_dir():
        raise InputError(path, "example data not installed (package-data missing)")
    return path


#: Athabasca's independent check (../shared/data/athabasca/README.md): in August-September the
#: tongue below about 2,300 m is bare ice (debris at the margins) and the icefield above about
#: 2,700 m is snow-covered. (zone, lower m, upper m, classes that count as right)
ATHABASCA_ZONES = (
    ("below 2300 m", -1e9, 2300.0, ("ice", "debris")),
    ("above 2700 m", 2700.0, 1e9, ("snow", "firn", "shadow")),
)


def zone_shares(facies_map, dem, outlines, zones=ATHABASCA_ZONES) -> dict[str, dict]:
    """For each elevation zone, inside the outlines: classified pixels and the share of them
    in the zone's right classes (nodata excluded). The DEM is resampled bilinearly onto the
    map's grid, as `products` does."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    from glacierfacies.classes import CLASS_NAMES, NODATA_CLASS
    from glacierfacies.outlines import rasterise_outlines, read_outlines
    from glacierfacies.scenes.grid import Grid

    with rasterio.open(facies_map) as src:
        classes, transform, crs = src.read(1), src.transform, src.crs
    z = np.full(classes.shape, np.nan, np.float32)
    with rasterio.open(dem) as d:
        reproject(rasterio.band(d, 1), z, dst_transform=transform, dst_crs=crs,
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
    grid = Grid(crs, transform, *classes.shape)
    inside = rasterise_outlines(grid, read_outlines(outlines), as_mask=True)
    out = {}
    for name, lo, hi, right in zones:
        sel = inside & (classes != NODATA_CLASS) & (z >= lo) & (z < hi)
        codes = [CLASS_NAMES.index(c) for c in right]
        n = int(sel.sum())
        out[name] = {
            "pixels": n,
            "share": float(np.isin(classes[sel], codes).mean()) if n else float("nan"),
            "classes": {CLASS_NAMES[k]: round(float((classes[sel] == k).mean()), 4)
                        for k in np.unique(classes[sel])},
        }
    return out
