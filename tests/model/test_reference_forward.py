"""ReferenceCNN against an independent numpy forward pass of the paper's network.

The numpy pass below is written from the architecture facts of
../shared/data/reference/README.md only: it reads the Keras 2 HDF5 weights with h5py itself
and shares no code with glacierfacies.model.reference / reference_h5 (those are used only as
the thing under test). It runs in float64, channels last, as Keras does:

  3 x [Conv2D 64, 3 x 3, "same" zero padding, bias -> BatchNorm (eps 1e-3, moving stats) ->
  ELU] -> centre cell (H // 2, W // 2) -> MaxPool 3 x 3 / stride 3 "valid" (33 -> 11) ->
  3 x the same blocks -> centre cell and global max -> concat [centre 1, centre 2, gmax] ->
  2 x [Dense 32, ELU] -> Dense 8 (softmax). Dropout is the identity at inference.

Compared: the softmax probabilities (absolute, 1e-5) and the logits (absolute, 1e-4; the
logits of random [0, 1] patches are of order 1-10) of float32 torch against float64 numpy,
and the logits of the same torch model in float64 (1e-9). Also checked here:
`dense_logits` on a small raster equals `forward` on the patches cut from it (with and
without `where`), and the per-patch "same padding" semantics: a pixel's output does not
change when the raster outside its patch changes, whereas a full-raster ("valid-convolution")
pass, in which patch-edge cells see the neighbouring pixels, gives other values.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "reference"
WEIGHTS = REFERENCE / "weights"
CHANNELS = {1: 6, 2: 8, 3: 10, 4: 11}  # README: input channels of each feature set
PATCH = 33
PROB_TOL = 1e-5
LOGIT_TOL = 1e-4

pytestmark = pytest.mark.skipif(
    not WEIGHTS.is_dir(),
    reason=f"the paper's reference weights ({WEIGHTS}) are absent: the tests need "
           "../shared/data/reference next to the repository")

def _h5(feature_set: int, fold: int) -> Path:
    path = WEIGHTS / str(feature_set) / f"{fold}_cnn_afterconfidentlearning_weights.h5"
    if not path.is_file():
        pytest.skip(f"reference weights file {path} is absent")
    return path


# -- the independent numpy network ----------------------------------------------------------


def _read_h5(path: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """{'conv2d': [...], 'batch_normalization': [...], 'dense': [...]}: each layer's weights
    as float64 arrays, the layers of a kind ordered by their name counter (no counter = 0)."""
    import h5py

    layers: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {
        "conv2d": [], "batch_normalization": [], "dense": []}
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        for name in names:
            m = re.fullmatch(r"([a-z0-9_]+?)(?:_(\d+))?", name)
            kind, counter = m.group(1), int(m.group(2) or 0)
            if kind not in layers:
                continue
            group = f[name][name]
            layers[kind].append((counter, {k.split(":")[0]: np.asarray(v, dtype=np.float64)
                                           for k, v in group.items()}))
    # the file's own (topological) layer order must agree with the counter order
    for kind, entries in layers.items():
        counters = [c for c, _ in entries]
        assert counters == sorted(counters), (kind, counters)
    return {kind: [w for _, w in sorted(entries, key=lambda t: t[0])]
            for kind, entries in layers.items()}


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def _conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (B, H, W, C), kernel (3, 3, C, O) Keras layout: 'same' zero padding, cross-correlation,
    as a sum over the 9 taps."""
    _, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[3],))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("bhwc,co->bhwo", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx],
                             optimize=True)
    return out + bias


def _block(x: np.ndarray, conv: dict, bn: dict) -> np.ndarray:
    y = _conv_same(x, conv["kernel"], conv["bias"])
    y = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"]
    return _elu(y)


