"""Recover the paper's input normalisation from its weights (issue 19, 4c).

The reference network was trained on inputs normalised as (x - min) / (max - min), one global
min and max per feature (`globalminmax.pickle`, never published). What the weights still tell:

- **Means.** The first BatchNormalization layer's moving mean of channel c is the mean of the
  first conv's output over the training patches: E[y_c] = b_c + sum_{f, tap} W[c, f, tap]
  * frac(tap) * mu_f, where mu_f is the mean of normalised input f and frac(tap) the share
  of the 33 x 33 output cells whose tap falls inside the patch (32/33 per off-centre axis:
  "same" zero padding). 64 equations, F unknowns: least squares (`input_means_from_bn`;
  fit r > 0.999 on every fold of every set).
- **Covariances.** The moving variances give the covariance of the normalised inputs in the
  same way, modelling each training patch as uniform (`input_covariance_from_bn`; 21
  unknowns for set 1, well determined, fit r = 1.000; 66 unknowns for set 4 with 64
  equations, so only its diagonal is usable and only roughly). They fix each feature's span
  when its distribution is known (a 0/1 mask: std = sqrt(p (1 - p)) iff the span is 1), and
  check the optical fit (below).

What the weights cannot tell is the optical units: with min = 0, mu_c = E_paper[x_c] / max_c,
so max_c needs the paper's mean reflectance. `recovered_minmax` takes it as k * m_c: m_c the
mean of Aberle et al.'s real training points (both sensors, `OPTICAL_REFERENCE_MEAN`) and one
global factor k (`OPTICAL_K`) fitted on those points' grouped log-likelihood; the band-to-band
shape of max_c comes from the weights alone. How the constants were obtained, and the scores,
are in docs/models.md ("The paper's models: recovered normalisation"); `bench/reference_points.py
--fit` reproduces the fit.

Pure numpy / torch, no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from glacierfacies.model.reference import PATCH, REFERENCE_FEATURE_SETS, ReferenceCNN

__all__ = ["HILLSHADE_FLAT", "OPTICAL_K", "OPTICAL_REFERENCE_MEAN", "SLOPE_MAX_DEG",
           "input_covariance_from_bn", "input_means_from_bn", "recovered_minmax",
           "uniform_patch_logits"]

#: m_c: mean surface reflectance (blue, green, red, nir, swir1, swir2) of the training points
#: of ../shared/data/aberle, both files pooled (11,048 Sentinel-2 rows: B2, B3, B4, B8, B11,
#: B12 as given; 8,145 Landsat rows: SR_B2..SR_B7 minus 0.2; rows with a missing value or
#: repeating another class's six values dropped, as for the built-in models). Data, not fitted.
OPTICAL_REFERENCE_MEAN = (0.43375, 0.46180, 0.46682, 0.41279, 0.09557, 0.08615)
#: k: the one fitted optical constant, max_c = k * m_c / mu_c (min_c = 0). Fitted by
#: `bench/reference_points.py --fit`: set-1 ensemble (mu = mean over its 6 folds), grouped
#: log-likelihood of the 5 Aberle classes, mean of the two sensors, 1,500 seeded training
#: points per sensor, grid k = 0.80..1.10 step 0.05 and the vertex of a parabola through the
#: best three. Plausible range (docs/models.md): 0.8-1.1.
OPTICAL_K = 0.93
#: slope (degrees) spanning the normalised [0, 1]: BN gives a normalised mean 0.068-0.106 and
#: std 0.085-0.113, i.e. 6-10 deg +- 8-10 deg over the training patches with a span of 90 deg,
#: what glacier-surface slopes are; the global max of a slope over 137k patches reaches ~90.
SLOPE_MAX_DEG = 90.0
#: our hillshade (1 + 254 cos i) of flat terrain under a 50 deg sun, a typical elevation of the
#: paper's summer scenes (Alps / Scandinavia, 10-11 h). The reference's normalised hillshade
#: has mean 0.935-0.956 and std 0.07-0.12: a span of 255 matches the std (glacier-surface
#: slopes), and the mean says its flat terrain sits at ~0.94 of that span, so our flat value
#: is mapped there (min = HILLSHADE_FLAT - mu * 255). An assumption, see docs/models.md.
HILLSHADE_FLAT = 1.0 + 254.0 * math.sin(math.radians(50.0))

_OPTICAL = ("blue", "green", "red", "nir", "swir1", "swir2")


def _first_block(model: ReferenceCNN) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    blk = model.fine[0]
    w = blk.conv.weight.detach().double().cpu().numpy()  # (C, F, 3, 3)
    b = blk.conv.bias.detach().double().cpu().numpy()
    return (w, b, blk.bn.running_mean.detach().double().cpu().numpy(),
            blk.bn.running_var.detach().double().cpu().numpy())


def _tap_fraction() -> np.ndarray:
    """(3, 3): share of the 33 x 33 output cells whose tap lies inside the patch."""
    f = np.array([(PATCH - 1) / PATCH, 1.0, (PATCH - 1) / PATCH])
    return np.outer(f, f)


def input_means_from_bn(model: ReferenceCNN) -> np.ndarray:
    """(F,) mean of each normalised input over the model's training patches, from its first
    BatchNorm layer's moving means (least squares over the 64 channels)."""
    w, b, mean, _ = _first_block(model)
    a = (w * _tap_fraction()).sum(axis=(2, 3))  # (C, F)
    mu, *_ = np.linalg.lstsq(a, mean - b, rcond=None)
    return mu


