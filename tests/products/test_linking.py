"""RGI 7 -> RGI 6 -> WGMS links through GLIMS ids and outline overlap (constructed outlines:
there is no RGI 7 file in the shared data)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from glacierfacies.errors import InputError
from glacierfacies.products.linking import (
    add_rgi6_ids,
    is_rgi6,
    is_rgi7,
    link_by_glims,
    link_by_overlap,
    read_rgi6_outlines,
)
from glacierfacies.products.regression import link_products

CRS = "EPSG:32632"
X0, Y0 = 600000.0, 5200000.0


def _rgi6() -> gpd.GeoDataFrame:
    """Four RGI 6 glaciers side by side, 1 km x 1 km each (RGI 6.0 column names)."""
    return gpd.GeoDataFrame({
        "RGIId": [f"RGI60-11.0000{i}" for i in range(1, 5)],
        "GLIMSId": ["G010000E46000N", "G010010E46000N", "G010020E46000N", "G010030E46000N"],
        "Name": ["Alpha", "Beta", "Gamma", "Delta"],
    }, geometry=[box(X0 + 1000 * i, Y0, X0 + 1000 * (i + 1), Y0 + 1000) for i in range(4)],
        crs=CRS)


def _rgi7() -> gpd.GeoDataFrame:
    """RGI 7 outlines of the same glaciers, redrawn: A keeps its GLIMS id (outline moved),
    B has no GLIMS id but mostly overlaps RGI 6 Beta, C covers a third of Gamma only,
    D spans Gamma's and Delta's halves (a merge: neither side dominates), E lies elsewhere."""
    gdf = gpd.GeoDataFrame({
        "rgi_id": ["RGI2000-v7.0-G-11-00101", "RGI2000-v7.0-G-11-00102",
                   "RGI2000-v7.0-G-11-00103", "RGI2000-v7.0-G-11-00104",
                   "RGI2000-v7.0-G-11-00105"],
        "glims_id": ["G010000E46000N", None, None, None, None],
    }, geometry=[box(X0 + 300, Y0 + 300, X0 + 1300, Y0 + 1300),  # A: GLIMS id
                 box(X0 + 1050, Y0, X0 + 1950, Y0 + 950),  # B: 100% inside Beta, 85% of it
                 box(X0 + 2000, Y0, X0 + 2333, Y0 + 1000),  # C: one third of Gamma
                 box(X0 + 2500, Y0, X0 + 3500, Y0 + 1000),  # D: half Gamma, half Delta
                 box(X0 + 9000, Y0, X0 + 9500, Y0 + 500)],  # E: nothing
        crs=CRS)
    return gdf.to_crs(4326)  # RGI 7 comes in geographic coordinates


def test_id_patterns():
    assert is_rgi6("RGI60-11.00897") and not is_rgi6("RGI2000-v7.0-G-11-01706")
    assert is_rgi7("RGI2000-v7.0-G-11-01706") and not is_rgi7("RGI60-11.00897")
    assert not is_rgi7(None) and not is_rgi6(float("nan"))


def test_glims_and_overlap_links(tmp_path):
    _rgi6().to_file(tmp_path / "rgi6.gpkg")
    rgi6 = read_rgi6_outlines(tmp_path / "rgi6.gpkg")
    assert list(rgi6.columns[:2]) == ["rgi6_id", "glims_id"]
    seven = _rgi7()
    by_glims = link_by_glims(seven["glims_id"], rgi6)
    assert by_glims.tolist()[0] == "RGI60-11.00001" and by_glims.isna().sum() == 4
    ov = link_by_overlap(seven, rgi6)
    # A (moved: 49% overlap) links by its GLIMS id only; C too small a part, D a merge,
    # E nothing
    assert ov["rgi6_id"].isna().tolist() == [True, False, True, True, True]
    assert ov["rgi6_id"].iloc[1] == "RGI60-11.00002"
    assert ov["overlap_fraction"].iloc[1] == pytest.approx(1.0, abs=1e-6)
    assert ov["rgi6_fraction"].iloc[1] == pytest.approx(0.855, abs=1e-3)
    # products table: RGI 7 ids in the glacier column, one row per glacier and scene
    products = pd.DataFrame({"glacier": list(seven["rgi_id"]) * 2,
                             "glims_id": list(seven["glims_id"]) * 2})
    geometry = pd.concat([seven.geometry, seven.geometry], ignore_index=True)
    linked = add_rgi6_ids(products, rgi6, geometry.set_crs(4326, allow_override=True))
    assert list(linked["rgi6_id"].iloc[:2]) == ["RGI60-11.00001", "RGI60-11.00002"]
    assert linked["rgi6_id"].iloc[2:5].isna().all()
    assert list(linked["rgi6_link"].iloc[:2]) == ["glims", "overlap"]
    assert linked["rgi6_link"].iloc[2:5].isna().all()
    assert linked["rgi7_id"].tolist() == products["glacier"].tolist()
    # RGI 6 ids that are given stay; nothing to link without RGI 6 outlines
    given = add_rgi6_ids(pd.DataFrame({"glacier": ["RGI60-11.00897"]}))
    assert given["rgi6_id"].tolist() == ["RGI60-11.00897"] and given["rgi6_link"][0] == "given"
    # ... and on to WGMS: records carry RGI 6 ids
    records = pd.DataFrame({"wgms_id": pd.array([10, 20], dtype="Int64"),
                            "rgi_id": ["RGI60-11.00001", "RGI60-11.00002"],
                            "name": ["ALPHA", "BETA"]})
    keys = link_products(linked.drop(columns=["glims_id"]), records)
    assert list(keys.iloc[:2]) == ["10", "20"] and keys.iloc[2:5].isna().all()
    with pytest.raises(InputError, match="no RGI 6 id column"):
        _rgi6().rename(columns={"RGIId": "x"}).to_file(tmp_path / "bad.gpkg")
        read_rgi6_outlines(tmp_path / "bad.gpkg")