def _centre(x: np.ndarray) -> np.ndarray:
    return x[:, x.shape[1] // 2, x.shape[2] // 2, :]


def _maxpool3(x: np.ndarray) -> np.ndarray:
    b, h, w, c = x.shape
    h3, w3 = h // 3, w // 3  # 'valid': trailing rows / columns dropped
    return x[:, :h3 * 3, :w3 * 3].reshape(b, h3, 3, w3, 3, c).max(axis=(2, 4))


def _scale1(layers: dict, x: np.ndarray) -> np.ndarray:
    for conv, bn in zip(layers["conv2d"][:3], layers["batch_normalization"][:3], strict=True):
        x = _block(x, conv, bn)
    return x


def _rest(layers: dict, h1: np.ndarray) -> np.ndarray:
    """Logits from the scale-1 maps (B, 33, 33, 64)."""
    h2 = _maxpool3(h1)
    for conv, bn in zip(layers["conv2d"][3:], layers["batch_normalization"][3:], strict=True):
        h2 = _block(h2, conv, bn)
    z = np.concatenate([_centre(h1), _centre(h2), h2.max(axis=(1, 2))], axis=1)
    d1, d2, d3 = layers["dense"]
    z = _elu(z @ d1["kernel"] + d1["bias"])
    z = _elu(z @ d2["kernel"] + d2["bias"])
    return z @ d3["kernel"] + d3["bias"]


def numpy_logits(layers: dict, patches_nhwc: np.ndarray) -> np.ndarray:
    """Logits (B, 8) of (B, 33, 33, F) channels-last patches."""
    return _rest(layers, _scale1(layers, patches_nhwc.astype(np.float64)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- the module under test ------------------------------------------------------------------


def _torch_model(path: Path):
    from glacierfacies.model.reference_h5 import reference_from_h5

    return reference_from_h5(path)


def _torch_logits(model, patches_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(patches_nchw.astype(np.float32))).double().numpy()


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fold", [0, 1])
@pytest.mark.parametrize("feature_set", [1, 2, 3, 4])
def test_forward_matches_numpy(feature_set: int, fold: int):
    path = _h5(feature_set, fold)
    n_features = CHANNELS[feature_set]
    layers = _read_h5(path)
    assert [len(layers[k]) for k in ("conv2d", "batch_normalization", "dense")] == [6, 6, 3]
    assert layers["conv2d"][0]["kernel"].shape == (3, 3, n_features, 64)
    assert layers["dense"][0]["kernel"].shape == (192, 32)
    assert layers["dense"][2]["kernel"].shape == (32, 8)

    rng = np.random.default_rng(1000 * feature_set + fold)
    x = rng.random((8, PATCH, PATCH, n_features))  # channels last, values in [0, 1)
    x[0] = 0.0  # an all-zero patch: only biases and BN shifts speak
    x[1] = x[1, :1, :1]  # a uniform patch (the README's "point as a uniform patch" check)
    x = x.astype(np.float32).astype(np.float64)  # the same inputs reach both sides

    ref = numpy_logits(layers, x)
    model = _torch_model(path)
    assert model.n_features == n_features
    got = _torch_logits(model, x.transpose(0, 3, 1, 2))

    assert got.shape == ref.shape == (8, 8)
    # the comparison is of live outputs: the patches give different, unsaturated answers
    assert np.ptp(ref, axis=0).max() > 0.1 and _softmax(ref).max() < 1 - 1e-6
    dprob = np.abs(_softmax(got) - _softmax(ref)).max()
    dlogit = np.abs(got - ref).max()
    # the same model in float64: agreement to rounding, which no near-miss (a BatchNorm eps,
    # a flipped kernel, an off-by-one centre) would survive
    with torch.no_grad():
        got64 = model.double()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    dlogit64 = np.abs(got64 - ref).max()
    print(f"set {feature_set} fold {fold}: max |dprob| {dprob:.2e}, max |dlogit| {dlogit:.2e} "
          f"(logits up to {np.abs(ref).max():.1f}); float64 torch max |dlogit| {dlogit64:.2e}")
    assert dprob < PROB_TOL, f"softmax probabilities differ by {dprob:.3g}"
    assert dlogit < LOGIT_TOL, f"logits differ by {dlogit:.3g}"
    assert dlogit64 < 1e-9, f"float64 logits differ by {dlogit64:.3g}"


def _cut(raster: np.ndarray, i: int, j: int) -> np.ndarray:
    """The (F, 33, 33) patch with top-left (i, j) of a (F, H, W) raster."""
    return raster[:, i:i + PATCH, j:j + PATCH]


def _raster(n_features: int, seed: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n_features, h, w)).astype(np.float32)


@pytest.mark.parametrize("feature_set", [1, 4])
def test_dense_logits_equals_forward_on_cut_patches(feature_set: int):
    model = _torch_model(_h5(feature_set, 0))
    # 9 x 6 outputs: every phase of the 3 x 3 pool grid in both directions, and edge patches
    raster = _raster(CHANNELS[feature_set], seed=feature_set, h=41, w=38)
    oh, ow = raster.shape[1] - PATCH + 1, raster.shape[2] - PATCH + 1
    ii, jj = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    patches = np.stack([_cut(raster, i, j) for i, j in zip(ii, jj, strict=True)])
    per_patch = _torch_logits(model, patches).reshape(oh, ow, -1).transpose(2, 0, 1)

    x = torch.from_numpy(raster)[None]
    with torch.no_grad():
        dense = model.dense_logits(x)[0].double().numpy()
        mask = torch.from_numpy(np.random.default_rng(7).random((1, oh, ow)) < 0.3)
        mask[0, 0, 0] = mask[0, -1, -1] = True  # corners of the output (patches at the edge)
        mask[0, 5, 4] = False
        masked = model.dense_logits(x, where=mask)[0].double().numpy()
        # blocks of 4 x 4 outputs, each cropped to the box of its wanted pixels
        blocked = model.dense_logits(x, where=mask, strip_rows=4)[0].double().numpy()
        pi, pj = np.array([0, 8, 3, 0]), np.array([0, 5, 2, 5])
        via_patch_logits = model.patch_logits(x, torch.from_numpy(pi), torch.from_numpy(pj))

    assert dense.shape == (8, oh, ow)
    d = np.abs(dense - per_patch).max()
    print(f"set {feature_set}: dense_logits vs forward max |dlogit| {d:.2e}")
    assert d < LOGIT_TOL
    assert np.abs(_softmax(dense.reshape(8, -1).T) - _softmax(per_patch.reshape(8, -1).T)
                  ).max() < PROB_TOL
    m = mask[0].numpy()
    assert np.abs(masked[:, m] - per_patch[:, m]).max() < LOGIT_TOL
    assert np.abs(blocked[:, m] - per_patch[:, m]).max() < LOGIT_TOL
    assert not blocked[:, ~m].any()  # pixels not asked for are not computed
    assert np.all(masked[:, ~m] == 0.0)
    assert np.abs(via_patch_logits.double().numpy() - per_patch[:, pi, pj].T).max() < 1e-6


def _full_raster_logits(layers: dict, raster: np.ndarray, cells: list[tuple[int, int]]
                        ) -> np.ndarray:
    """The 'valid-convolution' reading: the scale-1 convs run once over the whole raster
    (zero padding only at the raster edge), then each pixel's 33 x 33 window of those maps
    goes through pooling, scale 2 and the head. Not the reference's semantics."""
    h1 = _scale1(layers, raster.transpose(1, 2, 0)[None].astype(np.float64))[0]
    windows = np.stack([h1[i:i + PATCH, j:j + PATCH] for i, j in cells])
    return _rest(layers, windows)


@pytest.mark.parametrize("feature_set", [1, 4])
def test_same_padding_semantics(feature_set: int):
    """A pixel's output is that of its patch alone: changing the raster outside the patch
    leaves it unchanged, while a full-raster pass (patch-edge cells seeing their neighbours
    outside the patch) gives other values for the same pixel."""
    path = _h5(feature_set, 0)
    layers = _read_h5(path)
    model = _torch_model(path)
    n_features = CHANNELS[feature_set]
    raster = _raster(n_features, seed=10 + feature_set, h=39, w=37)  # 7 x 5 outputs
    cells = [(0, 0), (3, 2), (6, 4), (0, 4)]  # output corners and the middle

    other = _raster(n_features, seed=99, h=39, w=37)
    with torch.no_grad():
        dense = model.dense_logits(torch.from_numpy(raster)[None])[0].double().numpy()
        for i, j in cells[:2]:
            changed = other.copy()
            changed[:, i:i + PATCH, j:j + PATCH] = _cut(raster, i, j)  # same patch, new context
            dense_changed = model.dense_logits(torch.from_numpy(changed)[None])[0].double()
            assert np.abs(dense_changed[:, i, j].numpy() - dense[:, i, j]).max() < 1e-5
            assert np.abs(dense_changed.numpy() - dense).max() > 1e-2  # other pixels do change

    per_patch = numpy_logits(layers, np.stack([_cut(raster, i, j) for i, j in cells]
                                              ).transpose(0, 2, 3, 1))
    full = _full_raster_logits(layers, raster, cells)
    got = np.stack([dense[:, i, j] for i, j in cells])
    assert np.abs(got - per_patch).max() < LOGIT_TOL
    # the padding matters: every one of these pixels has a patch edge with raster beyond it
    gap = np.abs(full - per_patch).max(axis=1)
    print(f"set {feature_set}: per-patch vs full-raster max |dlogit| per pixel {gap}")
    assert np.all(gap > 1e-3), gap  # 10 x LOGIT_TOL, ~100 x the agreements measured
    # ... and the two readings agree where there is nothing beyond the patch: a raster that
    # is exactly one patch has the same zero padding in both
    one = _cut(raster, 0, 0)
    assert np.abs(_full_raster_logits(layers, one, [(0, 0)])
                  - numpy_logits(layers, one.transpose(1, 2, 0)[None])).max() < 1e-9