def input_covariance_from_bn(model: ReferenceCNN, means: np.ndarray | None = None) -> np.ndarray:
    """(F, F) covariance of the normalised inputs from the first BatchNorm layer's moving
    variances, each training patch taken as uniform: y_c(p) = b_c + a_c(p) . v with a_c(p)
    the sum of the taps inside the patch at output cell p, so Var y_c = E_p[a_c(p)^T (S +
    mu mu^T) a_c(p)] - (E_p a_c(p) . mu)^2, linear in S (least squares over the channels).
    Well determined for 6 features (21 unknowns, 64 equations), not for 10-11."""
    w, _, _, var = _first_block(model)
    mu = input_means_from_bn(model) if means is None else np.asarray(means, np.float64)
    n_f = w.shape[1]
    cells = []  # (weight, valid-tap mask) of the 9 edge states of an output cell
    for r, wr in ((0, 1), (1, PATCH - 2), (2, 1)):
        for c, wc in ((0, 1), (1, PATCH - 2), (2, 1)):
            m = np.ones((3, 3))  # taps of a cell on the top/bottom row (left/right column)
            if r != 1:  # ... that fall on the zero padding
                m[r, :] = 0
            if c != 1:
                m[:, c] = 0
            cells.append((wr * wc / PATCH**2, m))
    iu = np.triu_indices(n_f)
    rows, const = [], []
    for c in range(w.shape[0]):
        q = np.zeros((n_f, n_f))
        abar = np.zeros(n_f)
        for wt, m in cells:
            a = (w[c] * m).sum(axis=(1, 2))
            q += wt * np.outer(a, a)
            abar += wt * a
        coef = 2 * q - np.diag(np.diag(q))  # S symmetric: off-diagonal entries count twice
        rows.append(coef[iu])
        const.append(mu @ q @ mu - (abar @ mu) ** 2)
    sol, *_ = np.linalg.lstsq(np.asarray(rows), var - np.asarray(const), rcond=None)
    s = np.zeros((n_f, n_f))
    s[iu] = sol
    return s + s.T - np.diag(np.diag(s))


