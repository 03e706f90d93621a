"""ReferenceCNN against Keras 3 itself, running the paper's Keras 2.11 HDF5 weight files.

The reference network is rebuilt with the Keras functional API from the facts of
../shared/data/reference/README.md (one shared ELU layer, as the files' layer_names list
has), the legacy weights file is read by Keras's own `Model.load_weights` (its legacy-HDF5,
order-based path: the files end in `_weights.h5`, not `.weights.h5`), and Keras's softmax
output is compared with `reference_from_h5(path)`'s (absolute, 1e-5). Keras runs on its torch
backend (no TensorFlow); the module skips where keras is not installed (it is in the `dev`
extra).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; there is no TensorFlow
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # keras already imported elsewhere with another backend
    pytest.skip(f"keras runs on the {keras.backend.backend()} backend here, not torch",
                allow_module_level=True)
from keras import layers  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "reference"
WEIGHTS = REFERENCE / "weights"
CHANNELS = {1: 6, 2: 8, 3: 10, 4: 11}
PATCH = 33
PROB_TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not WEIGHTS.is_dir(),
    reason=f"the paper's reference weights ({WEIGHTS}) are absent: the tests need "
           "../shared/data/reference next to the repository")

def _h5(feature_set: int, fold: int) -> Path:
    path = WEIGHTS / str(feature_set) / f"{fold}_cnn_afterconfidentlearning_weights.h5"
    if not path.is_file():
        pytest.skip(f"reference weights file {path} is absent")
    return path


def _centre(t):
    return t[:, t.shape[1] // 2, t.shape[2] // 2, :]


def keras_reference(n_features: int) -> keras.Model:
    """The paper's network in Keras (inference: dropout inactive, BatchNorm moving stats)."""
    elu = layers.ELU(name="elu")  # one ELU layer, shared by every block and dense layer
    inp = keras.Input((PATCH, PATCH, n_features))

    def blocks(h):
        for _ in range(3):
            h = elu(layers.BatchNormalization()(layers.Conv2D(64, 3, padding="same")(h)))
        return h

    h1 = blocks(inp)
    centre1 = layers.Lambda(_centre, output_shape=(64,))(h1)
    h2 = blocks(layers.MaxPooling2D(3)(h1))
    centre2 = layers.Lambda(_centre, output_shape=(64,))(h2)
    gmax = layers.GlobalMaxPooling2D()(h2)
    z = layers.Dropout(0.5)(layers.Concatenate()([centre1, centre2, gmax]))
    z = layers.Dropout(0.5)(elu(layers.Dense(32)(z)))
    z = layers.Dropout(0.5)(elu(layers.Dense(32)(z)))
    return keras.Model(inp, layers.Dense(8, activation="softmax")(z))


def _kind(name: str) -> str:
    name = re.sub(r"_\d+$", "", name)
    return "input" if name == "input_layer" else name


def _file_layer_kinds(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        return [_kind(n.decode() if isinstance(n, bytes) else str(n))
                for n in f.attrs["layer_names"]]


@pytest.mark.parametrize("fold", [0, 1])
@pytest.mark.parametrize("feature_set", [1, 2, 3, 4])
def test_keras_reads_the_weights_and_agrees(feature_set: int, fold: int):
    from glacierfacies.model.reference_h5 import reference_from_h5

    path = _h5(feature_set, fold)
    n_features = CHANNELS[feature_set]
    model = keras_reference(n_features)
    # the rebuilt network is the file's: same layers, in the same (topological) order
    assert [_kind(layer.name) for layer in model.layers] == _file_layer_kinds(path)
    model.load_weights(path)  # Keras's legacy HDF5 reader, layer by layer in file order

    rng = np.random.default_rng(2000 * feature_set + fold)
    x = rng.random((8, PATCH, PATCH, n_features)).astype(np.float32)
    x[0] = 0.0
    x[1] = x[1, :1, :1]  # a uniform patch
    with torch.no_grad():  # the torch backend: a torch tensor in, a torch tensor out
        expected = model(torch.from_numpy(x), training=False).double().cpu().numpy()

    ours = reference_from_h5(path)
    with torch.no_grad():
        got = ours(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).softmax(1).double().numpy()

    assert expected.shape == got.shape == (8, 8)
    assert np.ptp(expected, axis=0).max() > 0.01  # live outputs, not one constant answer
    d = np.abs(got - expected).max()
    print(f"set {feature_set} fold {fold}: Keras vs ReferenceCNN max |dprob| {d:.2e}")
    assert d < PROB_TOL, f"softmax probabilities differ from Keras's by {d:.3g}"
