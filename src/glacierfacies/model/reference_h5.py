"""Read the paper's Keras 2 `save_weights` HDF5 files into a `ReferenceCNN` (h5py, no Keras).

A file holds one group per layer (`<layer>/<layer>/kernel:0`, ...); layer names carry a
counter that differs between files, so the layers of a kind are ordered by that counter.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from glacierfacies.errors import InputError
from glacierfacies.model.reference import DEPTH, REFERENCE_FEATURE_SETS, ReferenceCNN

__all__ = ["feature_set_of", "file_sha256", "read_keras_layers", "reference_from_h5"]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _counter(name: str) -> int:
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def read_keras_layers(path: str | os.PathLike) -> dict[str, list[dict[str, np.ndarray]]]:
    """{'conv2d': [...], 'batch_normalization': [...], 'dense': [...]} in layer order, each
    layer a {weight name: array} dict; InputError naming the file when it is not Keras HDF5."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a Keras HDF5 weights file ({str(exc).splitlines()[0]})"
                         ) from None
    kinds: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {
        "conv2d": [], "batch_normalization": [], "dense": []}
    with f:
        names = f.attrs.get("layer_names")
        if names is None:
            raise InputError(path, "not a Keras save_weights file (no layer_names attribute)")
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            kind = re.sub(r"_\d+$", "", name)
            if kind not in kinds:
                continue
            group = f[name]
            weights = {}
            for wraw in group.attrs.get("weight_names", []):
                wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
                weights[wname.split("/")[-1].split(":")[0]] = np.asarray(group[wname])
            kinds[kind].append((_counter(name), weights))
    return {k: [w for _, w in sorted(v, key=lambda t: t[0])] for k, v in kinds.items()}


def feature_set_of(n_features: int) -> int | None:
    """The published feature set with that many input channels (None if none)."""
    for s, names in REFERENCE_FEATURE_SETS.items():
        if len(names) == n_features:
            return s
    return None


def reference_from_h5(path: str | os.PathLike) -> ReferenceCNN:
    """A `ReferenceCNN` (eval mode) with the weights of one fold file."""
    layers = read_keras_layers(path)
    convs, bns, denses = layers["conv2d"], layers["batch_normalization"], layers["dense"]
    if len(convs) != 2 * DEPTH or len(bns) != 2 * DEPTH or len(denses) != 3:
        raise InputError(path, f"not the reference network: {len(convs)} conv, {len(bns)} "
                               f"batch-norm and {len(denses)} dense layers (expected 6, 6, 3)")
    try:
        k0 = convs[0]["kernel"]
        n_features, width = int(k0.shape[2]), int(k0.shape[3])
        model = ReferenceCNN(n_features, n_classes=int(denses[-1]["kernel"].shape[1]),
                             width=width, dense_width=int(denses[0]["kernel"].shape[1]))
        blocks = [*model.fine, *model.coarse]
        with torch.no_grad():
            for block, conv, bn in zip(blocks, convs, bns, strict=True):
                block.conv.weight.copy_(torch.from_numpy(conv["kernel"]).permute(3, 2, 0, 1))
                block.conv.bias.copy_(torch.from_numpy(conv["bias"]))
                block.bn.weight.copy_(torch.from_numpy(bn["gamma"]))
                block.bn.bias.copy_(torch.from_numpy(bn["beta"]))
                block.bn.running_mean.copy_(torch.from_numpy(bn["moving_mean"]))
                block.bn.running_var.copy_(torch.from_numpy(bn["moving_variance"]))
            for lin, dense in zip((model.dense1, model.dense2, model.out), denses, strict=True):
                lin.weight.copy_(torch.from_numpy(dense["kernel"]).T)
                lin.bias.copy_(torch.from_numpy(dense["bias"]))
    except (KeyError, RuntimeError, IndexError) as exc:
        raise InputError(path, f"weights do not fit the reference network: "
                               f"{str(exc).splitlines()[0]}") from None
    if feature_set_of(n_features) is None:
        raise InputError(path, f"first layer takes {n_features} channels, which is none of the "
                               f"published feature sets (6, 8, 10, 11)")
    return model.eval()
