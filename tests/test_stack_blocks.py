"""Block-wise features equal whole-scene features on glacier pixels, exactly (issue 15).

Long shadows (low sun over 1,500 m of relief: a 5.6 km reach) and a glacier wider than the
old fixed 1 km margin are the cases where blocks used to differ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

EPSG = "EPSG:32632"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely.affinity import scale
    from shapely.geometry import Point

    tmp = tmp_path_factory.mktemp("blocks")
    n, res, x0, y0 = 300, 20.0, 700_000.0, 5_100_000.0
    tr = from_origin(x0, y0, res, res)
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float32)
    # a ridge to the south-east (toward the sun) that shades the glacier from far away
    z = 1500 + 1500 * np.exp(-(((rows - 260) / 25.0) ** 2)) + 200 * np.sin(cols / 40.0)
    glacier = scale(Point(x0 + 2900, y0 - 2900).buffer(1600), 1.0, 0.9)
    gpd.GeoDataFrame({"rgi_id": ["G1"]}, geometry=[glacier], crs=EPSG).to_file(
        tmp / "outlines.gpkg")
    prof = dict(driver="GTiff", width=n, height=n, crs=EPSG, transform=tr, dtype="float32",
                nodata=np.nan)
    with rasterio.open(tmp / "dem.tif", "w", count=1, **prof) as dst:
        dst.write(z.astype(np.float32)[None])
    with rasterio.open(tmp / "scene.tif", "w", count=6, **prof) as dst:
        dst.update_tags(ACQUISITION_TIME="2022-12-08T10:30:00Z", SUN_AZIMUTH="160",
                        SUN_ELEVATION="15", SCENE_ID="blocks")
        for b in range(6):
            dst.write((0.1 + 0.05 * b + 0.01 * np.sin(rows / 7.0 + b)).astype(np.float32), b + 1)
    return tmp


def test_blocks_equal_whole_scene_on_glacier_pixels(world):
    from rasterio.transform import Affine

    from glacierfacies.scenes.grid import Grid
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, terrain_context

    dem, outlines = world / "dem.tif", world / "outlines.gpkg"
    scene = read_scene(world / "scene.tif")
    whole = build_feature_stack(scene, dem, outlines)
    ctx = whole.terrain
    assert ctx.shadow_reach_m == pytest.approx(ctx.relief_m / math.tan(math.radians(15)))
    assert ctx.shadow_reach_m > 5000 and ctx.proximity_margin_m > 1400
    prox = whole.features[10][whole.glacier_index > 0]
    assert prox.max() > 1000  # farther from the edge than the old fixed margin
    assert whole.features[8][whole.glacier_index > 0].sum() > 100  # long shadows on the ice
    g, size, m = scene.grid, 150, 16
    compared = 0
    for r0 in range(0, g.height, size):
        for c0 in range(0, g.width, size):
            bg = Grid(g.crs, g.transform @ Affine.translation(c0 - m, r0 - m), size + 2 * m,
                      size + 2 * m)
            block_scene = read_scene(world / "scene.tif", grid=bg)
            if r0 == c0 == 0:  # a block's context is the whole scene's
                assert terrain_context(block_scene, dem, outlines, grid=g) == ctx
            block = build_feature_stack(block_scene, dem, outlines, require_outline=False,
                                        context=ctx)
            ice = whole.glacier_index[r0 : r0 + size, c0 : c0 + size] > 0
            a = whole.features[:, r0 : r0 + size, c0 : c0 + size][:, ice]
            b = block.features[:, m : m + size, m : m + size][:, ice]
            np.testing.assert_array_equal(a, b)
            compared += int(ice.sum())
    assert compared == int((whole.glacier_index > 0).sum()) > 10_000


def test_grid_convergence_and_rotated_sun():
    from pyproj import Transformer
    from rasterio.transform import from_origin

    from glacierfacies.scenes.grid import Grid
    from glacierfacies.stack import grid_convergence_deg

    # UTM 32N, central meridian 9 E: east of it, true north points west of grid north
    x, y = 700_000.0, 5_100_000.0
    lon, lat = Transformer.from_crs(EPSG, "EPSG:4326", always_xy=True).transform(x, y)
    g = Grid(EPSG, from_origin(x - 5000, y + 5000, 10, 10), 1000, 1000)
    gamma = grid_convergence_deg(g)
    assert gamma == pytest.approx(-math.degrees(math.atan(
        math.tan(math.radians(lon - 9)) * math.sin(math.radians(lat)))), abs=0.01)
    assert -2.5 < gamma < -1.5
    assert grid_convergence_deg(Grid("EPSG:4326", from_origin(9, 46, 0.001, 0.001), 10, 10)
                                ) == 0.0
