"""Scores: hand-computed small cases, agreement with scikit-learn, ECE behaviour."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.training import metrics as metrics

Y_TRUE = np.array([0, 0, 1, 1, 2])
Y_PRED = np.array([0, 1, 1, 1, 0])


def one_hot(pred: np.ndarray, n_classes: int, p: float = 0.9) -> np.ndarray:
    """Probabilities whose argmax is `pred`: p on the predicted class, rest spread evenly."""
    probs = np.full((pred.size, n_classes), (1 - p) / (n_classes - 1))
    probs[np.arange(pred.size), pred] = p
    return probs


def test_mean_iou_by_hand():
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 0 -> 0;
    # class 3 is in neither and is left out
    assert metrics.mean_iou(Y_TRUE, Y_PRED, 4) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert metrics.mean_iou(Y_TRUE, Y_TRUE, 8) == 1.0
    assert metrics.mean_iou([], [], 8) == 0.0


def test_macro_f1_by_hand_and_sklearn():
    # class 0: P 1/2 R 1/2 F1 1/2; class 1: P 2/3 R 1 F1 0.8; class 2: F1 0
    expected = (0.5 + 0.8 + 0.0) / 3
    assert metrics.macro_f1(Y_TRUE, Y_PRED, 8) == pytest.approx(expected)
    assert expected == pytest.approx(f1_score(Y_TRUE, Y_PRED, labels=[0, 1, 2], average="macro"))


def test_evaluate_values_and_groups():
    # glacier A perfect (F1 1); B swapped (0); C: class 0 P 1 R 1/2 -> 2/3, class 1 P 2/3 R 1 -> 0.8
    y_true = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 1])
    table = pd.DataFrame(
        {
            "glacier": list("AAAABBCCCC"),
            "region": ["alps"] * 6 + ["norway"] * 4,
            "sensor": ["S2"] * 4 + ["L8"] * 6,
        }
    )
    names = ["ice", "snow", "debris"]
    with pytest.warns(UserWarning, match="debris"):
        res = metrics.evaluate(y_true, one_hot(y_pred, 3), table, names)
    json.dumps(res, allow_nan=False)  # JSON-able, no NaN

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1])
    assert res["macro_f1"] == pytest.approx(f.mean())
    assert res["per_class"]["ice"] == pytest.approx(
        {"precision": p[0], "recall": r[0], "f1": f[0], "support": 5, "predicted": 4}
    )
    assert res["per_class"]["debris"]["f1"] is None and res["per_class"]["debris"]["support"] == 0
    assert res["absent_classes"] == ["debris"]
    assert res["n"] == 10 and res["accuracy"] == pytest.approx(0.7)
    assert res["confusion"]["counts"] == [[3, 2, 0], [1, 4, 0], [0, 0, 0]]
    assert res["confusion"]["normalised"][0] == pytest.approx([0.6, 0.4, 0.0])
    assert res["confusion"]["normalised"][2] == [0.0, 0.0, 0.0]

    per_glacier = [1.0, 0.0, (2 / 3 + 0.8) / 2]
    gw = res["glacier_wise"]
    assert gw["n_glaciers"] == 3
    assert gw["macro_f1_mean"] == pytest.approx(np.mean(per_glacier))
    assert gw["macro_f1_std"] == pytest.approx(np.std(per_glacier))  # population std
    assert gw["per_glacier"]["C"] == {"macro_f1": pytest.approx(per_glacier[2]), "n": 4}
    # alps = glaciers A + B; norway = C
    alps = metrics.macro_f1(y_true[:6], y_pred[:6], 3)
    assert res["per_region"]["alps"]["macro_f1"] == pytest.approx(alps)
    assert res["per_region"]["norway"]["macro_f1"] == pytest.approx(per_glacier[2])
    assert res["per_sensor"]["S2"] == {"macro_f1": 1.0, "n": 4}


def test_evaluate_empty_set_does_not_crash():
    with pytest.warns(UserWarning):
        res = metrics.evaluate(np.zeros(0, int), np.zeros((0, 8)), {"glacier": []}, CLASS_NAMES)
    assert res["n"] == 0 and res["macro_f1"] == 0.0 and len(res["absent_classes"]) == 8


def test_evaluate_rejects_misaligned_input():
    with pytest.raises(ValueError, match="shape"):
        metrics.evaluate(Y_TRUE, np.ones((5, 3)), None, CLASS_NAMES)
    with pytest.raises(ValueError, match="rows"):  # checked before any scoring or warning
        metrics.evaluate(Y_TRUE, one_hot(Y_PRED, 8), {"glacier": ["a"] * 4}, CLASS_NAMES)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    # bin 0.9: accuracy 1/2, gap 0.4; bin 0.6: accuracy 1, gap 0.4; each holds half the points
    assert metrics.expected_calibration_error(probs, [0, 1, 0, 0], n_bins=10) == pytest.approx(0.4)


def _calibrated_sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from those probabilities: calibrated by construction."""
    probs = rng.dirichlet(np.full(8, 0.3), size=n)
    u = rng.random((n, 1))
    y = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), 7)
    return probs, y


def test_ece_calibrated_near_zero_overconfident_positive():
    rng = np.random.default_rng(0)
    probs, y = _calibrated_sample(400_000, rng)
    assert metrics.expected_calibration_error(probs, y) < 0.01
    sharp = probs**3
    sharp /= sharp.sum(axis=1, keepdims=True)
    assert metrics.expected_calibration_error(sharp, y) > 0.05


def test_row_normalised_is_recall_per_reference_class():
    cm = metrics.confusion_counts(Y_TRUE, Y_PRED, 4)
    norm = metrics.row_normalised(cm)
    assert norm[:3].sum(axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert norm[0, 0] == 0.5 and norm[2, 0] == 1.0 and (norm[3] == 0).all()  # empty row: 0
