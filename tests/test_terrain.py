"""Terrain maths: agreement with GDAL on a real DEM, analytic cast shadows, proximity and the
solar position against published ephemeris values."""

from __future__ import annotations

import datetime as dt
import math
import time

import numpy as np
import pytest
from scipy import ndimage

from glacierfacies import terrain

# ------------------------------------------------------------------ GDAL on the real DEM


@pytest.fixture(scope="module")
def hef(shared_data):
    rasterio = pytest.importorskip("rasterio")
    d = shared_data / "terrain"
    if not (d / "hef_dem_utm32n.tif").exists():
        pytest.skip(f"{d / 'hef_dem_utm32n.tif'} is absent")
    with rasterio.open(d / "hef_dem_utm32n.tif") as src:
        z = src.read(1, masked=True).astype("float64").filled(np.nan)
        res = (src.transform.a, src.transform.e)

    def read(name):
        with rasterio.open(d / name) as src:
            return src.read(1, masked=True)

    valid = np.isfinite(z)
    inner = ndimage.binary_erosion(valid, iterations=2, border_value=0)
    return {
        "z": z,
        "res": res,
        "inner": inner,
        "slope": read("gdaldem_slope_deg.tif"),
        "aspect": read("gdaldem_aspect_deg.tif"),
        "hillshade": read("gdaldem_hillshade_az150_alt40.tif"),
    }


def test_slope_aspect_match_gdaldem(hef):
    slope, aspect = terrain.slope_aspect_horn(hef["z"], hef["res"])
    inner = hef["inner"] & ~np.ma.getmaskarray(hef["slope"])
    d_slope = np.abs(slope - hef["slope"].filled(np.nan))[inner]
    assert inner.sum() > 500_000
    assert np.median(d_slope) <= 0.1
    assert np.percentile(d_slope, 99) < 0.01  # in fact float rounding only
    m = inner & (slope > 2) & ~np.ma.getmaskarray(hef["aspect"])
    d_asp = np.abs((aspect - hef["aspect"].filled(np.nan) + 180.0) % 360.0 - 180.0)[m]
    assert m.sum() > 400_000
    assert np.median(d_asp) <= 0.5
    assert np.percentile(d_asp, 99) < 0.05


def test_hillshade_matches_gdaldem(hef):
    hs = terrain.hillshade(hef["z"], hef["res"], azimuth_deg=150, altitude_deg=40)
    assert hs.dtype == np.uint8
    ref = hef["hillshade"].filled(0).astype(int)
    diff = np.abs(hs.astype(int) - ref)[hef["inner"] & (ref > 0)]
    assert np.median(diff) <= 1
    assert np.percentile(diff, 99) <= 3


def test_shadow_fraction_rises_as_sun_sinks(hef):
    z, res = hef["z"], abs(hef["res"][0])
    valid = np.isfinite(z)
    fractions = [terrain.cast_shadow(z, res, 150.0, e)[valid].mean() for e in (60, 40, 20, 10)]
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[0] < 0.1 and fractions[-1] > 0.5


# ------------------------------------------------------------------ analytic cases


def test_slope_aspect_on_planes():
    yy, xx = np.mgrid[0:20, 0:30].astype(float)
    # Rises 1 m per 10 m eastward (x), with 10 m pixels -> slope atan(0.1), faces west.
    plane = xx * 1.0
    slope, aspect = terrain.slope_aspect_horn(plane, 10.0)
    inner = (slice(1, -1), slice(1, -1))  # edges use the centre for missing neighbours
    assert np.allclose(slope[inner], math.degrees(math.atan(0.1)), atol=1e-4)
    assert np.allclose(aspect[inner], 270.0, atol=1e-4)
    # Rises northward (toward row 0) with anisotropic pixels: faces south.
    plane = -yy * 2.0
    slope, aspect = terrain.slope_aspect_horn(plane, (10.0, 20.0))
    assert np.allclose(slope[inner], math.degrees(math.atan(0.1)), atol=1e-4)
    assert np.allclose(aspect[inner], 180.0, atol=1e-4)
    slope, aspect = terrain.slope_aspect_horn(np.zeros((5, 5)), 10.0)
    assert np.all(slope == 0) and np.all(np.isnan(aspect))


def test_hillshade_flat_and_nodata():
    z = np.zeros((6, 6))
    z[0, 0] = np.nan
    hs = terrain.hillshade(z, 10.0, 150, 40)
    assert hs[0, 0] == 0
    assert np.all(hs[1:, 1:] == round(1 + 254 * math.sin(math.radians(40))))


@pytest.mark.parametrize("elev", [15.0, 30.0, 50.0])
def test_cast_shadow_vertical_wall_east_sun(elev):
    h, px = 100.0, 10.0
    z = np.zeros((40, 120))
    z[:, 100] = h  # N-S wall; the sun in the east casts the shadow westward
    sh = terrain.cast_shadow(z, px, 90.0, elev)
    expected = h / math.tan(math.radians(elev)) / px
    for row in (5, 20, 35):
        west = sh[row, :100][::-1]  # distance 1, 2, ... px west of the wall
        length = int(np.argmin(west)) if not west.all() else 100
        assert abs(length - expected) <= 1, (length, expected)
        assert not west[length:].any()
    assert not sh[:, 101:].any()  # nothing on the sunny side
    assert not sh[:, 100].any()  # wall top is lit


