"""Training of the two-scale CNN: loss, weights, augmentation, the k-fold protocol, model files.

The protocol follows Maslov et al. (2026): for each test fold t the validation fold is
t - 1 (mod k) and the other folds train; normalisation is fitted on the training folds
only. Round 1 gives out-of-fold test probabilities, confident learning (`cleaning`) flags
likely wrong facies labels from those alone, round 2 retrains on the cleaned set, then the
models are scored (`metrics`) on cleaned and unpruned test folds and their confidence is
calibrated by temperature scaling on the validation fold (`calibration`).

Reproducible and resumable: the data order of an epoch is a pure function of
(seed, round, fold, epoch) and every batch reseeds torch from (seed, round, fold, epoch,
batch), so a run killed mid-epoch and restarted from its last checkpoint (written every
epoch and every `checkpoint_every` batches) replays exactly the same computation.

Run folder layout::

    RUN_DIR/config.json                 the TrainConfig
    RUN_DIR/round1/models/foldK.pt|json first-round models (+ card)
    RUN_DIR/round1/predictions/foldK.npz test/validation logits of each fold model
    RUN_DIR/round1/oof_logits.npy       out-of-fold logits (N, C) -> confident learning
    RUN_DIR/cleaning/                   flagged.npy, label_review.csv/.gpkg
    RUN_DIR/round2/...                  as round1; its models are the final ones:
    RUN_DIR/models/foldK.pt|json        final (round-2) models with calibration + metrics
    RUN_DIR/metrics.json, confusion_*.png, reliability.png
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glacierfacies.classes import FACIES_NAMES
from glacierfacies.errors import InputError, atomic_output
from glacierfacies.model import TwoScaleCNN

__all__ = [
    "TrainConfig", "ModelCard", "focal_loss", "sample_weights", "augment_batch",
    "epoch_order", "fold_splits", "train_fold", "run_round", "run_cleaning",
    "run_evaluation", "run_protocol", "load_model", "predict_logits", "export_onnx",
]

STAGES = ("round1", "clean", "round2", "all")
_KILL_ENV = "GLACIERFACIES_TEST_KILL_AT"  # "round:fold:epoch:batch" -> SIGKILL (resume tests)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; saved as RUN_DIR/config.json and in each card.

    The defaults are the paper's (`TrainConfig.paper()`); `TrainConfig.sample()` is the
    small configuration that runs the whole protocol on the built-in sample on 2 CPU cores
    in a few minutes.
    """

    epochs: int = 100
    batch_size: int = 256
    width: int = 64
    fine_depth: int = 3
    coarse_depth: int = 3
    dense_width: int = 32
    dropout: float = 0.5
    lr: float = 1e-3
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

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's settings: width 64, 100 epochs (batch size is not documented: 256)."""
        return cls(**overrides)

    @classmethod
    def sample(cls, **overrides: Any) -> TrainConfig:
        """Fast settings for the built-in sample on a CPU (width 16, 16 epochs, batch 64)."""
        base: dict[str, Any] = dict(epochs=16, batch_size=64, width=16, checkpoint_every=20)
        base.update(overrides)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "prune_classes", tuple(self.prune_classes))
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
        if self.calibration not in ("temperature", "isotonic"):
            raise ValueError(f"calibration must be temperature or isotonic, got {self.calibration!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

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
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- model cards


@dataclass
class ModelCard:
    """What a model file needs to be used correctly: inputs, classes, calibration, scores."""

    features: list[str]
    classes: list[str]
    patch_size: int
    normalisation: dict[str, list[float]]
    architecture: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "none"})
    metrics: dict[str, Any] = field(default_factory=dict)
    fold: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("path")
        return json.dumps(d, indent=2, default=_json_default)

    @classmethod
    def from_json(cls, text: str, path: str | None = None) -> ModelCard:
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)} - {"path"}
        return cls(**{k: v for k, v in d.items() if k in known}, path=path)

    def check_features(self, names: Sequence[str], source: str | os.PathLike | None = None) -> None:
        """One-line InputError when the data's features are not the model's (order matters)."""
        names = list(names)
        if names != list(self.features):
            missing = [n for n in self.features if n not in names]
            detail = f"missing {missing}" if missing else "in a different order"
            raise InputError(
                source or self.path,
                f"model expects features {','.join(self.features)} but the data has "
                f"{','.join(names)} ({detail})",
            )

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_json(path: Path, obj: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))


