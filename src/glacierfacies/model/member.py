"""One member of a model ensemble: network, calibration and input recipe (pure torch).

The model side owns what a model needs to be applied (after torchgeo's weights, which carry
their bands): `model.card.load_members` builds members from model files, and
`mapping.inference` only consumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["Member"]


@dataclass
class Member:
    """One model of an ensemble: the network, its calibration and its input recipe.

    `feature_index` picks (and orders) the rows of the scene features the model was trained
    on; `minimum`/`maximum` are its global min-max normalisation (None: inputs used as is).
    """

    model: torch.nn.Module
    temperature: float = 1.0
    feature_index: Sequence[int] | None = None
    minimum: Sequence[float] | None = None
    maximum: Sequence[float] | None = None
    clip: bool = False
    #: scene-wise pre-scaling of named features before min-max (ModelCard.prescale)
    prescale: dict[str, str] | None = None
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_size)
