"""Recovered normalisation of the paper's models (model/reference_norm.py, issue 19 4c)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glacierfacies.model.reference import ReferenceCNN
from glacierfacies.model.reference_norm import (
    HILLSHADE_FLAT,
    OPTICAL_K,
    OPTICAL_REFERENCE_MEAN,
    input_covariance_from_bn,
    input_means_from_bn,
    recovered_minmax,
    uniform_patch_logits,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
WEIGHTS = SHARED / "reference" / "weights"
ABERLE = SHARED / "aberle"
needs_weights = pytest.mark.skipif(not WEIGHTS.is_dir(),
                                   reason=f"reference weights absent ({WEIGHTS})")
needs_points = pytest.mark.skipif(not (ABERLE / "Sentinel-2_SR_training_data.csv").is_file(),
                                  reason=f"Aberle training points absent ({ABERLE})")


def _fold(feature_set: int, fold: int) -> ReferenceCNN:
    from glacierfacies.model.reference_h5 import reference_from_h5

    return reference_from_h5(WEIGHTS / str(feature_set)
                             / f"{fold}_cnn_afterconfidentlearning_weights.h5")


def test_uniform_patch_logits_equal_the_full_forward():
    torch.manual_seed(0)
    m = ReferenceCNN(11).eval()
    with torch.no_grad():
        for blk in [*m.fine, *m.coarse]:  # non-trivial BatchNorm statistics
            blk.bn.running_mean.uniform_(-0.5, 0.5)
            blk.bn.running_var.uniform_(0.5, 2.0)
        v = torch.rand(16, 11) * 2 - 0.5
        full = m(v[:, :, None, None].expand(-1, -1, 33, 33).contiguous())
        fast = uniform_patch_logits(m, v)
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)


def test_recovered_minmax_rejects_wrong_models():
    with pytest.raises(ValueError, match="feature set 4 needs models of 11 inputs"):
        recovered_minmax([ReferenceCNN(6)], 4)
    with pytest.raises(ValueError, match="feature_set must be one of"):
        recovered_minmax([ReferenceCNN(6)], 5)


@needs_weights
def test_bn_means_reproduce_the_measured_values():
    mu1 = input_means_from_bn(_fold(1, 0))
    np.testing.assert_allclose(mu1, [0.205, 0.193, 0.176, 0.144, 0.062, 0.073], atol=1e-3)
    mu4 = input_means_from_bn(_fold(4, 0))
    np.testing.assert_allclose(mu4[6:], [0.515, 0.099, 0.915, 0.936, 0.264], atol=1e-3)


@needs_weights
def test_bn_covariance_of_set_1_is_physical():
    s = input_covariance_from_bn(_fold(1, 0))
    sd = np.sqrt(np.diag(s))
    np.testing.assert_allclose(sd, [0.110, 0.108, 0.101, 0.082, 0.059, 0.074], atol=2e-3)
    corr = s / np.outer(sd, sd)
    assert corr[0, 1] > 0.95 and corr[2, 3] > 0.95 and corr[4, 5] > 0.9  # VIS-NIR, SWIR
    assert abs(corr[0, 4]) < 0.3  # visible against SWIR: nearly independent


@needs_weights
def test_recovered_minmax_values():
    models = [_fold(1, f) for f in range(6)]
    norm = recovered_minmax(models, 1)
    assert norm["method"] == "recovered"
    assert norm["min"] == [0.0] * 6
    mu = np.mean([input_means_from_bn(m) for m in models], axis=0)
    np.testing.assert_allclose(norm["max"], OPTICAL_K * np.asarray(OPTICAL_REFERENCE_MEAN) / mu)
    np.testing.assert_allclose(norm["max"], [1.998, 2.288, 2.569, 2.791, 1.201, 0.887],
                               atol=2e-3)
    norm4 = recovered_minmax([_fold(4, f) for f in range(6)], 4)
    lo, hi = np.asarray(norm4["min"]), np.asarray(norm4["max"])
    assert np.all(hi[:6] > lo[:6]) and np.all(lo[:6] == 0)
    assert (lo[6], hi[6]) == (0.0, 1.0) and (lo[10], hi[10]) == (0.0, 1.0)  # pre-scaled
    assert (lo[7], hi[7]) == (0.0, 90.0)
    assert (lo[8], hi[8]) == (1.0, 0.0)  # inverted: the reference's mask is 1 = lit
    assert hi[9] - lo[9] == pytest.approx(255.0)
    mu_h = norm4["details"]["bn_input_means"][9]
    assert (HILLSHADE_FLAT - lo[9]) / 255.0 == pytest.approx(mu_h, abs=1e-4)


@needs_weights
@needs_points
def test_set1_ensemble_snow_f1_on_sentinel2_training_points():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import reference_points as rp
    finally:
        sys.path.remove(str(REPO / "bench"))
    x, c, _ = rp.load_points(ABERLE, "Sentinel-2")
    i = np.random.default_rng(1).choice(len(x), 400, replace=False)
    models = [_fold(1, f).eval() for f in range(6)]
    probs = rp.ensemble_probs(models, rp.normalise(x[i], recovered_minmax(models, 1)))
    s = rp.scores(probs, c[i])
    assert s["snow_f1"] > 0.93  # measured 0.943 (all 11,048 points: 0.952)
    assert s["macro_f1"] > 0.75  # measured 0.803
