"""STAC out: an Item beside every map; map-many's catalog; a STAC scene maps as its folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.mapping.test_scene_map import _save_model
from tests.scenes.test_stac import NATIVE, landsat_item


@pytest.fixture(scope="module")
def setup(sample_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stacmaps")
    dirs = sorted(p for p in (sample_dir / "scenes").iterdir() if p.name.startswith("LC0"))
    coll = tmp / "items.json"
    coll.write_text(json.dumps({"type": "FeatureCollection",
                                "features": [landsat_item(d, href="absolute") for d in dirs]}))
    return {"tmp": tmp, "dirs": dirs, "coll": coll, "model": _save_model(tmp / "m.pt", 0),
            "dem": sample_dir / "dem.tif", "outlines": sample_dir / "outlines.gpkg"}


def test_map_of_a_stac_item_equals_the_folder_and_carries_an_item(setup):
    import pystac
    import rasterio
    from pystac.extensions.classification import ClassificationExtension

    from glacierfacies.classes import CLASSES
    from glacierfacies.mapping.scene_map import map_scene
    from glacierfacies.stac import map_item_path

    s, tmp = setup, setup["tmp"]
    kw = dict(dem=s["dem"], outlines=s["outlines"], models=[s["model"]], progress=False)
    ref = f"{s['coll']}#{s['dirs'][0].name}"
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    a = map_scene(s["dirs"][0], out=tmp / "a" / "f.tif", probabilities_out=tmp / "a" / "p.tif",
                  **kw)
    b = map_scene(ref, out=tmp / "b" / "f.tif", probabilities_out=tmp / "b" / "p.tif",
                  **kw)
    with rasterio.open(tmp / "a" / "f.tif") as x, rasterio.open(tmp / "b" / "f.tif") as y:
        ca, cb = x.read(1), y.read(1)
    np.testing.assert_array_equal(ca, cb)
    assert a.n_classified == b.n_classified > 1000
    item_path = map_item_path(tmp / "b" / "f.tif")
    assert str(item_path) in b.outputs and item_path.name == "f.stac.json"
    item = pystac.Item.from_file(str(item_path))
    assert item.datetime.isoformat().startswith(s["dirs"][0].name.split("_")[3][:4])
    classes = ClassificationExtension.ext(item.assets["facies"]).classes
    by_value = {c.value: c for c in classes if not c.nodata}
    assert [(v, c.name, c.color_hint) for v, c in sorted(by_value.items())] == [
        (c.code, c.name, "".join(f"{v:02X}" for v in c.colour)) for c in CLASSES]
    assert len(by_value) == 8
    assert item.properties["proj:code"] == "EPSG:32632"
    assert item.properties["proj:shape"] == list(ca.shape)
    assert item.properties["processing:software"]["glacierfacies"]
    assert item.properties["glacierfacies:models"] == ["m.pt"]
    assert item.assets["facies"].extra_fields["raster:bands"][0]["nodata"] == 255
    assert len(item.assets["probabilities"].extra_fields["raster:bands"]) == 8
    for asset in item.assets.values():
        assert Path(asset.get_absolute_href()).is_file()
    w, so, e, n = item.bbox
    assert 5 < w < e < 15 and 40 < so < n < 50  # the sample lies in the Alps (UTM 32N)
    assert any(lk.rel == "derived_from" for lk in item.links)


def test_map_many_of_an_item_collection_writes_a_catalog(setup):
    import pystac

    from glacierfacies.mapping.distributed import map_many
    from glacierfacies.scenes.reader import expand_scenes

    s, out = setup, setup["tmp"] / "many"
    out.mkdir()
    scenes = expand_scenes(str(s["coll"]))
    res = map_many(scenes, s["dem"], s["outlines"], [s["model"]], out, workers=1,
                   progress=False)
    assert res.count("done") == 2, res.summary()
    cat = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = list(cat.get_items())
    assert sorted(i.id for i in items) == sorted(f"{d.name}_facies" for d in s["dirs"])
    for item in items:
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file()
    # a rerun skips both maps and keeps the catalog
    res = map_many(scenes, s["dem"], s["outlines"], [s["model"]], out, workers=1,
                   progress=False)
    assert res.count("skipped") == 2
    assert len(list(pystac.Catalog.from_file(str(out / "catalog.json")).get_items())) == 2


@pytest.mark.slow
def test_map_of_the_usgs_landsat_item_equals_the_product_folder(shared_data, tmp_path):
    """Acceptance of issue 22: `map <STAC item>` on the real Landsat item, classes
    byte-identical to `map <product folder>` (a small outline on a clear part)."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box

    from glacierfacies.mapping.scene_map import map_scene

    folder = shared_data / NATIVE
    with rasterio.open(next(folder.glob("*_QA_PIXEL.TIF"))) as src:
        crs, t = src.crs, src.transform
    x0, y0 = t * (264, 176)  # a cloud-free part of the scene
    gpd.GeoDataFrame({"glacier": ["G1"]}, geometry=[box(x0 + 500, y0 - 1500, x0 + 1500,
                                                        y0 - 500)],
                     crs=crs).to_file(tmp_path / "o.gpkg")
    n = 400
    yy, xx = np.mgrid[0:n, 0:n]
    with rasterio.open(tmp_path / "dem.tif", "w", driver="GTiff", height=n, width=n, count=1,
                       dtype="float32", crs=crs,
                       transform=from_origin(x0 - 5000, y0 + 5000, 30, 30)) as dst:
        dst.write((4500 + 6.0 * yy - 3.0 * xx).astype("float32"), 1)
    kw = dict(dem=tmp_path / "dem.tif", outlines=tmp_path / "o.gpkg",
              models=["builtin:landsat"], progress=False)
    map_scene(folder, out=tmp_path / "a.tif", **kw)
    map_scene(folder / f"{folder.name}_SR_stac.json", out=tmp_path / "b.tif", **kw)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        ca, cb = a.read(1), b.read(1)
    assert (ca != 255).sum() > 5000
    assert ca.tobytes() == cb.tobytes()
