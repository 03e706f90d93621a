"""Confident learning: finds flipped facies labels, never touches misc classes; review files."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from glacierfacies.classes import CLASS_NAMES, FACIES_CODES, MISC_NAMES, class_index
from glacierfacies.training import cleaning as cleaning

MISC_CODES = [class_index(n) for n in MISC_NAMES]


def _noisy_set(n: int = 6_000, flip_rate: float = 0.1, seed: int = 0):
    """True classes, good out-of-fold probabilities for them, and ~10% flipped given labels."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 8, n)
    logits = rng.normal(0.0, 1.0, (n, 8))
    logits[np.arange(n), true] += 4.0
    probs = softmax(logits, axis=1)
    flipped = rng.random(n) < flip_rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, 8, flipped.sum())) % 8
    return given, probs, flipped


def test_finds_flipped_facies_labels_and_spares_misc_classes():
    given, probs, flipped = _noisy_set()
    mask = cleaning.find_noisy_labels(given, probs)
    facies_flipped = flipped & np.isin(given, FACIES_CODES)
    recall = (mask & facies_flipped).sum() / facies_flipped.sum()
    precision = (mask & flipped).sum() / mask.sum()
    assert recall >= 0.8 and precision >= 0.8, (recall, precision)
    assert not mask[np.isin(given, MISC_CODES)].any()
    # misc labels that are wrong exist, and cleanlab alone would have flagged many of them
    everything = cleaning.find_noisy_labels(given, probs, prune_classes=range(8))
    assert everything[np.isin(given, MISC_CODES) & flipped].mean() > 0.8
    # deterministic
    assert (cleaning.find_noisy_labels(given, probs, seed=0) == mask).all()


def test_prune_classes_by_name_and_empty_cases():
    given, probs, flipped = _noisy_set(2_000, seed=1)
    only_ice = cleaning.find_noisy_labels(given, probs, prune_classes=["ice"])
    assert only_ice.any() and (given[only_ice] == 0).all()
    assert not cleaning.find_noisy_labels(given, probs, prune_classes=[]).any()
    with pytest.raises(ValueError, match="NaN"):
        cleaning.find_noisy_labels(given, np.full_like(probs, np.nan))


def test_score_against_truth_restricts_to_facies():
    flipped = pd.DataFrame(
        {
            "point_id": ["p1", "p2", "p3", "p4", "p5"],
            "true_class": ["snow", "ice", "firn", "ice", "snow"],
            "given_class": ["ice", "snow", "ice", "cloud", "shadow"],
        }
    )
    score = cleaning.score_against_truth(["p1", "p2", "p9"], flipped)
    # p4/p5 were given misc classes: not prunable, not counted; 2 of 3 facies flips found
    assert score["n_flipped"] == 3 and score["n_flipped_total"] == 5
    assert score["recall"] == pytest.approx(2 / 3)
    assert score["precision"] == pytest.approx(2 / 3)
    assert score["n_true_positive"] == 2
    in_data = cleaning.score_against_truth(["p1"], flipped, dataset_point_ids=["p1", "p3", "p4"])
    assert in_data["n_flipped"] == 2 and in_data["recall"] == 0.5 and in_data["precision"] == 1.0
    plain = cleaning.score_against_truth([1, 2], [2, 3, 4, 5])  # ids compared as strings
    assert plain["recall"] == 0.25 and plain["precision"] == 0.5


def test_write_review_csv_and_geopackage(tmp_path):
    n = 6
    table = pd.DataFrame(
        {
            "point_id": [f"pt{i}" for i in range(n)],
            "glacier": ["RGI60-11.01450"] * 3 + ["RGI60-11.00897"] * 3,
            "scene_id": ["S2B_20200815"] * n,
            "date": ["2020-08-15"] * n,
            "sensor": ["S2"] * n,
            "region": ["alps"] * n,
            "x": 600_000.0 + 10 * np.arange(n),
            "y": 5_100_000.0 + 10 * np.arange(n),
        }
    )
    labels = np.array([0, 1, 2, 3, 4, 5])
    probs = np.full((n, 8), 0.01)
    probs[np.arange(n), labels] = [0.3, 0.1, 0.9, 0.2, 0.9, 0.9]
    probs[:, 1] += [0.6, 0.0, 0.0, 0.0, 0.0, 0.0]
    probs[1, 0] = 0.8
    probs[3, 7] = 0.7
    probs /= probs.sum(axis=1, keepdims=True)
    mask = np.array([True, True, False, True, False, False])

    paths = cleaning.write_review(
        table, labels, probs, mask, CLASS_NAMES, tmp_path / "rv", "EPSG:32632"
    )
    csv = pd.read_csv(paths["csv"])
    assert csv["point_id"].tolist() == ["pt1", "pt3", "pt0"]  # least self-confident first
    assert csv["given_class"].tolist() == ["snow", "firn", "ice"]
    assert csv["suggested_class"].tolist() == ["ice", "cloud", "snow"]
    assert csv["self_confidence"].is_monotonic_increasing
    assert csv["self_confidence"].tolist() == pytest.approx(probs[[1, 3, 0], [1, 3, 0]], rel=1e-5)

    gdf = gpd.read_file(paths["gpkg"], layer=cleaning.REVIEW_LAYER)
    assert gdf.crs.to_epsg() == 32632
    assert gdf["point_id"].tolist() == ["pt1", "pt3", "pt0"]
    assert gdf.geometry.x.tolist() == [600_010.0, 600_030.0, 600_000.0]
    assert gdf.geometry.y.tolist() == [5_100_010.0, 5_100_030.0, 5_100_000.0]
    assert {"glacier", "scene_id", "given_class", "suggested_class", "self_confidence"} <= set(
        gdf.columns
    )
    assert sorted(p.name for p in (tmp_path / "rv").iterdir()) == sorted(
        [cleaning.REVIEW_CSV, cleaning.REVIEW_GPKG]
    )
