"""Scene reading options on every command (issue 12): --band-map/--scale/--offset/--nodata,
the plausibility guard on reflectance, product options, the run configuration."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from glacierfacies.cli import cli
from glacierfacies.errors import InputError
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.reader import read_scene
from tests.scenes.test_archives import spectral_model
from tests.scenes.test_scenes import _tif, make_safe


def _dn_stack(path, nodata_in_file=False):
    """A 6-band int16 DN stack (reflectance x 10,000, -9999 nodata corner), 60 x 90 px."""
    rng = np.random.default_rng(1)
    dn = rng.integers(500, 8000, (6, 60, 90)).astype(np.int16)
    dn[:, :4, :4] = -9999
    _tif(path, dn, 10, nodata=-9999 if nodata_in_file else None,
         tags={"ACQUISITION_TIME": "2022-09-05T10:30:00Z"})
    return dn


def test_plausibility_guard_and_scale_options(tmp_path):
    p = tmp_path / "stack.tif"
    dn = _dn_stack(p)
    with pytest.raises(InputError, match=r"stack.tif: median blue/green/red reflectance is "
                                         r"4\d{3}.*unscaled DN; pass --scale") as err:
        read_scene(p)
    assert "\n" not in str(err.value)
    s = read_scene(p, options=ReadOptions(scale=1e-4, nodata=-9999))
    assert not s.valid[:4, :4].any() and s.valid[4:, 4:].all()
    np.testing.assert_allclose(s.reflectance[:, 10, 10], dn[:, 10, 10] * 1e-4, rtol=1e-6)
    # without --nodata the -9999 DN become reflectance -0.9999 (valid): the caller's choice
    assert read_scene(p, options=ReadOptions(scale=1e-4)).valid[:4, :4].all()
    with pytest.raises(InputError, match=r"is -0\.9\d+, not -0.05..1.5: wrong --offset or --scale"):
        read_scene(p, options=ReadOptions(scale=1e-4, offset=-1.4, nodata=-9999))
    bm = {"blue": 3, "green": 2, "red": 1, "nir": 4, "swir1": 5, "swir2": 6}
    s = read_scene(p, options=ReadOptions(band_map=bm, scale=1e-4, nodata=-9999))
    np.testing.assert_allclose(s.reflectance[0, 10, 10], dn[2, 10, 10] * 1e-4, rtol=1e-6)


def test_read_options_parse_and_check():
    o = ReadOptions.from_cli("blue=1,green=2,red=3,nir=4,swir1=5,swir2=6", 1e-4, 0.0, -9999,
                             True, True, -1000)
    assert o.band_map["swir2"] == 6 and not o.product_mask and o.mask_saturated
    assert o.s2_offset_dn == -1000 and o.stack_coding_given
    assert not ReadOptions().stack_coding_given
    with pytest.raises(InputError, match="--band-map: band map entry 'blue' is not name=index"):
        ReadOptions.from_cli("blue")
    with pytest.raises(InputError, match="--scale must not be 0"):
        ReadOptions(scale=0)
    with pytest.raises(InputError, match="unknown scene reading option"):
        ReadOptions.from_dict({"scael": 1})
    assert ReadOptions.from_dict({"band_map": "blue=6,green=5,red=4,nir=3,swir1=2,swir2=1",
                                  "product_mask": False}).band_map["blue"] == 6


def test_products_ignore_stack_options_with_a_warning(tmp_path):
    safe, _ = make_safe(tmp_path)
    with pytest.warns(UserWarning, match="apply to GeoTIFF stacks; this Sentinel-2 product's"):
        s = read_scene(safe, options=ReadOptions(scale=5.0))
    np.testing.assert_array_equal(s.reflectance, read_scene(safe).reflectance)


@pytest.mark.parametrize("command", ["features", "map", "dataset"])
def test_dn_stack_stops_every_command_with_one_line_and_nothing_written(tmp_path, command):
    from tests.scenes.test_scenes import terrain_inputs

    dem, outl, _ = terrain_inputs.__wrapped__(tmp_path)
    p = tmp_path / "in" / "stack.tif"
    _dn_stack(p)
    out = tmp_path / "out"
    out.mkdir()
    base = ["--dem", str(dem), "--outlines", str(outl)]
    if command == "features":
        args = ["features", str(p), *base, "-o", str(out / "f.tif")]
    elif command == "map":
        args = ["map", str(p), *base, "--model", str(spectral_model(tmp_path / "m" / "f0.pt")),
                "-o", str(out / "m.tif")]
    else:
        import geopandas as gpd
        from shapely.geometry import Point

        labels = tmp_path / "labels.gpkg"
        gpd.GeoDataFrame({"class": ["ice", "snow"], "glacier": ["G1", "G2"],
                          "scene_id": ["stack", "stack"]},
                         geometry=[Point(630200, 5165800), Point(630600, 5165700)],
                         crs="EPSG:32632").to_file(labels)
        args = ["dataset", "build", "--scenes", str(p), *base, "--labels", str(labels),
                "--patch-size", "1", "--folds", "2", "-o", str(out / "ds")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    msg = str(res.exception)
    assert "\n" not in msg and msg.startswith(f"{p}: median blue/green/red") and "--scale" in msg
    assert list(out.iterdir()) == []
    res = CliRunner().invoke(cli, args + ["--scale", "0.0001", "--nodata", "-9999"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    if command == "features":
        with rasterio.open(out / "f.tif") as r:
            assert np.isnan(r.read(1)[:4, :4]).all()
            assert r.read(1)[10, 10] == pytest.approx(
                np.random.default_rng(1).integers(500, 8000, (6, 60, 90))[0, 10, 10] * 1e-4)


def test_run_configuration_reads_scene_options(tmp_path):
    from glacierfacies.workflow.config import load_config

    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text("band_map: blue=1,green=2,red=3,nir=4,swir1=5,swir2=6\nscale: 0.0001\n"
                        "nodata: -9999\nproduct_mask: false\ns2_offset: 0\n")
    cfg, _ = load_config(cfg_path)
    r = cfg.read_options
    assert (r.scale, r.nodata, r.product_mask, r.s2_offset_dn) == (1e-4, -9999, False, 0)
    assert r.band_map["nir"] == 4 and cfg.map_config.read == r
    cfg_path.write_text("band_map: blue=1,green\n")
    with pytest.raises(InputError, match="run.yaml: --band-map") as err:
        load_config(cfg_path)
    assert "\n" not in str(err.value)


def test_map_many_passes_the_read_options(tmp_path, monkeypatch):
    import glacierfacies.mapping.distributed as dist

    seen = {}

    def fake_map_many(scenes, dem, outlines, models, out_dir, *, config, **kw):
        seen["config"] = config
        return dist.ManyResult([])

    monkeypatch.setattr(dist, "map_many", fake_map_many)
    p = tmp_path / "s_20220905.tif"
    p.write_bytes(b"")
    res = CliRunner().invoke(cli, ["map-many", str(p), "--dem", "d", "--outlines", "o",
                                   "--model", "m", "-o", str(tmp_path), "--scale", "0.0001",
                                   "--nodata", "-9999", "--no-product-mask", "--s2-offset",
                                   "0"])
    assert res.exit_code == 0, res.output
    r = seen["config"].read
    assert (r.scale, r.nodata, r.product_mask, r.s2_offset_dn) == (1e-4, -9999, False, 0)
