"""Models applied to points: patches or per-point values -> ensemble probabilities (pure).

The point-table twin of `inference.dense_predict`: the same members, the same input recipe
(`inference._prepare_input`: feature selection, min-max normalisation) and the same
ensemble rule, p = mean_k softmax(logits_k / T_k), so a point gets the probabilities the map
gives its pixel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from glacierfacies.errors import ModelMismatchError
from glacierfacies.features import FEATURE_NAMES
from glacierfacies.mapping.inference import _prepare_input
from glacierfacies.model.member import Member

__all__ = ["member_features", "missing_features", "predict_patches"]


def member_features(member: Member) -> list[str]:
    """The feature names a member reads, in its order."""
    idx = member.feature_index if member.feature_index is not None else range(len(FEATURE_NAMES))
    return [FEATURE_NAMES[i] for i in idx]


def missing_features(members: Sequence[Member], available: Sequence[str]) -> list[str]:
    """Features some member needs that `available` lacks (first-seen order)."""
    out: list[str] = []
    for m in members:
        out += [f for f in member_features(m) if f not in available and f not in out]
    return out


@torch.no_grad()
def predict_patches(members: Sequence[Member], patches: np.ndarray, feature_names: Sequence[str],
                    batch_size: int = 8192, source: object = None) -> np.ndarray:
    """Ensemble probabilities (N, C) float64 of patches (N, F, S, S) whose features are
    `feature_names`; rows with a non-finite input the models read are NaN.

    Patches larger than a member's patch size are cropped to their centre (a patch is
    centred on its point). Single values (N, F, 1, 1) given to a per-patch model (the paper's,
    33 x 33) become uniform patches: each point's values repeated over the whole patch, the
    only patch a point table can give (docs/models.md). A member needing an absent feature
    or a larger patch is a ModelMismatchError naming `source`.
    """
    names = list(feature_names)
    missing = missing_features(members, names)
    if missing:
        raise ModelMismatchError(source, f"the models need feature(s) {', '.join(missing)} "
                                         f"that the data lacks (has {', '.join(names)})")
    n, size = patches.shape[0], patches.shape[-1]
    local = []
    for m in members:  # feature indices into this data's own feature order
        s = m.patch_size
        if s > size and not (size == 1 and getattr(m.model, "per_patch", False)):
            raise ModelMismatchError(source, f"model patch size {s} > the data's {size}")
        idx = [names.index(f) for f in member_features(m)]
        local.append((dataclasses.replace(m, feature_index=idx), max(0, (size - s) // 2), s))
    n_classes = int(members[0].model.n_classes)
    out = np.zeros((n, n_classes), dtype=np.float64)
    bad = np.zeros(n, dtype=bool)
    for start in range(0, n, batch_size):
        block = torch.from_numpy(np.ascontiguousarray(patches[start:start + batch_size],
                                                      dtype=np.float32))
        for member, lo, s in local:
            x = block[:, list(member.feature_index), lo:lo + s, lo:lo + s]
            bad[start:start + len(block)] |= ~torch.isfinite(x).flatten(1).all(1).numpy()
            x = _prepare_input(dataclasses.replace(member, feature_index=None), x)
            net = member.model.eval()
            if x.shape[-1] < s:  # a point's values as a uniform patch
                x = x.expand(-1, -1, s, s)
            if getattr(net, "per_patch", False):  # 33 x 33 convs: NHWC is ~4x faster on CPU
                net = net.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
                logits = torch.cat([net(x[i:i + 512]) for i in range(0, len(x), 512)]).double()
            else:
                logits = net(x).double()
            out[start:start + len(block)] += torch.softmax(
                logits / float(member.temperature), dim=1).numpy()
    out /= len(members)
    out[bad] = np.nan
    return out
