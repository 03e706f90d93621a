"""Issue 23: what a raster is comes from its tags (never its file name), the uncertainty has
one definition whatever optional file is given, the ensemble members' spread is in it, and
products of a model without firn say so."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from glacierfacies.classes import N_CLASSES, class_index
from glacierfacies.errors import InputError
from glacierfacies.mapping.blockwrite import write_outputs
from glacierfacies.model.card import trained_classes
from glacierfacies.products import massbalance as mb
from glacierfacies.products import uncertainty
from glacierfacies.products.table import compute_products

SNOW, ICE, FIRN = (class_index(n) for n in ("snow", "ice", "firn"))
CRS, X0, Y0 = "EPSG:32632", 600000.0, 5200000.0
H, W = 60, 40


def _probs(cmap: np.ndarray, p_own: float = 0.8) -> np.ndarray:
    p = np.full((N_CLASSES, *cmap.shape), (1 - p_own) / (N_CLASSES - 1), np.float32)
    for k in range(N_CLASSES):
        p[k][cmap == k] = p_own
    return p


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("companions")
    tr = from_origin(X0, Y0, 10.0, 10.0)
    dem = (3300.0 - 10.0 * np.arange(H)[:, None] * np.ones((1, W))).astype(np.float32)
    with rasterio.open(d / "dem.tif", "w", driver="GTiff", height=H, width=W, count=1,
                       dtype="float32", crs=CRS, transform=tr) as dst:
        dst.write(dem, 1)
    # the outline lies 5 px inside the map on every side (no edge contact)
    gpd.GeoDataFrame({"glacier": ["G"]}, geometry=[box(X0 + 50, Y0 - 550, X0 + 350, Y0 - 50)],
                     crs=CRS).to_file(d / "outlines.gpkg")
    cmap = np.where(dem >= 3100, SNOW, ICE).astype(np.uint8)
    conf = np.full((H, W), 0.8, np.float32)
    tags = {"SCENE_ID": "S2A_MSIL2A_20210901T103021", "MODEL_CLASSES": "ice,snow,debris,water"}
    # companions under names that say nothing of what they are
    write_outputs(cmap, tr, CRS, d / "map.tif", confidence=conf, confidence_out=d / "a.tif",
                  probabilities=_probs(cmap), probabilities_out=d / "b.tif", tags=tags)
    return {"dir": d, "map": d / "map.tif", "dem": d / "dem.tif",
            "outlines": d / "outlines.gpkg", "conf": d / "a.tif", "prob": d / "b.tif"}


def test_companions_come_from_the_map_tags_and_give_one_answer(world):
    with rasterio.open(world["map"]) as ds:
        t = ds.tags()
    assert (t["LAYER"], t["CONFIDENCE"], t["PROBABILITIES"]) == ("facies", "a.tif", "b.tif")
    args = (world["outlines"], world["dem"])
    plain = compute_products([world["map"]], *args).iloc[0]
    with_conf = compute_products([world["map"]], *args, confidence=[world["conf"]]).iloc[0]
    with_prob = compute_products([world["map"]], *args, probabilities=[world["prob"]]).iloc[0]
    for row in (plain, with_conf, with_prob):
        assert row.uncertainty_method == "probabilities"  # one model: no member bands
        assert row.mean_confidence == pytest.approx(80.0)  # found by tag, not by name
        for c in ("aar", "aar_unc", "snowline_m", "snowline_unc_m"):
            assert row[c] == plain[c]
    assert plain.aar == pytest.approx(16 / 50) and 0 < plain.aar_unc < 0.2  # rows 5..20 of 5..54
    # the model card knows no firn: said, and no firn line / snow+firn AAR / firn area
    assert not plain.firn_mapped and "firn_not_mapped" in plain.product_flags
    assert np.isnan(plain.firnline_m) and np.isnan(plain.aar_snow_firn)
    assert np.isnan(plain.area_km2_firn) and np.isnan(plain.firnline_unc_m)
    assert plain.outline_in_scene == 1.0 and plain.outline_edge_fraction == 0.0


def test_a_file_that_says_it_is_another_layer_is_refused(world):
    args = (world["outlines"], world["dem"])
    with pytest.raises(InputError, match="LAYER tag says 'probabilities'"):
        compute_products([world["map"]], *args, confidence=[world["prob"]])
    with pytest.raises(InputError, match="LAYER tag says 'confidence'"):
        compute_products([world["map"]], *args, probabilities=[world["conf"]])
    with pytest.raises(InputError, match="LAYER tag says 'confidence'"):
        compute_products([world["conf"]], *args)  # a confidence raster given as the map


def test_fallbacks_are_labelled_and_a_name_is_not_enough(world, tmp_path):
    tr = from_origin(X0, Y0, 10.0, 10.0)
    with rasterio.open(world["map"]) as ds:
        cmap = ds.read(1)
    # no probabilities: the confidence bound, labelled; mean confidence unchanged
    write_outputs(cmap, tr, CRS, tmp_path / "c_facies.tif", confidence=np.full((H, W), 0.8,
                  np.float32), confidence_out=tmp_path / "c_confidence.tif")
    r = compute_products([tmp_path / "c_facies.tif"], world["outlines"], world["dem"]).iloc[0]
    assert r.uncertainty_method == "fallback:confidence-bound"
    assert "no class probabilities" in r.uncertainty_note and r.mean_confidence == 80.0
    assert "uncertainty_fallback" in r.product_flags and r.firn_mapped  # no MODEL_CLASSES
    # a sibling named *_confidence.tif that is something else is not taken for confidence
    write_outputs(cmap, tr, CRS, tmp_path / "n_facies.tif")
    with rasterio.open(tmp_path / "n_confidence.tif", "w", driver="GTiff", height=H, width=W,
                       count=1, dtype="uint8", crs=CRS, transform=tr) as dst:
        dst.write(np.full((H, W), 7, np.uint8), 1)
        dst.update_tags(LAYER="qa")
    r = compute_products([tmp_path / "n_facies.tif"], world["outlines"], world["dem"]).iloc[0]
    assert r.uncertainty_method == "fallback:cost-tolerance" and np.isnan(r.mean_confidence)
    assert "neither probabilities nor confidence" in r.uncertainty_note
    assert 0 < r.aar_unc < 0.2  # the line's width as an AAR: a number, not NaN


def test_member_spread_is_added_in_quadrature():
    elev = np.repeat(np.linspace(3300, 2710, H)[:, None], W, axis=1)
    mask = np.ones((H, W), bool)
    lines = (3100.0, 3000.0, 3150.0, 3050.0)  # four fold models' own snowlines
    members = np.stack([np.where(elev >= z, SNOW, ICE) for z in lines]).astype(np.uint8)
    cmap = np.where(elev >= 3075.0, SNOW, ICE).astype(np.uint8)
    prob = _probs(cmap, 0.9)
    cfg = mb.ProductConfig(shadow="exclude")
    alone = mb.glacier_products(cmap, mask, elev, 100.0, probabilities=prob, config=cfg)
    both = mb.glacier_products(cmap, mask, elev, 100.0, probabilities=prob, config=cfg,
                               member_maps=members)
    member_aar = [((elev >= z).sum() / elev.size) for z in lines]
    sd = float(np.std(member_aar, ddof=1))
    assert both["aar_member_sd"] == pytest.approx(sd, rel=1e-12) and sd > 0.05
    assert both["aar_unc"] == pytest.approx(np.hypot(alone["aar_unc"], sd), rel=1e-12)
    assert both["uncertainty_method"] == "probabilities+members"
    assert alone["uncertainty_method"] == "probabilities" and np.isnan(alone["aar_member_sd"])
    sl_sd = uncertainty.member_spread(
        [mb.glacier_products(m, mask, elev, 100.0, config=cfg) for m in members])["snowline_m"]
    assert both["snowline_unc_m"] == pytest.approx(np.hypot(alone["snowline_unc_m"], sl_sd))
    assert sl_sd == pytest.approx(np.std(lines, ddof=1), abs=10.0)
    assert both["aar"] == alone["aar"] and both["snowline_m"] == alone["snowline_m"]


def test_trained_classes_from_cards(tmp_path):
    assert trained_classes(["builtin:sentinel2"]) == ["debris", "ice", "shadow", "snow", "water"]
    card = {"classes": ["ice", "snow", "debris", "firn", "shadow", "refrozen-like", "water",
                        "cloud"], "fold": {"classes_trained": ["firn", "ice", "snow"]}}
    (tmp_path / "fold0.json").write_text(json.dumps(card))
    assert trained_classes([tmp_path / "fold0.pt"]) == ["firn", "ice", "snow"]
    del card["fold"]["classes_trained"]  # an imported reference card: its 8 classes
    (tmp_path / "fold0.json").write_text(json.dumps(card))
    assert "firn" in trained_classes([tmp_path / "fold0.pt"])
    assert trained_classes([tmp_path / "missing.pt"]) is None
