"""Athabasca Glacier end to end (issue 12), through the command line as a user runs it:
a spectral model from the Aberle points, maps of the two real HLS clips, products; and the same
clips as an int16 DN stack, refused without --scale and mapped with it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from glacierfacies.cli import cli
from glacierfacies.errors import InputError
from glacierfacies.examples import example_path, zone_shares

SCENES = ("L30_20200816", "S30_20200909")


def _run(args: list[str]):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, f"{args[:2]}: {res.output}\n{res.exception!r}"
    return res


def _dn_stack(folder: Path, dest: Path) -> None:
    """The clip's six bands as one int16 stack, DN as delivered, no nodata or scale tags."""
    files = sorted(folder.glob("*_B0[2-7]_L30.tif"))
    arrs = []
    for f in files:
        with rasterio.open(f) as r:
            arrs.append(r.read(1))
            prof = r.profile
    prof.update(count=6, nodata=None)
    with rasterio.open(dest, "w", **prof) as dst:
        dst.write(np.stack(arrs))


@pytest.mark.slow
def test_athabasca_end_to_end(shared_data, tmp_path):
    t0 = time.perf_counter()
    ex = example_path("athabasca")  # the package's copy of ../shared/data/athabasca
    dem, outl = ex / "athabasca_dem.tif", ex / "athabasca_outline.shp"
    ds, run, maps = tmp_path / "points", tmp_path / "run", tmp_path / "maps"
    maps.mkdir()
    _run(["dataset", "import-points", shared_data / "aberle" / "Landsat_training_data.csv",
          "--bands", "landsat89", "--offset", "-0.2", "--glacier-column", "site_name",
          "--folds", "4", "--class-map", "1=snow,2=shadow,3=ice,4=debris,5=water", "-o", ds])
    # quick: the sample preset, 4 epochs, width 8 (the doc uses the full sample preset)
    _run(["train", ds, "-o", run, "--preset", "sample", "--epochs", "4", "--width", "8",
          "--device", "cpu", "--threads", "1", "--quiet"])
    models = sorted((run / "models").glob("fold*.pt"))
    assert len(models) == 4
    model_args = [a for m in models for a in ("--model", m)]
    for scene in SCENES:
        _run(["map", ex / scene, "--dem", dem, "--outlines", outl, *model_args,
              "-o", maps / f"{scene}_facies.tif", "--confidence",
              maps / f"{scene}_confidence.tif"])
    _run(["products", *[maps / f"{s}_facies.tif" for s in SCENES], "--outlines", outl,
          "--dem", dem, "--id-column", "ID", "-o", tmp_path / "products.csv"])
    shares = {s: zone_shares(maps / f"{s}_facies.tif", dem, outl) for s in SCENES}
    for scene, z in shares.items():
        assert z["below 2300 m"]["pixels"] > 20000 and z["above 2700 m"]["pixels"] > 100000
        assert z["below 2300 m"]["share"] >= 0.85, (scene, z)
        assert z["above 2700 m"]["share"] >= 0.90, (scene, z)
    import pandas as pd

    rows = pd.read_csv(tmp_path / "products.csv")
    assert list(rows["sensor"]) == ["hls-l30", "hls-s30"]
    assert list(rows["date"]) == ["2020-08-16", "2020-09-09"]
    assert (rows["glacier_area_km2"].round(2) == 16.14).all()
    assert (rows["observed_fraction"] > 0.98).all()
    assert rows["aar"].between(0.55, 0.85).all()
    assert rows["snowline_m"].between(2300, 2800).all()
    assert (rows["product_mask"] == "none (no Fmask file in the product)").all()
    with rasterio.open(maps / "L30_20200816_facies.tif") as r:
        tags = r.tags()
    assert tags["SENSOR"] == "hls-l30" and "time of day assumed" in tags["TIME_NOTE"]
    assert r.crs.to_epsg() == 32611

    # the same L30 clip as one int16 6-band DN stack: refused, one line, nothing written ...
    stack = tmp_path / "stack" / "athabasca_20200816_L30_dn.tif"
    stack.parent.mkdir()
    _dn_stack(ex / "L30_20200816", stack)
    out = tmp_path / "dn_maps"
    out.mkdir()
    res = CliRunner().invoke(cli, ["map", str(stack), "--dem", str(dem), "--outlines",
                                   str(outl), *map(str, model_args), "-o", str(out / "dn.tif")])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    msg = str(res.exception)
    assert "\n" not in msg and msg.startswith(f"{stack}: median blue/green/red reflectance")
    assert "--scale" in msg and list(out.iterdir()) == []
    # ... and with --scale 0.0001 --nodata -9999 it maps as the clip folder does
    _run(["map", stack, "--dem", dem, "--outlines", outl, *model_args, "--scale", "0.0001",
          "--nodata", "-9999", "-o", out / "dn.tif"])
    z = zone_shares(out / "dn.tif", dem, outl)
    assert z["below 2300 m"]["share"] >= 0.85 and z["above 2700 m"]["share"] >= 0.90, z
    with rasterio.open(out / "dn.tif") as a, rasterio.open(maps / f"{SCENES[0]}_facies.tif") as b:
        same = (a.read(1) == b.read(1)).mean()
    assert same > 0.999  # the same pixels (the sun differs a little: no effect on optics)
    print(f"athabasca end to end: {time.perf_counter() - t0:.1f} s; "
          + "; ".join(f"{s}: {z['below 2300 m']['share']:.3f} ice/debris below 2300 m, "
                      f"{z['above 2700 m']['share']:.3f} snow/firn/shadow above 2700 m"
                      for s, z in shares.items()))
