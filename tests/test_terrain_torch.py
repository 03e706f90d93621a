"""terrain_torch equals terrain (numpy): identical cast-shadow masks on the real
Hintereisferner DEM at three sun positions, Horn gradients bit for bit, slope and hillshade
to float rounding (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from glacierfacies import terrain, terrain_torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def hef_dem(shared_data):
    rasterio = pytest.importorskip("rasterio")
    path = shared_data / "terrain" / "hef_dem_utm32n.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with rasterio.open(path) as src:
        z = src.read(1, masked=True).astype("float32").filled(np.nan)
        res = (src.transform.a, src.transform.e)
    return z, res


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("az,el", [(150.0, 35.0), (120.0, 20.0), (225.0, 50.0)])
def test_cast_shadow_identical_on_hintereisferner(hef_dem, az, el, device):
    z, res = hef_dem
    ref = terrain.cast_shadow(z, res, az, el)
    got = terrain_torch.cast_shadow(z, res, az, el, device=device).cpu().numpy()
    assert 0.01 < ref.mean() < 0.5
    np.testing.assert_array_equal(got, ref)
    # a region (what mapping computes): the region's pixels of the same mask
    reg = (slice(150, 420), slice(80, 700))
    got_r = terrain_torch.cast_shadow(z, res, az, el, region=reg, device=device).cpu().numpy()
    np.testing.assert_array_equal(got_r, ref[reg])
    # a reach cap, as TerrainContext.shadow_reach_m gives
    ref_c = terrain.cast_shadow(z, res, az, el, max_distance_m=900.0, region=reg)
    got_c = terrain_torch.cast_shadow(z, res, az, el, max_distance_m=900.0, region=reg,
                                      device=device).cpu().numpy()
    np.testing.assert_array_equal(got_c, ref_c[reg])
    assert ref_c[reg].sum() <= ref[reg].sum()


@pytest.mark.parametrize("device", DEVICES)
def test_slope_hillshade_match_numpy_on_hintereisferner(hef_dem, device):
    z, res = hef_dem
    gx, gy = terrain.horn_gradients(z, res)
    tx, ty = terrain_torch.horn_gradients(z, res, device=device)
    np.testing.assert_array_equal(tx.cpu().numpy(), gx)
    np.testing.assert_array_equal(ty.cpu().numpy(), gy)
    slope = terrain_torch.slope_from_gradients(tx, ty).cpu().numpy()
    ref = terrain.slope_from_gradients(gx, gy)
    ok = np.isfinite(ref)
    assert ok.sum() > 500_000
    np.testing.assert_array_equal(np.isfinite(slope), ok)
    assert np.abs(slope[ok] - ref[ok]).max() < 1e-4  # arctan's last bit
    hs = terrain_torch.hillshade(tx, ty, 150.0, 40.0).cpu().numpy()
    hs_ref = terrain.hillshade(z, res, 150.0, 40.0)
    assert hs.dtype == np.uint8
    diff = np.abs(hs.astype(int) - hs_ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


@pytest.mark.parametrize("device", DEVICES)
def test_torch_terrain_nan_edges_and_sun_cases(device):
    rng = np.random.default_rng(1)
    z = (ndimage.gaussian_filter(rng.normal(size=(300, 260)), 12) * 3e4 + 2500).astype(
        np.float32)
    z[40:70, 100:140] = np.nan
    z[:, :3] = np.nan
    for az, el in ((0.0, 25.0), (90.0, 15.0), (200.0, 30.0), (315.0, 10.0), (45.0, 20.0)):
        ref = terrain.cast_shadow(z, (10.0, 20.0), az, el)
        got = terrain_torch.cast_shadow(z, (10.0, 20.0), az, el, device=device).cpu().numpy()
        np.testing.assert_array_equal(got, ref)
    assert terrain_torch.cast_shadow(z, 10.0, 150.0, -1.0, device=device).cpu().numpy().sum() \
        == np.isfinite(z).sum()
    assert not terrain_torch.cast_shadow(z, 10.0, 150.0, 90.0, device=device).any()
    gx, gy = terrain.horn_gradients(z, 10.0)
    tx, ty = terrain_torch.horn_gradients(z, 10.0, device=device)
    np.testing.assert_array_equal(tx.cpu().numpy(), gx)
    np.testing.assert_array_equal(ty.cpu().numpy(), gy)
    hs = terrain_torch.hillshade(tx, ty).cpu().numpy()
    assert (hs[np.isnan(z)] == 0).all() and (hs[np.isfinite(z)] >= 1).all()


@pytest.mark.parametrize("device", DEVICES)
def test_proximity_equals_scipy_edt(device):
    rng = np.random.default_rng(0)
    m = ndimage.gaussian_filter(rng.normal(size=(220, 250)), 7) > 0.03
    reg = (slice(15, 190), slice(40, 230))
    for res in (10.0, (10.0, 20.0)):
        ref = terrain.proximity(m, res)
        np.testing.assert_array_equal(terrain_torch.proximity(m, res, device=device
                                                              ).cpu().numpy(), ref)
        got = terrain_torch.proximity(m, res, region=reg, device=device, chunk=10_000)
        np.testing.assert_array_equal(got.cpu().numpy(), ref[reg])
    full = np.ones((20, 30), bool)
    np.testing.assert_array_equal(terrain_torch.proximity(full, 10.0, device=device
                                                          ).cpu().numpy(),
                                  terrain.proximity(full, 10.0))
