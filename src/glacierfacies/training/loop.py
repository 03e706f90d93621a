"""One fold's training loop: loss, weights, augmentation, checkpoints."""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glacierfacies._io import atomic_output
from glacierfacies.errors import InputError
from glacierfacies.model.network import TwoScaleCNN
from glacierfacies.training.config import TrainConfig

__all__ = ["augment_batch", "epoch_order", "focal_loss", "predict_logits", "sample_weights",
           "train_fold"]


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


def sample_weights(labels: np.ndarray, scenes: Sequence[Any], class_power: float = 1.0
                   ) -> np.ndarray:
    """Class weight x scene weight (inverse frequencies), normalised to mean 1.

    `class_power` softens the class weight to (inverse frequency) ** power: 1 is the paper's,
    0 no class weighting (a rare class then stops pulling look-alike points of common ones).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    _, cinv, ccount = np.unique(labels, return_inverse=True, return_counts=True)
    _, sinv, scount = np.unique(np.asarray([str(s) for s in scenes]), return_inverse=True,
                                return_counts=True)
    w = (n / (len(ccount) * ccount[cinv])) ** class_power * (n / (len(scount) * scount[sinv]))
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


@dataclass
class _Data:
    """Raw patches of the selected features on the training device, plus labels."""

    x: torch.Tensor
    y: torch.Tensor
    labels: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    patch_size: int
    resolution_m: float = 10.0  # grid the patches were cut from (recorded in the card)


def selected_features(patchset: Any, cfg: TrainConfig) -> tuple[tuple[str, ...], list[int]]:
    """The features a run trains on and their index in the dataset; InputError if absent."""
    names = tuple(patchset.feature_names)
    wanted = names if cfg.features is None else tuple(cfg.features)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise InputError(None, f"features {missing} are not in the dataset (has {', '.join(names)})")
    return wanted, [names.index(n) for n in wanted]


def prepare_training_data(patchset: Any, cfg: TrainConfig, device: torch.device) -> _Data:
    """The patchset's selected features (raw) and labels on the training device, checked
    finite; the mapping side's per-tile equivalent is `mapping.inference._prepare_input`."""
    wanted, fidx = selected_features(patchset, cfg)
    arr = patchset.patches
    n = arr.shape[0]
    x = torch.empty((n, len(fidx), arr.shape[2], arr.shape[3]), dtype=torch.float32, device=device)
    for s in range(0, n, 4096):  # stored dtype to the device, float32 there (half the copy)
        block = np.ascontiguousarray(np.asarray(arr[s:s + 4096])[:, fidx])
        x[s:s + 4096] = torch.from_numpy(block).to(device).float()
    if not torch.isfinite(x).all():
        raise InputError(None, "patches hold NaN/inf values; rebuild the dataset (invalid pixels)")
    labels = np.asarray(patchset.labels, dtype=np.int64)
    read = (getattr(patchset, "provenance", None) or {}).get("read_options") or {}
    return _Data(x, torch.from_numpy(labels).to(device), labels, wanted,
                 tuple(patchset.class_names), int(patchset.patch_size),
                 float(read.get("resolution_m", 10.0)))


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
    """Float32 logits (len(idx), C) of the patches x[idx] in eval mode (one host copy)."""
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
            out.append(model(xb).float())
    model.train(was_training)
    n_classes = getattr(model, "n_classes", None) or 0
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, n_classes), dtype=np.float32)


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
    on_batch: Callable[[int, int, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one fold model; return its best state (by validation mean IoU) and history.

    With `ckpt_path`, resumes from the checkpoint there when its signature (config, data
    split) matches, and writes one after every epoch and every `cfg.checkpoint_every` batches.
    `on_batch(round_no, fold, epoch, batch)` is called before every batch (test hooks, e.g.
    `glacierfacies._testing.batch_hook_from_env`).
    """
    from glacierfacies.progress import tqdm
    from glacierfacies.training.metrics import mean_iou

    device = data.x.device
    if device.type == "cuda":  # one batch shape per fold: cuDNN's autotune pays off
        torch.backends.cudnn.benchmark = True
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
            t_epoch = time.perf_counter()
            order = train_t[torch.from_numpy(epoch_order(cfg.seed, round_no, fold, epoch,
                                                         len(train_idx))).to(device)]
            model.train()
            loss_sum = torch.tensor(state["loss_sum"], dtype=torch.float32, device=device)
            for b in range(state["batch"], len(batches)):
                if on_batch is not None:
                    on_batch(round_no, fold, epoch, b)
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
                "seconds": time.perf_counter() - t_epoch,  # training + validation (synced)
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