def test_cast_shadow_oblique_sun_and_nan():
    h, px, az, elev = 60.0, 5.0, 120.0, 25.0
    z = np.zeros((200, 200), dtype=np.float32)
    z[:, 150] = h
    z[:5, :5] = np.nan
    sh = terrain.cast_shadow(z, px, az, elev)
    # Perpendicular shadow width of an infinite N-S wall for a sun at azimuth 120 deg.
    expected = h * math.sin(math.radians(az)) / math.tan(math.radians(elev)) / px
    length = int(np.argmin(sh[100, :150][::-1]))
    assert abs(length - expected) <= 1, (length, expected)
    assert not sh[:5, :5].any()  # NaN pixels are never shadowed
    # A NaN block is no obstacle.
    z2 = np.zeros((50, 50))
    z2[20:30, 30:40] = np.nan
    assert not terrain.cast_shadow(z2, 10.0, 90.0, 5.0).any()
    # Sun below the horizon: everything valid is dark; at zenith nothing is.
    assert terrain.cast_shadow(z, px, az, -1.0)[6:, 6:].all()
    assert not terrain.cast_shadow(z, px, az, 90.0).any()


def test_cast_shadow_speed_1000px():
    rng = np.random.default_rng(0)
    z = ndimage.gaussian_filter(rng.normal(size=(1000, 1000)), 30) * 3e4 + 2500.0
    assert np.ptp(z) > 500
    t0 = time.perf_counter()
    sh = terrain.cast_shadow(z.astype(np.float32), 10.0, 150.0, 30.0)
    elapsed = time.perf_counter() - t0
    assert 0.0 < sh.mean() < 0.5
    assert elapsed < 2.5, f"cast_shadow took {elapsed:.2f} s on 1000x1000 (target < 1 s)"


def test_proximity_signed_metres():
    m = np.zeros((50, 60), dtype=bool)
    m[10:40, 20:50] = True  # 30 x 30 px square
    d = terrain.proximity(m, 10.0)
    assert d.dtype == np.float32
    assert d[10, 30] == pytest.approx(5.0)  # edge pixel inside: half a pixel
    assert d[9, 30] == pytest.approx(-5.0)  # edge pixel outside
    assert d[24, 34] == pytest.approx(14 * 10 + 5.0)  # 14 px from the top edge pixel
    assert d[0, 30] == pytest.approx(-(9 * 10 + 5.0))
    assert (d[m] > 0).all() and (d[~m] < 0).all()
    assert np.all(terrain.proximity(np.ones((5, 5), bool), 10.0) > 0)


# ------------------------------------------------------------------ solar position


@pytest.mark.parametrize(
    "when, lat, lon, az_ref, el_ref, refraction",
    [
        # NREL SPA worked example (Reda & Andreas 2004, NREL/TP-560-34302, Table A4.1):
        # 2003-10-17 12:30:30 MST (UTC-7), Golden CO -> topocentric zenith 50.11162 deg
        # (refracted, 820 mbar / 11 C), azimuth 194.34024 deg.
        (
            dt.datetime(2003, 10, 17, 19, 30, 30),
            39.742476,
            -105.1786,
            194.34024,
            90 - 50.11162,
            True,
        ),
        # Meeus, Astronomical Algorithms (2nd ed.), Example 25.a: 1992-10-13 0h TD the Sun's
        # apparent declination is -7.78507 deg; at the North Pole the elevation equals it.
        (dt.datetime(1992, 10, 13, 0, 0, 0), 90.0, 0.0, None, -7.78507, False),
        # Same instant, Example 28.a gives the equation of time E = 13m42.7s, so the Sun
        # transits at longitude (720 - 13.712)/4 deg E: due south, elevation 90 - 45 + decl.
        (dt.datetime(1992, 10, 13), 45.0, (720 - 13.712) / 4, 180.0, 45.0 - 7.78507, False),
        # June solstice 2021-06-21 03:32 UT (USNO): declination = obliquity 23.437 deg.
        (dt.datetime(2021, 6, 21, 3, 32), 90.0, 0.0, None, 23.437, False),
    ],
)
def test_solar_position_against_ephemeris(when, lat, lon, az_ref, el_ref, refraction):
    az, el = terrain.solar_position(when, lat, lon, refraction=refraction)
    assert abs(float(el) - el_ref) < 0.5
    assert abs(float(el) - el_ref) < 0.02  # the NOAA/Meeus series is far better than needed
    if az_ref is not None:
        assert abs((float(az) - az_ref + 180) % 360 - 180) < 0.05


def test_solar_position_vectorised_and_tz_aware():
    t = np.array(["2003-10-17T19:30:30", "2003-10-17T19:30:30"], dtype="datetime64[s]")
    az, el = terrain.solar_position(t, np.array([39.742476, -39.742476]), -105.1786)
    assert az.shape == (2,) and el[1] > el[0]  # October: southern spring
    aware = dt.datetime(2003, 10, 17, 12, 30, 30, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    az2, el2 = terrain.solar_position(aware, 39.742476, -105.1786)
    assert float(az2) == pytest.approx(az[0]) and float(el2) == pytest.approx(el[0])
