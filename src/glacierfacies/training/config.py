"""The training configuration: presets and every knob of the protocol."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from glacierfacies.classes import FACIES_NAMES
from glacierfacies.errors import InputError
from glacierfacies.tasks import fingerprint

__all__ = ["STAGES", "TrainConfig"]

STAGES = ("round1", "clean", "round2", "all")


PAPER_BATCH_SIZE = 256  # the default batch off CUDA (the paper does not give one)
CUDA_BATCH_SIZE = 1024  # the default batch on CUDA: batch 256 leaves the GPU launch-bound
BASE_LR = 1e-3  # the paper's Adam learning rate, taken to be for batch PAPER_BATCH_SIZE


def scaled_lr(batch_size: int) -> float:
    """The default learning rate of a batch: 1e-3, times sqrt(batch / 256) above 256.

    The square-root rule is the one for Adam (Hoffer et al. 2017; Malladi et al. 2022):
    the gradient noise falls as 1/sqrt(batch), so the step may grow as sqrt(batch).
    Batches up to 256 keep the paper's 1e-3.
    """
    return BASE_LR * max(1.0, batch_size / PAPER_BATCH_SIZE) ** 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved as RUN_DIR/config.json and in each card.

    The defaults are the paper's (`TrainConfig.paper()`); `TrainConfig.sample()` is the
    small configuration that runs the whole protocol on the built-in sample on 2 CPU cores
    in a few minutes.
    """

    epochs: int = 100
    batch_size: int | None = None  # None: 256, or 1024 when the device is CUDA
    width: int = 64
    fine_depth: int = 3
    coarse_depth: int = 3
    dense_width: int = 32
    dropout: float = 0.5
    lr: float | None = None  # None: scaled_lr(batch_size) (1e-3 up to batch 256)
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    augment: bool = True
    contrast: float = 0.05
    brightness: float = 0.01
    patience: int | None = None  # epochs without better validation mIoU before stopping
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when present, else cpu
    features: tuple[str, ...] | None = None  # None = all features of the dataset
    prune_classes: tuple[str, ...] = FACIES_NAMES
    checkpoint_every: int = 200  # batches between mid-epoch checkpoints (0 = epoch ends only)
    eval_batch_size: int = 1024
    threads: int = 2  # torch CPU threads
    compile: bool = False  # torch.compile the model (CUDA only)
    calibration: str = "temperature"  # or "isotonic" (fitted on the validation fold)
    class_weight_power: float = 1.0  # class weight = (inverse frequency) ** power (1: paper)

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's settings: width 64, 100 epochs, batch 256 and lr 1e-3 (the batch is not
        documented); on CUDA batch 1024 and lr 2e-3 (`CUDA_BATCH_SIZE`, `scaled_lr`)."""
        return cls(**overrides)

    @classmethod
    def sample(cls, **overrides: Any) -> TrainConfig:
        """Fast settings for the built-in sample on a CPU (width 16, 16 epochs, batch 64)."""
        base: dict[str, Any] = dict(epochs=16, batch_size=64, lr=BASE_LR, width=16,
                                    checkpoint_every=20)
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "prune_classes", tuple(self.prune_classes))
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.batch_size is None:  # resolved now, so config.json and cards hold the value
            cuda = self.device.startswith("cuda") or (
                self.device == "auto" and torch.cuda.is_available())
            object.__setattr__(self, "batch_size", CUDA_BATCH_SIZE if cuda else PAPER_BATCH_SIZE)
        if self.lr is None:
            object.__setattr__(self, "lr", scaled_lr(int(self.batch_size)))
        for name in ("epochs", "batch_size", "width", "dense_width", "eval_batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (batch normalisation)")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError("dropout and label_smoothing must be in [0, 1)")
        if self.lr <= 0 or self.focal_gamma < 0 or self.checkpoint_every < 0:
            raise ValueError("lr > 0, focal_gamma >= 0 and checkpoint_every >= 0 are required")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if not self.class_weight_power >= 0:
            raise ValueError(f"class_weight_power must be >= 0, got {self.class_weight_power}")
        if self.calibration not in ("temperature", "isotonic"):
            raise ValueError(f"calibration must be temperature or isotonic, got {self.calibration!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = None if self.features is None else list(self.features)
        d["prune_classes"] = list(self.prune_classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)

    def architecture(self, n_features: int, n_classes: int, patch_size: int) -> dict[str, Any]:
        return dict(
            n_features=n_features, n_classes=n_classes, width=self.width, patch_size=patch_size,
            fine_depth=self.fine_depth, coarse_depth=self.coarse_depth,
            dense_width=self.dense_width, dropout=self.dropout,
        )

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(None, f"device {self.device!r} requested but CUDA is not available")
        return dev

    def signature(self) -> str:
        """Hash of the fields that change the computation (not device/threads/checkpointing)."""
        d = self.to_dict()
        for k in ("device", "threads", "checkpoint_every", "eval_batch_size", "compile",
                  "calibration"):
            d.pop(k)
        if d["class_weight_power"] == 1.0:  # the default: signatures of earlier runs hold
            d.pop("class_weight_power")
        return fingerprint(d)

