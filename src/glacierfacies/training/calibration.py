"""Confidence calibration fitted on the validation fold: temperature scaling and isotonic.

Temperature scaling (the default) divides the logits by one scalar T > 0 fitted by minimising
the negative log-likelihood; it never changes the predicted class, so maps stay the same and
only their confidence changes. Isotonic calibration is the option for stronger miscalibration:
one `sklearn.isotonic.IsotonicRegression` per class (one-vs-rest on that class's probability),
then renormalised to sum to 1 -- the multiclass scheme of scikit-learn's
`CalibratedClassifierCV(method="isotonic")`. It can change the argmax in rare near-ties.
Both serialise to the small JSON dict stored in the model card (`to_card` / `from_card`).

Pure computation (numpy, scipy, scikit-learn); `reliability` returns the numbers of the
reliability diagram, which `workflow.figures.reliability_png` draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from glacierfacies.training.metrics import (
    _as_numpy,
    _labels_1d,
    expected_calibration_error,
    reliability_bins,
)

__all__ = ["IsotonicCalibrator", "apply_temperature", "calibrated_probs", "choose_calibration",
           "fit_isotonic",
           "fit_temperature", "reliability", "tempered_softmax", "temperature_nll", "to_card"]

_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def _check_pair(scores: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_numpy(scores).astype(np.float64)
    y = _labels_1d(y, "y")
    if scores.ndim != 2 or scores.shape[0] != y.shape[0] or scores.shape[0] == 0:
        raise ValueError(
            f"{name} must be (N, C) with N = len(y) = {y.shape[0]} > 0, got {scores.shape}"
        )
    if y.min() < 0 or y.max() >= scores.shape[1]:
        raise ValueError(f"y has codes outside 0..{scores.shape[1] - 1}")
    return scores, y


def temperature_nll(logits: Any, y: Any, temperature: float) -> float:
    """Mean negative log-likelihood of `y` under softmax(logits / T)."""
    logits, y = _check_pair(logits, y, "logits")
    logp = log_softmax(logits / temperature, axis=1)
    return float(-np.mean(logp[np.arange(y.shape[0]), y]))


def fit_temperature(logits: Any, y: Any) -> float:
    """Temperature T > 0 that minimises the validation NLL of softmax(logits / T).

    The NLL is convex in 1/T, hence unimodal in log T, so a bounded Brent search over
    log T in [log 0.01, log 100] finds the global optimum.
    """
    logits, y = _check_pair(logits, y, "logits")
    rows = np.arange(y.shape[0])

    def nll(log_t: float) -> float:
        return float(-np.mean(log_softmax(logits * np.exp(-log_t), axis=1)[rows, y]))

    res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-7})
    return float(np.exp(res.x))


def apply_temperature(logits: Any, temperature: float) -> Any:
    """softmax(logits / T) over the last axis; torch tensors stay torch (same device)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if hasattr(logits, "detach"):
        return (logits / temperature).softmax(dim=-1)
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)


class IsotonicCalibrator:
    """Per-class isotonic maps of probabilities, renormalised; JSON round-trippable.

    Stores each class's isotonic breakpoints (`X_thresholds_`, `y_thresholds_` of the fitted
    `IsotonicRegression`); prediction is their piecewise-linear interpolation, clipped at the
    ends, which is exactly what `IsotonicRegression(out_of_bounds="clip").predict` does.
    """

    def __init__(self, x_thresholds: list[np.ndarray], y_thresholds: list[np.ndarray]):
        if len(x_thresholds) != len(y_thresholds) or not x_thresholds:
            raise ValueError("need one (x, y) breakpoint list per class")
        self.x_thresholds = [np.asarray(x, dtype=np.float64) for x in x_thresholds]
        self.y_thresholds = [np.asarray(v, dtype=np.float64) for v in y_thresholds]

    @property
    def n_classes(self) -> int:
        return len(self.x_thresholds)

    def predict_proba(self, probs: Any) -> np.ndarray:
        """Calibrated (N, C) probabilities; rows whose calibrated sum is 0 become uniform."""
        probs = _as_numpy(probs).astype(np.float64)
        if probs.ndim != 2 or probs.shape[1] != self.n_classes:
            raise ValueError(f"probs must be (N, {self.n_classes}), got {probs.shape}")
        out = np.empty_like(probs)
        for k in range(self.n_classes):
            out[:, k] = np.interp(probs[:, k], self.x_thresholds[k], self.y_thresholds[k])
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / self.n_classes)
        return np.divide(out, total, out=uniform, where=total > 0)

    def to_card(self) -> dict[str, Any]:
        return {
            "method": "isotonic",
            "scheme": "per-class one-vs-rest, renormalised",
            "x_thresholds": [x.tolist() for x in self.x_thresholds],
            "y_thresholds": [v.tolist() for v in self.y_thresholds],
        }

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> IsotonicCalibrator:
        return cls(card["x_thresholds"], card["y_thresholds"])