def recovered_minmax(models: Sequence[ReferenceCNN] | ReferenceCNN, feature_set: int) -> dict:
    """{"min", "max", "method": "recovered", "details"} for the reference's features of
    `feature_set`, in their order and in OUR units: optical reflectance (0-1 floats);
    elevation and proximity as pre-scaled the reference's way (elevation by its min and max
    inside the outlines, proximity divided by its maximum: so min 0, max 1); slope degrees;
    shadow_mask ours (1 = in shadow), inverted (min 1, max 0) since the reference's is
    1 = lit; hillshade 0..255. mu = the mean over `models` (pass all folds of the set) of
    `input_means_from_bn`."""
    if feature_set not in REFERENCE_FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {sorted(REFERENCE_FEATURE_SETS)}")
    names = REFERENCE_FEATURE_SETS[feature_set]
    ms = [models] if isinstance(models, ReferenceCNN) else list(models)
    if not ms or any(m.n_features != len(names) for m in ms):
        raise ValueError(f"feature set {feature_set} needs models of {len(names)} inputs")
    mus = np.array([input_means_from_bn(m) for m in ms])
    mu = mus.mean(axis=0)
    lo: list[float] = []
    hi: list[float] = []
    how: dict[str, str] = {}
    for i, name in enumerate(names):
        if name in _OPTICAL:
            m_c = OPTICAL_REFERENCE_MEAN[_OPTICAL.index(name)]
            lo.append(0.0)
            hi.append(OPTICAL_K * m_c / float(mu[i]))
            how[name] = f"min 0, max = k * m / mu = {OPTICAL_K} * {m_c} / {mu[i]:.4f}"
        elif name in ("elevation", "proximity"):
            lo.append(0.0)
            hi.append(1.0)
            how[name] = "pre-scaled units (the reference's pre-scaling), min 0, max 1"
        elif name == "slope":
            lo.append(0.0)
            hi.append(SLOPE_MAX_DEG)
            how[name] = f"degrees, min 0, max {SLOPE_MAX_DEG:g}"
        elif name == "shadow_mask":
            lo.append(1.0)
            hi.append(0.0)
            how[name] = (f"inverted (reference 1 = lit: normalised mean {mu[i]:.3f}); "
                         "span 1 (BN std = sqrt(p (1 - p)))")
        elif name == "hillshade":
            h0 = HILLSHADE_FLAT - float(mu[i]) * 255.0
            lo.append(h0)
            hi.append(h0 + 255.0)
            how[name] = (f"span 255, our flat-terrain value {HILLSHADE_FLAT:.1f} (50 deg sun) "
                         f"mapped to the normalised mean {mu[i]:.3f}")
        else:  # pragma: no cover - REFERENCE_FEATURE_SETS holds only the names above
            raise ValueError(f"no recovered constant for feature {name!r}")
    details = {
        "features": list(names),
        "bn_input_means": [round(float(v), 5) for v in mu],
        "bn_input_means_per_model": [[round(float(v), 5) for v in row] for row in mus],
        "optical_k": OPTICAL_K,
        "optical_reference_mean": list(OPTICAL_REFERENCE_MEAN),
        "per_feature": how,
        "fit": ("optical: max_c = k m_c / mu_c, min_c = 0; one constant k fitted on the "
                "grouped log-likelihood of the Aberle training points (docs/models.md)"),
    }
    return {"min": lo, "max": hi, "method": "recovered", "details": details}


def uniform_patch_logits(model: ReferenceCNN, values: torch.Tensor) -> torch.Tensor:
    """Logits (N, classes) of `model` on uniform 33 x 33 patches of `values` (N, F), exactly
    `model(values[:, :, None, None].expand(-1, -1, 33, 33))` at ~1/10 of the work.

    A uniform patch's scale-1 maps depend on a cell only through its distance (0, 1, 2 or
    >= 3) to each patch edge, so a 7 x 7 uniform patch holds every state once (its centre is
    the interior); the 3 x 3 / stride 3 pool of the 33 x 33 map is then the top / interior /
    bottom (and left / interior / right) maxima, expanded to the 11 x 11 scale-2 grid."""
    v = values.to(next(model.parameters()).dtype)
    h = v[:, :, None, None].expand(-1, -1, 7, 7).contiguous(memory_format=torch.channels_last)
    for block in model.fine:
        h = block(h)
    centre1 = h[:, :, 3, 3]
    rows = torch.stack([h[:, :, 0:3].amax(2), h[:, :, 3], h[:, :, 4:7].amax(2)], 2)
    comp = torch.stack([rows[..., 0:3].amax(-1), rows[..., 3], rows[..., 4:7].amax(-1)], -1)
    idx = torch.tensor([0] + [1] * (PATCH // 3 - 2) + [2], device=v.device)
    grid = comp[:, :, idx][:, :, :, idx]
    s2 = model._scale2(grid, folded=True)
    return model.head(torch.cat([centre1, s2], dim=1))
