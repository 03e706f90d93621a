"""STAC in: items, ItemCollections and static catalogs read as the product they describe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glacierfacies.errors import InputError
from glacierfacies.scenes.reader import expand_scenes, read_scene, scene_grid, scene_ids

NATIVE = "native/landsat/LC08_L2SP_001070_20190114_20200830_02_T2"
COMMON = {"SR_B2": "blue", "SR_B3": "green", "SR_B4": "red", "SR_B5": "nir08",
          "SR_B6": "swir16", "SR_B7": "swir22"}


def landsat_item(scene_dir: Path, *, href: str = "relative", raster: bool = True,
                 keys: str = "common") -> dict:
    """A STAC 1.0 item for a sample Landsat folder, as Planetary Computer writes them:
    assets keyed by common name, eo:bands, raster:bands scale/offset, sun in view:."""
    sc = read_scene(scene_dir)
    assets = {}
    for f in sorted(scene_dir.glob("*_SR_B*.TIF")):
        band = f.stem.rsplit("_", 2)[-2] + "_" + f.stem.rsplit("_", 1)[-1]  # SR_Bn
        if band not in COMMON:
            continue
        if href == "relative":
            h = f.name
        elif href == "url":
            h = f"https://landsateuwest.blob.core.windows.net/c2/{f.name}"
        else:
            h = str(f)
        a = {"href": h, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
             "roles": ["data"],
             "eo:bands": [{"name": band, "common_name": COMMON[band]}]}
        if raster:
            a["raster:bands"] = [{"scale": 2.75e-5, "offset": -0.2, "nodata": 0,
                                  "data_type": "uint16"}]
        assets[COMMON[band] if keys == "common" else f"{band}.TIF"] = a
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": sc.scene_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/view/v1.0.0/schema.json"],
        "geometry": None, "bbox": None,
        "properties": {"datetime": sc.acquired.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                       "platform": "landsat-8", "view:sun_azimuth": sc.sun_azimuth_deg,
                       "view:sun_elevation": sc.sun_elevation_deg},
        "links": [], "assets": assets,
    }


def _landsat_dirs(sample_dir: Path) -> list[Path]:
    return sorted(p for p in (sample_dir / "scenes").iterdir() if p.name.startswith("LC0"))


def _same_scene(a, b) -> None:
    np.testing.assert_array_equal(a.reflectance, b.reflectance)  # NaN at the same places
    np.testing.assert_array_equal(a.valid, b.valid)
    assert (a.transform, a.shape, a.scene_id) == (b.transform, b.shape, b.scene_id)
    assert (a.sun_azimuth_deg, a.sun_elevation_deg) == (b.sun_azimuth_deg, b.sun_elevation_deg)
    assert abs((a.acquired - b.acquired).total_seconds()) < 1e-3


@pytest.mark.parametrize("href,keys", [("relative", "common"), ("absolute", "product")])
def test_sample_item_reads_as_its_product_folder(sample_dir, tmp_path, href, keys):
    folder = _landsat_dirs(sample_dir)[0]
    d = landsat_item(folder, href=href, keys=keys)
    if href == "relative":  # hrefs relative to the item's folder
        (tmp_path / "scenes").symlink_to(sample_dir / "scenes")
        for a in d["assets"].values():
            a["href"] = f"scenes/{folder.name}/{a['href']}"
    tmp_item = tmp_path / "item.json"
    tmp_item.write_text(json.dumps(d))
    got = read_scene(tmp_item)
    _same_scene(read_scene(folder), got)
    assert got.metadata["bands_by"] == "eo:bands common names"
    assert got.metadata["coding"] == "STAC raster extension"
    assert scene_grid(tmp_item) == scene_grid(folder)
    assert scene_ids([tmp_item]) == scene_ids([folder])


def test_item_collection_and_static_catalog(sample_dir, tmp_path):
    import pystac

    dirs = _landsat_dirs(sample_dir)
    feats = [landsat_item(f, href="absolute") for f in dirs]
    coll = tmp_path / "items.json"
    coll.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    refs = expand_scenes([str(coll)])
    assert [str(r) for r in refs] == [f"{coll}#{f['id']}" for f in feats]
    assert scene_ids(refs) == scene_ids(dirs)
    _same_scene(read_scene(dirs[1]), read_scene(refs[1]))
    with pytest.raises(InputError, match="holds 2 STAC items; name one"):
        read_scene(coll)
    # a static catalog on disk (pystac, self-contained): its items' own files
    cat = pystac.Catalog("scenes", "two sample scenes")
    for f in feats:
        cat.add_item(pystac.Item.from_dict(f))
    cat.normalize_hrefs(str(tmp_path / "catalog"))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    refs = expand_scenes(str(tmp_path / "catalog" / "catalog.json"))
    assert len(refs) == 2 and all(r.is_file() and r.suffix == ".json" for r in refs)
    assert sorted(scene_ids(refs)) == sorted(scene_ids(dirs))


def test_url_hrefs_read_from_files_beside_the_item_else_one_line(sample_dir, tmp_path):
    folder = _landsat_dirs(sample_dir)[0]
    local = tmp_path / "offline"
    local.mkdir()
    for f in folder.iterdir():
        (local / f.name).symlink_to(f)
    item = local / "item.json"
    item.write_text(json.dumps(landsat_item(folder, href="url", raster=False)))
    got = read_scene(item)  # no raster:bands: Landsat C2 L2 coding, from the platform
    _same_scene(read_scene(folder), got)
    assert got.metadata["coding"].startswith("Landsat Collection-2 L2 coding")
    (local / f"{folder.name}_SR_B6.TIF").unlink()
    with pytest.raises(InputError) as exc:
        read_scene(item)
    msg = str(exc.value)
    assert "\n" not in msg and "asset 'swir16' is remote" in msg and "_SR_B6.TIF" in msg


def test_item_without_a_band_names_it(sample_dir, tmp_path):
    d = landsat_item(_landsat_dirs(sample_dir)[0], href="absolute")
    del d["assets"]["swir22"]
    (tmp_path / "i.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"no asset for swir2 \(swir22\)"):
        read_scene(tmp_path / "i.json")


def test_usgs_landsat_item_equals_the_product_folder(shared_data):
    """The agency's own item (STAC 0.7, eo:bands, date-only datetime, URL hrefs, files
    beside it): same reflectance, validity, QA, sun and time as the product folder."""
    folder = shared_data / NATIVE
    item = folder / f"{folder.name}_SR_stac.json"
    grid = scene_grid(folder).window(8100, 11900, 400, 400)
    a, b = read_scene(folder, grid=grid), read_scene(item, grid=grid)
    _same_scene(a, b)
    np.testing.assert_array_equal(a.qa, b.qa)
    assert b.valid.mean() > 0.5 and b.sensor == a.sensor == "landsat8"
    assert b.metadata["product_mask"] == a.metadata["product_mask"]
    assert b.metadata["saturation"] == "QA_RADSAT"
    assert scene_grid(item) == scene_grid(folder)
    assert scene_ids([item]) == scene_ids([folder]) == [folder.name]


def test_run_configuration_takes_an_item_collection(sample_dir, tmp_path):
    """`scenes:` of a run configuration may name a STAC ItemCollection: `run` checks its
    items like any scene (headers, DEM overlap, outlines, the labels' scene ids)."""
    from glacierfacies.workflow.config import load_config
    from glacierfacies.workflow.inputs import check_run

    dirs = _landsat_dirs(sample_dir)
    (tmp_path / "items.json").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [landsat_item(d, href="absolute")
                                                   for d in dirs]}))
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        f"scenes: [items.json, '{sample_dir}/scenes/S2*.SAFE']\n"
        f"dem: {sample_dir / 'dem.tif'}\noutlines: {sample_dir / 'outlines.gpkg'}\n"
        f"labels: {sample_dir / 'labels.gpkg'}\n")
    cfg, _ = load_config(cfg_path)
    inputs = check_run(cfg, tmp_path / "out")
    assert [str(s) for s in inputs.scenes[:2]] == [f"{tmp_path / 'items.json'}#{d.name}"
                                                   for d in dirs]
    assert len(inputs.scenes) == 6 and not (tmp_path / "out").exists()