def fit_isotonic(probs: Any, y: Any) -> IsotonicCalibrator:
    """Fit one increasing isotonic map per class on (p_k, 1[y == k]) of the validation fold."""
    from sklearn.isotonic import IsotonicRegression

    probs, y = _check_pair(probs, y, "probs")
    xs, ys = [], []
    for k in range(probs.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(probs[:, k], (y == k).astype(np.float64))
        xs.append(iso.X_thresholds_)
        ys.append(iso.y_thresholds_)
    return IsotonicCalibrator(xs, ys)


def to_card(method: str, fitted: float | IsotonicCalibrator) -> dict[str, Any]:
    """The model card's `calibration` entry for a fitted temperature or isotonic calibrator."""
    if method == "temperature":
        return {"method": "temperature", "temperature": float(fitted)}
    if method == "isotonic" and isinstance(fitted, IsotonicCalibrator):
        return fitted.to_card()
    raise ValueError(f"unknown calibration method {method!r}; use 'temperature' or 'isotonic'")


def calibrated_probs(logits: Any, card: dict[str, Any] | None) -> np.ndarray:
    """Probabilities from logits under a model card's `calibration` entry (None = plain softmax)."""
    method = (card or {}).get("method", "none")
    if method in ("none", None):
        return apply_temperature(_as_numpy(logits), 1.0)
    if method == "temperature":
        return apply_temperature(_as_numpy(logits), float(card["temperature"]))
    if method == "isotonic":
        return IsotonicCalibrator.from_card(card).predict_proba(
            apply_temperature(_as_numpy(logits), 1.0)
        )
    raise ValueError(f"unknown calibration method {method!r} in model card")


def choose_calibration(val_logits: Any, y_val: Any, method: str = "temperature",
                       ece_bins: int = 100) -> dict[str, Any]:
    """The card's calibration entry: `method` fitted on the validation fold, kept only when it
    lowers that fold's ECE; otherwise identity (`method: none`) and the reason.

    A calibration that raises the ECE makes the confidence worse than the raw softmax (seen:
    0.126 -> 0.167 after one epoch on a small set), so it never replaces identity.
    """
    if len(np.asarray(y_val)) == 0:
        return {"method": "none", "temperature": 1.0,
                "reason": "no validation points to fit a calibration on"}
    val_logits, y_val = _check_pair(val_logits, y_val, "val_logits")
    temperature = fit_temperature(val_logits, y_val)
    candidate: dict[str, Any] = {"method": "temperature", "temperature": float(temperature)}
    if method == "isotonic":
        # "temperature" stays as the fallback for consumers that only scale logits
        candidate = {**to_card("isotonic", fit_isotonic(tempered_softmax(val_logits), y_val)),
                     "temperature": float(temperature)}
    elif method != "temperature":
        raise ValueError(f"unknown calibration method {method!r}; use temperature or isotonic")
    before = expected_calibration_error(tempered_softmax(val_logits), y_val, ece_bins)
    after = expected_calibration_error(calibrated_probs(val_logits, candidate), y_val, ece_bins)
    scores = {"val_ece_before": before, "val_ece_after": after, "ece_bins": ece_bins}
    if after < before:
        return {**candidate, **scores}
    return {"method": "none", "temperature": 1.0, **scores,
            "rejected": candidate["method"], "rejected_temperature": float(temperature),
            "reason": f"{candidate['method']} calibration did not lower the validation-fold "
                      f"ECE ({before:.4f} -> {after:.4f}); identity kept"}


def reliability(
    probs_before: Any,
    probs_after: Any,
    y: Any,
    n_bins: int = 20,
    *,
    ece_bins: int = 100,
    labels: tuple[str, str] = ("before calibration", "after calibration"),
) -> dict[str, Any]:
    """The numbers of a reliability diagram, before | after calibration.

    One panel per set of probabilities (`probs_after=None`: one panel), each with its ECE over
    `ece_bins` bins and the top-label accuracy, mean confidence and count in `n_bins` bins
    (fewer than the ECE bins so that each bar holds enough points to read). `eces` maps
    "before"/"after" to the panels' ECEs.
    """
    panels = [(probs_before, labels[0])]
    if probs_after is not None:
        panels.append((probs_after, labels[1]))
    out: dict[str, Any] = {"n_bins": n_bins, "ece_bins": ece_bins, "panels": [], "eces": {}}
    for col, (probs, label) in enumerate(panels):
        key = "before" if col == 0 else "after"
        ece = expected_calibration_error(probs, y, ece_bins)
        out["eces"][key] = ece
        out["panels"].append({"key": key, "label": label, "ece": ece,
                              **reliability_bins(probs, y, n_bins)})
    return out


def tempered_softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64."""
    z = logits.astype(np.float64) / np.asarray(temperature, dtype=np.float64).reshape(-1, 1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
