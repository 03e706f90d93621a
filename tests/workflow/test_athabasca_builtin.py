"""The built-in models map Athabasca Glacier with no training by the user (issue 13): the
zone criteria of the real-products issue on both HLS clips, with both built-in models (the
Sentinel-2 model, trained on B8, reads S30's B8A as its NIR)."""

from __future__ import annotations

import pytest
import rasterio
from click.testing import CliRunner

from glacierfacies.cli import cli
from glacierfacies.examples import example_path, zone_shares


@pytest.mark.parametrize(("scene", "model"), [
    ("L30_20200816", "builtin:landsat"), ("S30_20200909", "builtin:sentinel2"),
    ("S30_20200909", "builtin:landsat"), ("L30_20200816", "builtin:sentinel2")])
def test_builtin_model_meets_the_athabasca_criteria(scene, model, tmp_path):
    ex = example_path("athabasca")
    dem, outl = ex / "athabasca_dem.tif", ex / "athabasca_outline.shp"
    out = tmp_path / "facies.tif"
    res = CliRunner().invoke(cli, ["map", str(ex / scene), "--dem", str(dem), "--outlines",
                                   str(outl), "--model", model, "-o", str(out)])
    assert res.exit_code == 0, res.output
    z = zone_shares(out, dem, outl)
    assert z["below 2300 m"]["pixels"] > 20000 and z["above 2700 m"]["pixels"] > 100000
    assert z["below 2300 m"]["share"] >= 0.85, z
    assert z["above 2700 m"]["share"] >= 0.90, z
    with rasterio.open(out) as ds:
        assert ds.tags()["MODELS"] == model
