"""outlines.py: reading outlines and burning them onto grids, with known pixel counts."""

from __future__ import annotations

import numpy as np
import pytest

from glacierfacies.errors import InputError

X0, Y0, RES = 630_000.0, 5_166_000.0, 10.0
CRS = "EPSG:32632"


def _grid(height=20, width=30):
    from rasterio.crs import CRS as RioCRS
    from rasterio.transform import Affine

    from glacierfacies.scenes.grid import Grid

    return Grid(RioCRS.from_string(CRS), Affine(RES, 0, X0, 0, -RES, Y0), height, width)


def _square(col0, row0, n):
    """A pixel-aligned square covering n x n pixels from (row0, col0) of `_grid`."""
    from shapely.geometry import box

    return box(X0 + RES * col0, Y0 - RES * (row0 + n), X0 + RES * (col0 + n), Y0 - RES * row0)


def _gpkg(path, geoms, crs=CRS, **columns):
    import geopandas as gpd

    gpd.GeoDataFrame(columns, geometry=list(geoms), crs=crs).to_file(path)
    return path


def test_square_gives_its_pixels_and_later_outlines_win():
    from glacierfacies.outlines import rasterise_outlines

    grid = _grid()
    idx = rasterise_outlines(grid, [_square(5, 3, 10), _square(10, 8, 4)])
    assert idx.dtype == np.int32 and idx.shape == (20, 30)
    assert (idx == 1).sum() == 100 - 16 and (idx == 2).sum() == 16
    assert (idx[3:13, 5:15] > 0).all() and (idx > 0).sum() == 100
    assert (idx[8:12, 10:14] == 2).all()  # the second (later) outline wins the overlap
    mask = rasterise_outlines(grid, [_square(5, 3, 10), _square(10, 8, 4)], as_mask=True)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, idx > 0)


def test_none_or_empty_outline_keeps_numbering_and_no_outline_gives_zeros():
    from shapely.geometry import Polygon

    from glacierfacies.outlines import rasterise_outlines

    grid = _grid()
    idx = rasterise_outlines(grid, [None, Polygon(), _square(0, 0, 2)])
    assert set(np.unique(idx)) == {0, 3} and (idx == 3).sum() == 4
    assert not rasterise_outlines(grid, [], as_mask=True).any()
    assert not rasterise_outlines(grid, [None], buffer_m=50).any()


def test_buffer_adds_the_expected_ring():
    from glacierfacies.outlines import rasterise_outlines

    grid = _grid()
    sq = _square(5, 5, 10)
    # centres within 10 m of a pixel-aligned 10 x 10 px square: one more pixel on each side,
    # corners included (their centres lie 7.1 m from the corner): 12 x 12
    m = rasterise_outlines(grid, [sq], buffer_m=10.0, as_mask=True)
    assert m.sum() == 144 and m[4:16, 4:16].all()
    # 20 m: two more pixels per side; the corner pixel 2 px out diagonally (21.2 m) is not in
    m20 = rasterise_outlines(grid, [sq], buffer_m=20.0, as_mask=True)
    assert m20.sum() == 14 * 14 - 4 and not m20[3, 3] and m20[3, 4]
    # in the index, an outline's own pixels keep its number over a neighbour's ring
    idx = rasterise_outlines(grid, [sq, _square(15, 5, 5)], buffer_m=10.0)
    assert (idx[5:15, 5:15] == 1).all() and (idx[5:10, 15:20] == 2).all()
    assert (idx[11:15, 15] == 1).all() and (idx[5:10, 20] == 2).all()
    assert idx[10, 15] == 2  # in both rings: the later outline's ring wins


def test_all_touched_burns_pixels_without_their_centre():
    from shapely.geometry import box

    from glacierfacies.outlines import rasterise_outlines

    grid = _grid()
    tiny = box(X0 + 51, Y0 - 54, X0 + 54, Y0 - 51)  # inside pixel (5, 5), off its centre
    assert rasterise_outlines(grid, [tiny]).sum() == 0
    touched = rasterise_outlines(grid, [tiny], all_touched=True)
    assert touched.sum() == 1 and touched[5, 5] == 1


def test_read_outlines_reprojects_to_the_grid_and_filters_by_it(tmp_path):
    import geopandas as gpd

    from glacierfacies.outlines import rasterise_outlines, read_outlines

    grid = _grid()
    far = _square(500, 500, 3)  # 5 km away: off the grid
    utm = gpd.GeoDataFrame({"rgi_id": ["A", "B", "C"]},
                           geometry=[_square(5, 3, 10), far, _square(20, 10, 5)], crs=CRS)
    path = tmp_path / "wgs84.gpkg"
    utm.to_crs("EPSG:4326").to_file(path)
    gdf = read_outlines(path, grid=grid)
    assert gdf.crs == grid.crs and list(gdf["rgi_id"]) == ["A", "C"]
    assert list(gdf.index) == [0, 1]
    np.testing.assert_allclose(gdf.geometry.iloc[0].bounds, _square(5, 3, 10).bounds, atol=1e-3)
    idx = rasterise_outlines(grid, gdf)
    assert (idx == 1).sum() == 100 and (idx == 2).sum() == 25
    # a GeoDataFrame in another CRS is reprojected by the rasteriser itself
    np.testing.assert_array_equal(rasterise_outlines(grid, gpd.read_file(path)) > 0,
                                  rasterise_outlines(grid, utm) > 0)
    # without a grid: every outline, in the file's CRS and order
    whole = read_outlines(path)
    assert len(whole) == 3 and whole.crs.to_epsg() == 4326
    assert list(whole["rgi_id"]) == ["A", "B", "C"]


