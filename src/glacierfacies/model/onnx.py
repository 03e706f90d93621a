"""ONNX export of a fold model with its normalisation and calibration baked in."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from glacierfacies._io import atomic_output, check_output
from glacierfacies.errors import InputError
from glacierfacies.model.card import ModelCard, load_model
from glacierfacies.model.network import TwoScaleCNN


class DenseProbabilities(torch.nn.Module):
    """Raw features (B, F, H, W) -> calibrated probabilities (B, C, H-S+1, W-S+1)."""

    def __init__(self, model: TwoScaleCNN, card: ModelCard):
        super().__init__()
        self.model = model
        norm = card.normalisation
        lo = torch.tensor(norm["min"], dtype=torch.float64)
        span = torch.tensor(norm["max"], dtype=torch.float64) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        self.register_buffer("lo", lo.float().view(1, -1, 1, 1))
        self.register_buffer("inv", (1.0 / span).float().view(1, -1, 1, 1))
        self.temperature = float(card.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model.dense_logits((x - self.lo) * self.inv)
        return torch.softmax(logits / self.temperature, dim=1)


def export_onnx(model_path: str | os.PathLike, out: str | os.PathLike, size: int = 128,
                opset: int = 17, *, overwrite: bool = False) -> Path:
    """Export a fold model's dense, normalised, calibrated forward to ONNX (dynamic H, W).

    An existing OUT is an InputError unless `overwrite`.
    """
    import importlib.util

    out = check_output(out, overwrite=overwrite)
    model, card = load_model(model_path)
    if importlib.util.find_spec("onnx") is None:
        raise InputError(out, "ONNX export needs the optional package onnx "
                              "(pip install 'glacierfacies[onnx]')")
    wrapper = DenseProbabilities(model, card).eval()
    s = max(size, card.patch_size)
    example = torch.zeros(1, len(card.features), s, s)
    with atomic_output(out, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # the legacy (TorchScript) exporter needs no onnxscript; its tracer warns about the
        # shape checks, which are constant for valid inputs
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), str(tmp), input_names=["features"],
            output_names=["probabilities"], opset_version=opset, dynamo=False,
            dynamic_axes={"features": {0: "batch", 2: "height", 3: "width"},
                          "probabilities": {0: "batch", 2: "out_height", 3: "out_width"}},
        )
    return out