def save_model(model: TwoScaleCNN, card: ModelCard, path: str | os.PathLike) -> Path:
    """Write PATH (state_dict, .pt) and the card beside it (.json), both atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    with atomic_output(path.with_suffix(".json")) as tmp:
        tmp.write_text(card.to_json())
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"
               ) -> tuple[TwoScaleCNN, ModelCard]:
    """(model in eval mode, card) from foldK.pt or foldK.json."""
    path = Path(path)
    pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
    for p in (pt, js):
        if not p.is_file():
            raise InputError(p, "model file not found (need foldK.pt and its foldK.json card)")
    try:
        card = ModelCard.from_json(js.read_text(), path=str(js))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(js, f"invalid model card: {exc}") from None
    model = TwoScaleCNN(**card.architecture)
    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises several types for bad files
        raise InputError(pt, f"cannot load weights: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), card


# ---------------------------------------------------------------- loss, weights, augmentation


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    smoothing: float = 0.1,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of weight * sum_k -q_k (1 - p_k)^gamma log p_k with label-smoothed targets q.

    This is the categorical focal loss with label smoothing (as Keras'
    CategoricalFocalCrossentropy without alpha); class balance comes from `weight`.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    n_classes = logits.shape[1]
    q = F.one_hot(target, n_classes).float() * (1.0 - smoothing) + smoothing / n_classes
    loss = -(q * (1.0 - logp.exp()).pow(gamma) * logp).sum(dim=1)
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def sample_weights(labels: np.ndarray, scenes: Sequence[Any]) -> np.ndarray:
    """Class weight x scene weight (inverse frequencies), normalised to mean 1."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    _, cinv, ccount = np.unique(labels, return_inverse=True, return_counts=True)
    _, sinv, scount = np.unique(np.asarray([str(s) for s in scenes]), return_inverse=True,
                                return_counts=True)
    w = (n / (len(ccount) * ccount[cinv])) * (n / (len(scount) * scount[sinv]))
    return (w / w.mean()).astype(np.float32)


def augment_batch(x: torch.Tensor, contrast: float = 0.05, brightness: float = 0.01
                  ) -> torch.Tensor:
    """Random dihedral transform (flips and rot90), contrast and brightness, per sample.

    Batched tensor ops on x's device, no Python loop. A transpose plus two optional flips
    covers all 8 flips/rotations of a square patch uniformly; contrast scales each feature
    about its patch mean by 1 +- `contrast`, brightness adds +- `brightness`.
    """
    b = x.shape[0]
    r = torch.rand(b, 5, device=x.device)
    shape = (b, 1, 1, 1)
    x = torch.where((r[:, 0] < 0.5).view(shape), x.transpose(-1, -2), x)
    x = torch.where((r[:, 1] < 0.5).view(shape), x.flip(-1), x)
    x = torch.where((r[:, 2] < 0.5).view(shape), x.flip(-2), x)
    c = (1.0 + contrast * (2.0 * r[:, 3] - 1.0)).view(shape).to(x.dtype)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * c + mean + (brightness * (2.0 * r[:, 4] - 1.0)).view(shape).to(x.dtype)


def epoch_order(seed: int, round_no: int, fold: int, epoch: int, n: int) -> np.ndarray:
    """Training order of an epoch: a pure function of its arguments (exact resumption)."""
    return np.random.default_rng([seed, round_no, fold, epoch]).permutation(n)