def test_read_outlines_one_line_errors_name_the_file(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from glacierfacies.outlines import read_outlines

    grid = _grid()
    away = _gpkg(tmp_path / "away.gpkg", [box(0, 0, 1, 1)], crs="EPSG:4326")
    with pytest.raises(InputError, match=r"away\.gpkg: no outline intersects the scene$") as e:
        read_outlines(away, grid=grid)
    assert "\n" not in str(e.value) and e.value.path == str(away)
    with pytest.raises(InputError, match="missing.gpkg: outline file not found"):
        read_outlines(tmp_path / "missing.gpkg", grid=grid)
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match=r"bad\.gpkg: cannot read outlines \(") as e:
        read_outlines(bad)
    assert "\n" not in str(e.value)
    nocrs = tmp_path / "nocrs.gpkg"
    with pytest.warns(UserWarning, match="crs"):
        gpd.GeoDataFrame(geometry=[_square(0, 0, 3)]).to_file(nocrs)
    with pytest.raises(InputError, match="nocrs.gpkg: outlines have no CRS"):
        read_outlines(nocrs, grid=grid)
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"rgi_id": []}, geometry=[], crs=CRS).to_file(empty)
    with pytest.raises(InputError, match="empty.gpkg: no outlines"):
        read_outlines(empty)


def test_find_id_column_resolution(tmp_path):
    from glacierfacies.outlines import ID_COLUMNS, find_id_column, read_outlines

    path = _gpkg(tmp_path / "o.gpkg", [_square(0, 0, 2)], RGIId=["X"], name=["Y"])
    gdf = read_outlines(path)
    assert ID_COLUMNS.index("RGIId") < ID_COLUMNS.index("name")
    assert find_id_column(gdf, path=path) == "RGIId"
    assert find_id_column(gdf, path=path, id_column="name") == "name"
    with pytest.raises(InputError, match="o.gpkg: no glacier id column .*pass --id-column"):
        find_id_column(gdf, path=path, id_column="nope")
    plain = read_outlines(_gpkg(tmp_path / "p.gpkg", [_square(0, 0, 2)], area=[1.0]))
    with pytest.raises(InputError, match="p.gpkg: no glacier id column"):
        find_id_column(plain, path=tmp_path / "p.gpkg")


def test_polygonise_mask_round_trips():
    from scipy import ndimage

    from glacierfacies.outlines import polygonise_mask, rasterise_outlines

    grid = _grid(40, 50)
    rng = np.random.default_rng(0)
    blob = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((40, 50)), 3) > 0.5)
    geom = polygonise_mask(blob, grid.transform)
    np.testing.assert_array_equal(rasterise_outlines(grid, [geom], as_mask=True), blob)


def _old_glacier_index(stack, outlines_path):
    """build_feature_stack's glacier index before outlines.py: all outlines within the
    terrain margin burned on the padded grid with their codes, then the scene part."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine
    from shapely.geometry import box

    from glacierfacies.outlines import read_outlines
    from glacierfacies.scenes.grid import Grid
    from glacierfacies.stack import TERRAIN_MARGIN_M

    grid = stack.grid
    pad = int(np.ceil(TERRAIN_MARGIN_M / abs(grid.transform.a)))
    pgrid = Grid(grid.crs, grid.transform @ Affine.translation(-pad, -pad),
                 grid.height + 2 * pad, grid.width + 2 * pad)
    near = read_outlines(outlines_path, grid=pgrid)
    touch = near.geometry.intersects(box(*grid.bounds)).to_numpy()
    n = int(touch.sum())
    codes = np.where(touch, np.cumsum(touch), n + 1 + np.arange(len(near)))
    gidx = rasterize(((g, int(c)) for g, c in zip(near.geometry, codes, strict=True)),
                     out_shape=pgrid.shape, transform=pgrid.transform, fill=0, dtype="int32")
    gin = gidx[pad : pad + grid.height, pad : pad + grid.width].copy()
    gin[gin > n] = 0
    return gin


def test_sample_glacier_index_as_before_and_both_mapping_modes_agree(sample_dir):
    from glacierfacies.mapping.scene_map import glacier_mask, window_mask
    from glacierfacies.outlines import read_outlines
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack

    outlines, dem = sample_dir / "outlines.gpkg", sample_dir / "dem.tif"
    scenes = sorted((sample_dir / "scenes").iterdir())
    assert len(scenes) == 6
    for scene in scenes:
        stack = build_feature_stack(read_scene(scene), dem, outlines)
        np.testing.assert_array_equal(stack.glacier_index, _old_glacier_index(stack, outlines))
        assert len(stack.outlines) == 8
        assert set(np.unique(stack.glacier_index)) == set(range(9))
        assert (stack.glacier_index > 0).sum() == 45922
        for buffer_m, n_px in ((0.0, 45922), (50.0, 61740)):
            whole = glacier_mask(stack, buffer_m)
            assert whole.sum() == n_px
            gdf = read_outlines(outlines, grid=stack.grid)  # as block mode burns each window
            h, w = stack.shape
            np.testing.assert_array_equal(whole, window_mask(gdf, stack.grid, 0, 0, h, w,
                                                             buffer_m))
            np.testing.assert_array_equal(whole[100:300, 50:250], window_mask(
                gdf, stack.grid, 100, 50, 200, 200, buffer_m))
        np.testing.assert_array_equal(glacier_mask(stack), stack.glacier_index > 0)
