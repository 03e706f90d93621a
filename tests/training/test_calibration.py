"""Calibration: temperature recovers a known T, isotonic lowers ECE, JSON round trip,
reliability numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

from glacierfacies.training import calibration as calibration
from glacierfacies.training.metrics import expected_calibration_error


def _overconfident(n: int, t_true: float, seed: int = 0):
    """Labels drawn from softmax(z); the 'model' reports logits z * t_true (too confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, 8))
    z[np.arange(n), rng.integers(0, 8, n)] += 2.0
    p = softmax(z, axis=1)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(max=7)
    return z * t_true, y


@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_recovers_known_t(t_true):
    logits, y = _overconfident(20_000, t_true)
    t = calibration.fit_temperature(logits, y)
    assert t == pytest.approx(t_true, rel=0.05)
    # optimum: the NLL at T is no worse than at nearby temperatures
    nll = calibration.temperature_nll(logits, y, t)
    assert nll <= calibration.temperature_nll(logits, y, 1.1 * t)
    assert nll <= calibration.temperature_nll(logits, y, t / 1.1)


def test_apply_temperature_numpy_and_torch():
    torch = pytest.importorskip("torch")
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    probs = calibration.apply_temperature(logits, 2.0)
    assert probs == pytest.approx(softmax(logits / 2.0, axis=1))
    assert probs.argmax(axis=1).tolist() == [0, 1]
    tp = calibration.apply_temperature(torch.tensor(logits, dtype=torch.float32), 2.0)
    assert isinstance(tp, torch.Tensor)
    assert tp.numpy() == pytest.approx(probs, abs=1e-6)
    with pytest.raises(ValueError):
        calibration.apply_temperature(logits, 0.0)


def test_isotonic_lowers_ece_and_round_trips():
    logits, y = _overconfident(20_000, 3.0, seed=1)
    probs = softmax(logits, axis=1)
    fit, held = slice(0, 10_000), slice(10_000, None)
    iso = calibration.fit_isotonic(probs[fit], y[fit])
    after = iso.predict_proba(probs[held])
    assert after.sum(axis=1) == pytest.approx(np.ones(10_000))
    before_ece = expected_calibration_error(probs[held], y[held])
    after_ece = expected_calibration_error(after, y[held])
    assert before_ece > 0.1 and after_ece < before_ece / 3

    card = json.loads(json.dumps(calibration.to_card("isotonic", iso)))
    assert card["method"] == "isotonic"
    again = calibration.IsotonicCalibrator.from_card(card)
    assert again.predict_proba(probs[held]) == pytest.approx(after)
    assert calibration.calibrated_probs(logits[held], card) == pytest.approx(after)


def test_isotonic_interpolation_matches_sklearn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(3), size=500)
    y = rng.integers(0, 3, 500)
    iso = calibration.fit_isotonic(probs, y)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(probs[:, 1], y == 1)
    grid = np.linspace(-0.1, 1.1, 101)
    ours = np.interp(grid, iso.x_thresholds[1], iso.y_thresholds[1])
    assert ours == pytest.approx(ref.predict(grid))


def test_temperature_card_and_reliability_numbers():
    logits, y = _overconfident(5_000, 2.0, seed=3)
    t = calibration.fit_temperature(logits, y)
    card = calibration.to_card("temperature", t)
    assert card == {"method": "temperature", "temperature": pytest.approx(t)}
    before = softmax(logits, axis=1)
    after = calibration.calibrated_probs(logits, card)
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()  # T never changes the map
    rel = calibration.reliability(before, after, y, n_bins=20)
    eces = rel["eces"]
    assert eces["before"] == pytest.approx(expected_calibration_error(before, y))
    assert eces["after"] < eces["before"] / 2
    assert [p["key"] for p in rel["panels"]] == ["before", "after"]
    for panel in rel["panels"]:
        assert panel["ece"] == eces[panel["key"]]
        assert len(panel["edges"]) == 21 and panel["count"].sum() == len(y)
    assert len(calibration.reliability(before, None, y)["panels"]) == 1


def test_calibration_kept_only_when_it_lowers_the_validation_ece():
    """Issue 13: a fitted temperature that raises the validation ECE is not used."""

    rng = np.random.default_rng(4)  # calibrated logits (labels drawn from their softmax)
    logits = rng.normal(0, 2, (60, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=r) for r in p])
    card = calibration.choose_calibration(logits, y)
    t = calibration.fit_temperature(logits, y)
    before = expected_calibration_error(p, y, 100)
    after = expected_calibration_error(calibration.apply_temperature(logits, t), y, 100)
    assert after > before  # the NLL-optimal temperature would make this ECE worse
    assert card["method"] == "none" and card["temperature"] == 1.0
    assert card["rejected_temperature"] == pytest.approx(t)
    assert card["val_ece_before"] == pytest.approx(before)
    assert card["val_ece_after"] == pytest.approx(after)
    assert "did not lower the validation-fold ECE" in card["reason"]
    assert np.allclose(calibration.calibrated_probs(logits, card), p)
    # overconfident logits: the temperature lowers the ECE and is kept
    over = calibration.choose_calibration(logits * 4, y)
    assert over["method"] == "temperature" and over["temperature"] > 2
    assert over["val_ece_after"] < over["val_ece_before"]
    assert calibration.choose_calibration(logits[:0], y[:0])["method"] == "none"