def _batch_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch; a trailing batch of one sample is dropped (BatchNorm)."""
    out = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    if out and out[-1][1] - out[-1][0] < 2:
        out.pop()
    return out


# ---------------------------------------------------------------- folds and data


def fold_splits(patchset: Any, keep: np.ndarray | None = None
                ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """[(t, train, val, test)] per test fold t: val = (t - 1) mod k, train = the rest.

    `keep` (bool, cleaned set) removes points from train and val; test is never filtered
    (the caller scores cleaned and unpruned test points). Folds must not share a glacier.
    """
    table = patchset.table
    folds = table["fold"].to_numpy(dtype=np.int64)
    k = int(getattr(patchset, "fold_config", {}).get("k", 0) or len(np.unique(folds)))
    if (folds < 0).any() or (folds >= k).any():
        raise InputError(None, f"fold column must hold 0..{k - 1}, got {np.unique(folds)}")
    if k < 3:
        raise InputError(None, f"the protocol needs >= 3 folds (test, validation, train), got {k}")
    glaciers = table["glacier"].astype(str).to_numpy()
    per_glacier = {g: np.unique(folds[glaciers == g]) for g in np.unique(glaciers)}
    split = {g: f.tolist() for g, f in per_glacier.items() if len(f) > 1}
    if split:
        g = next(iter(split))
        raise InputError(None, f"glacier {g} lies in folds {split[g]}: folds must be "
                               "glacier-disjoint (no glacier in both training and test)")
    keep = np.ones(len(folds), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    out = []
    for t in range(k):
        v = (t - 1) % k
        test = np.flatnonzero(folds == t)
        val = np.flatnonzero((folds == v) & keep)
        train = np.flatnonzero((folds != t) & (folds != v) & keep)
        out.append((t, train, val, test))
    return out


@dataclass
class _Data:
    """Raw patches of the selected features on the training device, plus labels."""

    x: torch.Tensor
    y: torch.Tensor
    labels: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    patch_size: int


def _prepare(patchset: Any, cfg: TrainConfig, device: torch.device) -> _Data:
    names = tuple(patchset.feature_names)
    wanted = names if cfg.features is None else tuple(cfg.features)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise InputError(None, f"features {missing} are not in the dataset (has {', '.join(names)})")
    fidx = [names.index(n) for n in wanted]
    arr = patchset.patches
    n = arr.shape[0]
    x = torch.empty((n, len(fidx), arr.shape[2], arr.shape[3]), dtype=torch.float32, device=device)
    for s in range(0, n, 4096):
        block = np.asarray(arr[s:s + 4096], dtype=np.float32)[:, fidx]
        x[s:s + 4096] = torch.from_numpy(np.ascontiguousarray(block)).to(device)
    if not torch.isfinite(x).all():
        raise InputError(None, "patches hold NaN/inf values; rebuild the dataset (invalid pixels)")
    labels = np.asarray(patchset.labels, dtype=np.int64)
    return _Data(x, torch.from_numpy(labels).to(device), labels, wanted,
                 tuple(patchset.class_names), int(patchset.patch_size))


def _fit_norm(data: _Data, idx: np.ndarray) -> dict[str, list[float]]:
    """Per-feature min/max over the training patches (same maths as patches.fit_minmax)."""
    sel = torch.from_numpy(idx).to(data.x.device)
    lo = torch.full((data.x.shape[1],), float("inf"), device=data.x.device)
    hi = torch.full((data.x.shape[1],), float("-inf"), device=data.x.device)
    for s in range(0, len(sel), 4096):
        block = data.x[sel[s:s + 4096]]
        lo = torch.minimum(lo, block.amin(dim=(0, 2, 3)))
        hi = torch.maximum(hi, block.amax(dim=(0, 2, 3)))
    return {"min": lo.double().cpu().tolist(), "max": hi.double().cpu().tolist()}


class _Normaliser:
    """(x - min) / (max - min) per feature on the device (constant features -> 0)."""

    def __init__(self, norm: dict[str, list[float]], device: torch.device):
        lo = torch.tensor(norm["min"], dtype=torch.float64)
        span = torch.tensor(norm["max"], dtype=torch.float64) - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        self.lo = lo.float().view(1, -1, 1, 1).to(device)
        self.inv = (1.0 / span).float().view(1, -1, 1, 1).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.lo) * self.inv


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, idx: np.ndarray,
                   normalise: Any, batch_size: int = 1024) -> np.ndarray:
    """Float32 logits (len(idx), C) of the patches x[idx] in eval mode."""
    was_training = model.training
    model.eval()
    device = x.device
    out = []
    sel = torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(device)
    for s in range(0, len(sel), batch_size):
        xb = normalise(x[sel[s:s + batch_size]])
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            out.append(model(xb).float().cpu())
    model.train(was_training)
    n_classes = getattr(model, "n_classes", None) or 0
    return torch.cat(out).numpy() if out else np.zeros((0, n_classes), dtype=np.float32)


# ---------------------------------------------------------------- training one fold


def _maybe_test_kill(round_no: int, fold: int, epoch: int, batch: int) -> None:
    spec = os.environ.get(_KILL_ENV)
    if spec and spec == f"{round_no}:{fold}:{epoch}:{batch}":
        os.kill(os.getpid(), signal.SIGKILL)


def _save_ckpt(path: Path, obj: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def train_fold(
    data: _Data,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: TrainConfig,
    norm: dict[str, list[float]],
    weights: np.ndarray,
    *,
    round_no: int = 1,
    fold: int = 0,
    ckpt_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one fold model; return its best state (by validation mean IoU) and history.

    With `ckpt_path`, resumes from the checkpoint there when its signature (config, data
    split) matches, and writes one after every epoch and every `cfg.checkpoint_every` batches.
    """
    from tqdm.auto import tqdm

    from glacierfacies.metrics import mean_iou

    device = data.x.device
    n_classes = len(data.class_names)
    torch.manual_seed(_batch_seed(cfg.seed, round_no, fold, 10**6))  # init from (seed, round, fold)
    model = TwoScaleCNN(**cfg.architecture(data.x.shape[1], n_classes, data.patch_size))
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if (cfg.compile and device.type == "cuda") else model
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=device.type == "cuda")
    batches = _batches(len(train_idx), cfg.batch_size)
    total_steps = max(1, cfg.epochs * len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    normalise = _Normaliser(norm, device)
    w_all = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(device)
    train_t = torch.from_numpy(np.asarray(train_idx, dtype=np.int64)).to(device)
    signature = hashlib.sha256(
        (cfg.signature() + str(round_no) + str(fold)).encode()
        + np.asarray(train_idx, dtype=np.int64).tobytes() + b"|"
        + np.asarray(val_idx, dtype=np.int64).tobytes()
    ).hexdigest()[:20]

    state: dict[str, Any] = {
        "epoch": 0, "batch": 0, "best_score": -1.0, "best_epoch": -1, "best_state": None,
        "history": [], "bad_epochs": 0, "stopped_early": False, "loss_sum": 0.0,
    }
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    if ckpt_path is not None and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck.get("signature") == signature:
            model.load_state_dict(ck["model"])
            optimiser.load_state_dict(ck["optimiser"])
            scheduler.load_state_dict(ck["scheduler"])
            state = ck["state"]
        else:
            warnings.warn(f"{ckpt_path}: checkpoint of another configuration, starting afresh",
                          stacklevel=2)

    def checkpoint() -> None:
        if ckpt_path is None:
            return
        _save_ckpt(ckpt_path, {
            "signature": signature, "model": model.state_dict(),
            "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
            "state": state, "rng": {"torch": torch.get_rng_state(),
                                    "numpy": np.random.get_state()},
        })

    bar = tqdm(total=cfg.epochs * len(batches), initial=state["epoch"] * len(batches) + state["batch"],
               desc=f"round {round_no} fold {fold}", unit="batch", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        while state["epoch"] < cfg.epochs and not state["stopped_early"]:
            epoch = state["epoch"]
            order = train_t[torch.from_numpy(epoch_order(cfg.seed, round_no, fold, epoch,
                                                         len(train_idx))).to(device)]
            model.train()
            loss_sum = torch.tensor(state["loss_sum"], dtype=torch.float32, device=device)
            for b in range(state["batch"], len(batches)):
                _maybe_test_kill(round_no, fold, epoch, b)
                torch.manual_seed(_batch_seed(cfg.seed, round_no, fold, epoch, b))
                s, e = batches[b]
                idx = order[s:e]
                xb = normalise(data.x[idx])
                if cfg.augment:
                    xb = augment_batch(xb, cfg.contrast, cfg.brightness)
                if device.type == "cuda":
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with _autocast(device):
                    logits = step_model(xb)
                loss = focal_loss(logits, data.y[idx], cfg.focal_gamma, cfg.label_smoothing,
                                  w_all[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                loss_sum += loss.detach()
                state["batch"] = b + 1
                bar.update(1)
                if cfg.checkpoint_every and (b + 1) % cfg.checkpoint_every == 0 \
                        and b + 1 < len(batches):
                    state["loss_sum"] = float(loss_sum)
                    checkpoint()
            val_logits = predict_logits(model, data.x, val_idx, normalise, cfg.eval_batch_size)
            score = (mean_iou(data.labels[val_idx], val_logits.argmax(1), n_classes)
                     if len(val_idx) else 0.0)
            state["history"].append({
                "epoch": epoch, "train_loss": float(loss_sum) / max(1, len(batches)),
                "val_mean_iou": score, "lr": optimiser.param_groups[0]["lr"],
            })
            if score > state["best_score"]:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                             best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
            else:
                state["bad_epochs"] += 1
                if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                    state["stopped_early"] = True
            bar.set_postfix(loss=f"{state['history'][-1]['train_loss']:.4f}", val_miou=f"{score:.3f}")
            state["epoch"] = epoch + 1
            state["batch"] = 0
            state["loss_sum"] = 0.0
            checkpoint()
    finally:
        bar.close()
    return {
        "state_dict": state["best_state"], "best_epoch": state["best_epoch"],
        "best_val_mean_iou": state["best_score"], "history": state["history"],
        "stopped_early": state["stopped_early"], "architecture": model.kwargs,
    }


# ---------------------------------------------------------------- protocol stages


def _round_dir(run_dir: Path, round_no: int) -> Path:
    return run_dir / f"round{round_no}"


def _models_dir(run_dir: Path, round_no: int) -> Path:
    return run_dir / "models" if round_no == 2 else _round_dir(run_dir, round_no) / "models"


def _macro_f1(y: np.ndarray, logits: np.ndarray, n_classes: int) -> float | None:
    from glacierfacies.metrics import macro_f1

    return macro_f1(y, logits.argmax(1), n_classes) if len(y) else None


def run_round(
    patchset: Any,
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    round_no: int,
    keep: np.ndarray | None = None,
    *,
    progress: bool = True,
    data: _Data | None = None,
) -> dict[str, Any]:
    """Train all k fold models of a round (resuming finished folds and checkpoints).

    Writes the fold models + cards and predictions; returns out-of-fold test logits
    (N, C), the test fold of each point, per-fold temperatures and warnings.
    """
    from glacierfacies.calibration import fit_isotonic, fit_temperature, to_card

    run_dir = Path(run_dir)
    rdir = _round_dir(run_dir, round_no)
    (rdir / "predictions").mkdir(parents=True, exist_ok=True)
    mdir = _models_dir(run_dir, round_no)
    mdir.mkdir(parents=True, exist_ok=True)
    device = cfg.resolved_device()
    data = data or _prepare(patchset, cfg, device)
    n, n_classes = len(data.labels), len(data.class_names)
    table = patchset.table
    scenes = table["scene_id"].astype(str).to_numpy()
    oof = np.full((n, n_classes), np.nan, dtype=np.float32)
    oof_fold = np.full(n, -1, dtype=np.int64)
    folds_info, warn = [], []
    splits = fold_splits(patchset, keep)
    k = len(splits)
    for t, train_idx, val_idx, test_idx in splits:
        pred_path = rdir / "predictions" / f"fold{t}.npz"
        absent = [data.class_names[c] for c in range(n_classes)
                  if c in set(data.labels.tolist()) and c not in set(data.labels[train_idx].tolist())]
        if absent:
            msg = f"round {round_no} fold {t}: class(es) {', '.join(absent)} absent from the training folds"
            warn.append(msg)
            warnings.warn(msg, stacklevel=2)
        if not pred_path.is_file():
            if len(train_idx) < 2:
                raise InputError(None, f"round {round_no} fold {t}: fewer than 2 training points")
            t0 = time.perf_counter()
            norm = _fit_norm(data, train_idx)
            weights = np.zeros(n, dtype=np.float32)
            weights[train_idx] = sample_weights(data.labels[train_idx], scenes[train_idx])
            res = train_fold(data, train_idx, val_idx, cfg, norm, weights, round_no=round_no,
                             fold=t, ckpt_path=rdir / f"fold{t}.ckpt", progress=progress)
            model = TwoScaleCNN(**res["architecture"]).to(device)
            model.load_state_dict(res["state_dict"])
            normalise = _Normaliser(norm, device)
            test_logits = predict_logits(model, data.x, test_idx, normalise, cfg.eval_batch_size)
            val_logits = predict_logits(model, data.x, val_idx, normalise, cfg.eval_batch_size)
            temperature = fit_temperature(val_logits, data.labels[val_idx]) if len(val_idx) else 1.0
            calibration = {"method": "temperature", "temperature": float(temperature)}
            if cfg.calibration == "isotonic" and len(val_idx):
                # "temperature" stays as the fallback for consumers that only scale logits
                calibration = {**to_card("isotonic", fit_isotonic(_softmax(val_logits),
                                                                  data.labels[val_idx])),
                               "temperature": float(temperature)}
            y_test = data.labels[test_idx]
            cleaned = np.ones(len(test_idx), bool) if keep is None else np.asarray(keep)[test_idx]
            fold_metrics = {
                "best_epoch": res["best_epoch"], "best_val_mean_iou": res["best_val_mean_iou"],
                "stopped_early": res["stopped_early"], "history": res["history"],
                "test_macro_f1_unpruned": _macro_f1(y_test, test_logits, n_classes),
                "test_macro_f1_cleaned": _macro_f1(y_test[cleaned], test_logits[cleaned], n_classes),
                "train_seconds": time.perf_counter() - t0,
            }
            card = ModelCard(
                features=list(data.feature_names), classes=list(data.class_names),
                patch_size=data.patch_size, normalisation=norm, architecture=res["architecture"],
                training=cfg.to_dict(),
                calibration=calibration,
                metrics=fold_metrics,
                fold={"round": round_no, "test_fold": t, "validation_fold": (t - 1) % k,
                      "train_folds": sorted(set(range(k)) - {t, (t - 1) % k}),
                      "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
                      "test_glaciers": sorted(set(table["glacier"].astype(str).iloc[test_idx]))},
            )
            save_model(model, card, mdir / f"fold{t}.pt")
            with atomic_output(pred_path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, test_idx=test_idx, test_logits=test_logits, val_idx=val_idx,
                             val_logits=val_logits, temperature=temperature)
            (rdir / f"fold{t}.ckpt").unlink(missing_ok=True)
        with np.load(pred_path) as z:
            if not np.array_equal(z["test_idx"], test_idx):
                raise InputError(pred_path, "predictions of another data split; use a new RUN_DIR")
            oof[test_idx] = z["test_logits"]
            oof_fold[test_idx] = t
            temperature = float(z["temperature"])
        folds_info.append({"test_fold": t, "temperature": temperature,
                           "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx)})
    np.save(rdir / "oof_logits.npy", oof)
    np.save(rdir / "oof_fold.npy", oof_fold)
    return {"oof_logits": oof, "oof_fold": oof_fold, "folds": folds_info, "warnings": warn}


def _softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / np.asarray(temperature, dtype=np.float64).reshape(-1, 1)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def run_cleaning(patchset: Any, cfg: TrainConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Confident learning on the round-1 out-of-fold probabilities only; review files."""
    from glacierfacies.cleaning import find_noisy_labels, write_review

    run_dir = Path(run_dir)
    oof_path = _round_dir(run_dir, 1) / "oof_logits.npy"
    if not oof_path.is_file():
        raise InputError(oof_path, "no round-1 predictions; run --stage round1 first")
    oof = np.load(oof_path)
    labels = np.asarray(patchset.labels, dtype=np.int64)
    if oof.shape[0] != len(labels) or not np.isfinite(oof).all():
        raise InputError(oof_path, "round-1 predictions do not match this dataset")
    probs = _softmax(oof)
    mask = find_noisy_labels(labels, probs, list(cfg.prune_classes))
    out = run_dir / "cleaning"
    out.mkdir(parents=True, exist_ok=True)
    table = patchset.table
    crs = None
    if "crs" in table and len(table):
        crs = str(table["crs"].iloc[0]) or None
    paths = write_review(table, labels, probs, mask, list(patchset.class_names), out, crs) \
        if crs else {}
    np.save(out / "flagged.npy", mask)
    names = list(patchset.class_names)
    per_class = {names[c]: int(mask[labels == c].sum()) for c in range(len(names))}
    summary = {"n_flagged": int(mask.sum()), "fraction": float(mask.mean()) if len(mask) else 0.0,
               "per_class": per_class, "prune_classes": list(cfg.prune_classes),
               "files": {k: str(v) for k, v in paths.items()}}
    _write_json(out / "summary.json", summary)
    return {"mask": mask, **summary}


def run_evaluation(patchset: Any, run_dir: str | os.PathLike,
                   flipped: Any | None = None) -> dict[str, Any]:
    """Scores of the final round's out-of-fold predictions -> RUN_DIR/metrics.json + figures.

    Uses round 2 when present (else round 1). Probabilities are calibrated with each fold
    model's temperature. `flipped` (a table with point_id, e.g. the sample's
    flipped_labels.csv) adds the cleaning detection rate and precision.
    """
    from glacierfacies.calibration import calibrated_probs, reliability_diagram
    from glacierfacies.metrics import evaluate, expected_calibration_error, plot_confusion

    run_dir = Path(run_dir)
    round_no = 2 if (_round_dir(run_dir, 2) / "oof_logits.npy").is_file() else 1
    rdir = _round_dir(run_dir, round_no)
    if not (rdir / "oof_logits.npy").is_file():
        raise InputError(run_dir, "no trained round found; run `glacierfacies train` first")
    logits = np.load(rdir / "oof_logits.npy")
    oof_fold = np.load(rdir / "oof_fold.npy")
    labels = np.asarray(patchset.labels, dtype=np.int64)
    if logits.shape[0] != len(labels):
        raise InputError(run_dir, f"run has {logits.shape[0]} predictions, dataset {len(labels)} points")
    k = int(oof_fold.max()) + 1
    temps = np.ones(k)
    probs_raw = _softmax(logits)
    probs = np.empty_like(probs_raw)
    methods = set()
    for t in range(k):
        with np.load(rdir / "predictions" / f"fold{t}.npz") as z:
            temps[t] = float(z["temperature"])
        card_path = _models_dir(run_dir, round_no) / f"fold{t}.json"
        cal = (json.loads(card_path.read_text()).get("calibration") if card_path.is_file()
               else None) or {"method": "temperature", "temperature": temps[t]}
        methods.add(cal["method"])
        rows = oof_fold == t
        probs[rows] = calibrated_probs(logits[rows], cal)
    class_names = list(patchset.class_names)
    flagged_path = run_dir / "cleaning" / "flagged.npy"
    flagged = np.load(flagged_path) if flagged_path.is_file() else np.zeros(len(labels), bool)
    keep = ~flagged
    table = patchset.table.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cleaned = evaluate(labels[keep], probs[keep], table[keep].reset_index(drop=True), class_names)
        unpruned = evaluate(labels, probs, table, class_names)
    plot_confusion(labels[keep], probs[keep].argmax(1), class_names, run_dir / "confusion_cleaned.png",
                   title=f"round {round_no}, cleaned test folds")
    plot_confusion(labels, probs.argmax(1), class_names, run_dir / "confusion_unpruned.png",
                   title=f"round {round_no}, unpruned test folds")
    eces = reliability_diagram(probs_raw[keep], probs[keep], labels[keep], run_dir / "reliability.png")
    result: dict[str, Any] = {
        "round": round_no,
        "macro_f1_cleaned": cleaned["macro_f1"],
        "macro_f1_unpruned": unpruned["macro_f1"],
        "cleaned": cleaned,
        "unpruned": unpruned,
        "calibration": {
            "method": f"{'/'.join(sorted(methods))} (per fold, fitted on its validation fold)",
            "temperatures": temps.tolist(),
            "ece_before": expected_calibration_error(probs_raw[keep], labels[keep], 100),
            "ece_after": expected_calibration_error(probs[keep], labels[keep], 100),
            "ece_bins": 100, "diagram_eces": eces,
        },
        "cleaning": {"n_flagged": int(flagged.sum()),
                     "fraction": float(flagged.mean()) if len(flagged) else 0.0},
    }
    result["n_pruned"] = result["cleaning"]["n_flagged"]
    if flipped is not None:
        result["flip_detection"] = _flip_detection(table, flagged, flipped)
        result["cleaning"].update(result["flip_detection"])
    summary = run_dir / "cleaning" / "summary.json"
    if summary.is_file():
        result["cleaning"]["summary"] = json.loads(summary.read_text())
    return result


def _flip_detection(table: Any, flagged: np.ndarray, flipped: Any) -> dict[str, Any]:
    """Recall/precision of the flags against known deliberately flipped labels."""
    from glacierfacies.cleaning import score_against_truth

    ids = table["point_id"].astype(str).to_numpy()
    score = score_against_truth(ids[flagged], flipped, dataset_point_ids=ids)
    return {
        "flipped_in_dataset": int(np.isin(ids, np.asarray(flipped["point_id"]).astype(str)).sum()),
        "flipped_facies_in_dataset": score["n_flipped"],
        "flipped_facies_flagged_recall": score["recall"] or 0.0,
        "flag_precision": score["precision"] or 0.0,
    }


def run_protocol(
    patchset: Any,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    stage: str = "all",
    *,
    progress: bool = True,
    flipped: Any | None = None,
    dataset_path: str | os.PathLike | None = None,
    flipped_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The paper's protocol (or one stage): round 1, cleaning, round 2, evaluation.

    Returns the metrics dict written to RUN_DIR/metrics.json (after round 2) or a stage
    summary. Reruns resume: finished folds are kept, unfinished ones restart from their
    last checkpoint.
    """
    if stage not in STAGES:
        raise InputError(None, f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        old = TrainConfig.from_dict(json.loads(cfg_path.read_text()))
        if old.signature() != cfg.signature():
            raise InputError(cfg_path, "RUN_DIR holds a run with another configuration; "
                                       "use a new RUN_DIR (or the same options)")
    _write_json(cfg_path, cfg.to_dict())
    if dataset_path is not None:  # lets `glacierfacies evaluate RUN_DIR` find the data
        _write_json(run_dir / "run.json", {
            "dataset": str(Path(dataset_path).resolve()),
            "flipped_labels": str(Path(flipped_path).resolve()) if flipped_path else None})
    if cfg.resolved_device().type == "cpu":
        torch.set_num_threads(cfg.threads)
    timings: dict[str, float] = {}
    device = cfg.resolved_device()
    data = None
    warn: list[str] = []
    out: dict[str, Any] = {}
    if stage in ("round1", "all"):
        t0 = time.perf_counter()
        data = _prepare(patchset, cfg, device)
        r1 = run_round(patchset, cfg, run_dir, 1, progress=progress, data=data)
        warn += r1["warnings"]
        timings["round1_s"] = time.perf_counter() - t0
        out["round1"] = {"folds": r1["folds"]}
    if stage in ("clean", "all"):
        t0 = time.perf_counter()
        out["cleaning"] = {k: v for k, v in run_cleaning(patchset, cfg, run_dir).items() if k != "mask"}
        timings["cleaning_s"] = time.perf_counter() - t0
    if stage in ("round2", "all"):
        t0 = time.perf_counter()
        flagged_path = run_dir / "cleaning" / "flagged.npy"
        if not flagged_path.is_file():
            raise InputError(flagged_path, "no cleaning result; run --stage clean first")
        keep = ~np.load(flagged_path)
        data = data or _prepare(patchset, cfg, device)
        r2 = run_round(patchset, cfg, run_dir, 2, keep=keep, progress=progress, data=data)
        warn += r2["warnings"]
        timings["round2_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run_evaluation(patchset, run_dir, flipped=flipped)
        timings["evaluation_s"] = time.perf_counter() - t0
        out["folds"] = r2["folds"]
    prev = run_dir / "metrics.json"
    if prev.is_file() and stage != "all":
        old = json.loads(prev.read_text())
        old.update(out)
        out = old
    out["warnings"] = sorted(set(out.get("warnings", [])) | set(warn)
                             | set(out.get("unpruned", {}).get("warnings", [])))
    out.setdefault("timings", {}).update(timings)
    out["config"] = cfg.to_dict()
    if dataset_path is not None:
        out["dataset"] = str(dataset_path)
    _write_json(prev, out)
    return out


# ---------------------------------------------------------------- ONNX export


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
                opset: int = 17) -> Path:
    """Export a fold model's dense, normalised, calibrated forward to ONNX (dynamic H, W)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise InputError(out, "ONNX export needs the optional package onnx "
                              "(pip install 'glacierfacies[onnx]')")
    model, card = load_model(model_path)
    wrapper = DenseProbabilities(model, card).eval()
    s = max(size, card.patch_size)
    example = torch.zeros(1, len(card.features), s, s)
    out = Path(out)
    with atomic_output(out) as tmp, warnings.catch_warnings():
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


# ---------------------------------------------------------------- entry points for the CLI


def _flipped_table(patchset: Any, flipped_csv: str | os.PathLike | None) -> Any:
    """The known flipped labels: the given CSV, else flipped_labels.csv beside the labels."""
    import pandas as pd

    path = Path(flipped_csv) if flipped_csv else None
    if path is None:
        labels = (getattr(patchset, "provenance", None) or {}).get("labels")
        if labels and (Path(labels).parent / "flipped_labels.csv").is_file():
            path = Path(labels).parent / "flipped_labels.csv"
    if path is None:
        return None
    if not path.is_file():
        raise InputError(path, "flipped-labels table does not exist")
    table = pd.read_csv(path)
    if "point_id" not in table:
        raise InputError(path, "flipped-labels table lacks a point_id column")
    return table


def train_dataset(
    dataset: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    stage: str = "all",
    *,
    flipped_csv: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load a PatchSet folder and run the protocol (or one stage) into RUN_DIR."""
    from glacierfacies.patches import PatchSet

    ps = PatchSet.load(dataset)
    flipped = _flipped_table(ps, flipped_csv)
    return run_protocol(ps, run_dir, cfg, stage, progress=progress, flipped=flipped,
                        dataset_path=dataset, flipped_path=flipped_csv)


def evaluate_run(run_dir: str | os.PathLike, dataset: str | os.PathLike | None = None
                 ) -> dict[str, Any]:
    """Recompute RUN_DIR/metrics.json (and figures) from the stored out-of-fold predictions."""
    from glacierfacies.patches import PatchSet

    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    dataset = dataset or info.get("dataset")
    if not dataset:
        raise InputError(run_dir, "no dataset recorded in run.json; pass --dataset")
    ps = PatchSet.load(dataset)
    out = run_evaluation(ps, run_dir, flipped=_flipped_table(ps, info.get("flipped_labels")))
    prev = run_dir / "metrics.json"
    old = json.loads(prev.read_text()) if prev.is_file() else {}
    old.update(out)
    old["dataset"] = str(dataset)
    _write_json(prev, old)
    return old


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A few human lines of a run's metrics for the CLI."""
    lines = []
    if "macro_f1_cleaned" in metrics:
        lines.append(f"macro F1 (round {metrics.get('round')}): cleaned test folds "
                     f"{metrics['macro_f1_cleaned']:.3f}, unpruned {metrics['macro_f1_unpruned']:.3f}")
        gw = metrics.get("cleaned", {}).get("glacier_wise")
        if gw and gw.get("macro_f1_mean") is not None:
            lines.append(f"glacier-wise macro F1 (cleaned): {gw['macro_f1_mean']:.3f} "
                         f"+- {gw['macro_f1_std']:.3f} over {gw['n_glaciers']} glaciers")
        cal = metrics.get("calibration", {})
        if cal:
            lines.append(f"ECE (100 bins): {cal['ece_before']:.4f} before, "
                         f"{cal['ece_after']:.4f} after calibration")
    cl = metrics.get("cleaning")
    if cl:
        line = f"confident learning flagged {cl['n_flagged']} labels ({cl['fraction']:.1%})"
        if "flipped_facies_flagged_recall" in cl:
            line += (f"; known flipped facies labels found: "
                     f"{cl['flipped_facies_flagged_recall']:.1%}, precision {cl['flag_precision']:.1%}")
        lines.append(line)
    for w in metrics.get("warnings", []):
        lines.append(f"warning: {w}")
    t = metrics.get("timings")
    if t:
        lines.append("time: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()))
    return lines
