"""Faults no other test caught (issue 23, mutation check): the snowline's tie-break among
equal-cost thresholds and the `min_observed` boundary, each pinned by value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glacierfacies.classes import class_index
from glacierfacies.products import massbalance as mb
from glacierfacies.products.regression import select_end_of_season

SNOW, ICE = class_index("snow"), class_index("ice")
#: a 7-step toy profile, 100 .. 160 m, one row of pixels per step
STEPS = np.arange(100.0, 161.0, 10.0)


def test_snowline_tie_break_takes_the_middle_of_equal_cost_thresholds():
    # zone (snow) at 120 m and from 140 m up: thresholds 115 and 135 m both cost 1
    zone = np.array([0, 0, 1, 0, 1, 1, 1], bool)
    line, unc = mb.snowline_altitude(STEPS, zone)
    assert (line, unc) == (125.0, 10.0)  # lowest tie: (115, 20); highest: (135, 20)
    # three tied thresholds, 105, 125 and 145 m (the toy profile): the middle one
    zone3 = np.array([0, 1, 0, 1, 0, 1, 1], bool)
    costs = {0.5 * (STEPS[k - 1] + STEPS[k]): int(zone3[:k].sum() + (~zone3[k:]).sum())
             for k in range(1, 7)}
    assert sorted(t for t, c in costs.items() if c == min(costs.values())) == [105, 125, 145]
    line3, unc3 = mb.snowline_altitude(STEPS, zone3)
    assert (line3, unc3) == (125.0, 20.0)  # lowest: (105, 40); highest: (145, 40)


def test_snowline_tie_break_through_glacier_products():
    # rows of 20 pixels at the 7 steps: the same tie as above, as a class map
    elev = np.repeat(STEPS[::-1, None], 20, axis=1)  # north (row 0) highest
    zone = np.array([0, 0, 1, 0, 1, 1, 1], bool)[::-1]
    cmap = np.where(zone[:, None], SNOW, ICE).astype(np.uint8) * np.ones((1, 20), np.uint8)
    mask = np.ones(cmap.shape, bool)
    p = mb.glacier_products(cmap, mask, elev, 100.0, config=mb.ProductConfig(shadow="exclude"))
    assert p["snowline_m"] == 125.0 and p["snowline_unc_m"] == 10.0
    assert p["aar"] == pytest.approx(4 / 7)


def _season(obs_a: float) -> pd.DataFrame:
    """Two September scenes of one glacier: A (low AAR, observed `obs_a`) and B."""
    return pd.DataFrame({
        "glacier": ["G1", "G1"], "scene_id": ["A", "B"],
        "date": pd.to_datetime(["2021-09-01", "2021-09-20"]),
        "aar": [0.30, 0.50], "aar_unc": [0.02, 0.02], "observed_fraction": [obs_a, 0.95],
        "hemisphere": ["north", "north"]})


@pytest.mark.parametrize("rule", ["robust", "minimum"])
def test_min_observed_boundary_is_inclusive(rule):
    # observed exactly min_observed: a candidate (>=), and with the lower AAR it is chosen
    idx = mb.end_of_season(np.array(["G1", "G1"]), np.array(["2021-09-01", "2021-09-20"]),
                           np.array([0.30, 0.50]), np.array([0.8, 0.95]), min_observed=0.8,
                           rule=rule)
    assert idx.tolist() == [0]
    # just below it: not a candidate, the other scene is chosen
    idx = mb.end_of_season(np.array(["G1", "G1"]), np.array(["2021-09-01", "2021-09-20"]),
                           np.array([0.30, 0.50]), np.array([0.7999, 0.95]), min_observed=0.8,
                           rule=rule)
    assert idx.tolist() == [1]


def test_min_observed_boundary_through_select_end_of_season():
    sel = select_end_of_season(_season(0.8), min_observed=0.8)
    assert sel["scene_id"].tolist() == ["A"] and sel["aar"].tolist() == [0.30]
    sel = select_end_of_season(_season(0.79), min_observed=0.8)
    assert sel["scene_id"].tolist() == ["B"] and sel["aar"].tolist() == [0.50]
    # every scene below: nothing is chosen
    assert len(select_end_of_season(_season(0.8), min_observed=0.96)) == 0
