"""Figures drawn from the numbers the stages return: confusion, reliability, scatter."""

from __future__ import annotations

import json

import numpy as np
from scipy.special import softmax

from glacierfacies._io import write_json
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.training import calibration
from glacierfacies.training.metrics import confusion_counts
from glacierfacies.workflow import figures

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_png_is_written_atomically(tmp_path):
    counts = confusion_counts([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], len(CLASS_NAMES))
    path = figures.confusion_png(counts, CLASS_NAMES, tmp_path / "confusion.png", title="t")
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5_000
    assert list(tmp_path.iterdir()) == [path]  # nothing half-written left beside it


def test_reliability_png_from_json_numbers(tmp_path):
    """The figure takes the numbers as stored in JSON (empty bins null) and draws them."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2_000, 8))
    y = rng.integers(0, 8, 2_000)
    rel = calibration.reliability(softmax(logits, axis=1), softmax(logits / 3, axis=1), y)
    rel.pop("eces")
    write_json(tmp_path / "rel.json", rel, strict=True)
    stored = json.loads((tmp_path / "rel.json").read_text())
    assert None in stored["panels"][0]["accuracy"]  # an empty bin, strict JSON
    path = figures.reliability_png(stored, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == PNG


def test_training_figures_need_an_evaluated_run(tmp_path):
    assert figures.training_figures(tmp_path) == []


def test_scatter_png(tmp_path):
    obs = np.array([-1.0, 0.0, 0.5, np.nan])
    path = figures.scatter_png(obs * 0.9, obs, "balance ~ aar\nr 0.9", tmp_path / "s.png")
    assert path.read_bytes()[:8] == PNG
