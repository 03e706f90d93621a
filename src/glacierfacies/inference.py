"""Exact dense tiled inference over a feature raster (pure numpy/torch, no file I/O).

A model with `dense_logits` gives, for a (F, H, W) input, the patch logits of every pixel
whose S x S window fits in the input. Scenes are cut into output tiles; each tile is read
with a halo of S // 2 pixels on every side, so a pixel sees exactly the window its own patch
would have seen, and tile seams cannot change a single value. Pixels whose window leaves the
scene or touches an invalid input (NaN feature or `valid == False`) are nodata, never a
guessed class. Tiles without a pixel to classify are skipped.

An ensemble (several fold models) averages calibrated probabilities:
p = mean_k softmax(logits_k / T_k).

This module runs on a GPU box with only torch + numpy installed (the GPU bench imports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

NODATA = 255

Normaliser = Callable[[torch.Tensor], torch.Tensor]


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

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_size)


@dataclass
class DensePrediction:
    """Per-pixel result: class (uint8, 255 nodata), confidence (float32, NaN nodata).

    `confidence` is the (ensemble, calibrated) probability of the predicted class; `probs`
    (n_classes, H, W) float32 is only filled on request (it is 8x the size of the map).
    """

    classes: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray | None = None
    tiles_run: int = 0
    tiles_skipped: int = 0
    stats: dict = field(default_factory=dict)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from 'cpu' / 'cuda' / 'cuda:N'; ValueError if unknown or unavailable."""
    name = str(device)
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:") or name == "mps"):
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but it is not available on this machine")
    return torch.device(name)


def tile_origins(height: int, width: int, tile_h: int, tile_w: int) -> Iterator[tuple[int, int]]:
    """Top-left corners of the output tiles covering a height x width raster."""
    for r in range(0, height, tile_h):
        for c in range(0, width, tile_w):
            yield r, c


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _prepare(member: Member, x: torch.Tensor) -> torch.Tensor:
    """Select features, min-max normalise, fill non-finite with 0 (those windows are masked).

    The normalisation mirrors `patches.apply_minmax` bit for bit (float64 min/span cast to
    the input dtype, constant features -> span 1), so maps see what training saw.
    """
    if member.feature_index is not None:
        x = x[list(member.feature_index)]
    if member.minimum is not None:
        lo = np.asarray(member.minimum, dtype=np.float64)
        span = np.asarray(member.maximum, dtype=np.float64) - lo
        span = np.where(span > 0, span, 1.0)
        x = (x - x.new_tensor(lo).reshape(-1, 1, 1)) / x.new_tensor(span).reshape(-1, 1, 1)
        if member.clip:
            x = x.clamp(0.0, 1.0)
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _cut(
    src: torch.Tensor, r0: int, c0: int, h: int, w: int, fill: float | bool
) -> torch.Tensor:
    """src[..., r0:r0+h, c0:c0+w] with out-of-raster cells set to `fill` (r0/c0 may be < 0)."""
    H, W = src.shape[-2:]
    out = torch.full((*src.shape[:-2], h, w), fill, dtype=src.dtype, device=src.device)
    rs, re = max(r0, 0), min(r0 + h, H)
    cs, ce = max(c0, 0), min(c0 + w, W)
    if rs < re and cs < ce:
        out[..., rs - r0 : re - r0, cs - c0 : ce - c0] = src[..., rs:re, cs:ce]
    return out


def dense_predict(
    members: Sequence[Member] | Member,
    features: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None = None,
    valid: np.ndarray | torch.Tensor | None = None,
    tile_size: int = 1024,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    return_probs: bool = False,
    precision: str = "fp32",
    progress: bool = False,
) -> DensePrediction:
    """Classify every pixel of `features` (F, H, W) where `mask` is True, tile by tile.

    `valid` (H, W) marks usable input pixels (in addition to finite features). Output tiles are
    `tile_size` square (clipped to the raster) and read with a halo of S // 2; identical
    results for every tile size. `precision` 'bf16' uses autocast on CUDA (fast, not exact).
    """
    members = [members] if isinstance(members, Member) else list(members)
    if not members:
        raise ValueError("no model given")
    sizes = {m.patch_size for m in members}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members have different patch sizes {sorted(sizes)}")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if tile_size < 1:
        raise ValueError(f"tile size must be >= 1, got {tile_size}")
    dev = resolve_device(device)
    s = sizes.pop()
    halo = s // 2
    feats = _as_tensor(features)
    if feats.ndim != 3:
        raise ValueError(f"features must be (F, H, W), got {tuple(feats.shape)}")
    _, H, W = feats.shape
    mask_t = torch.ones((H, W), dtype=torch.bool) if mask is None else _as_tensor(mask).bool()
    valid_t = None if valid is None else _as_tensor(valid).bool()
    if mask_t.shape != (H, W) or (valid_t is not None and valid_t.shape != (H, W)):
        raise ValueError("mask and valid must have the features' (H, W) shape")
    n_classes = int(getattr(members[0].model, "n_classes", 8))
    for m in members:
        m.model.eval().to(dev)

    th, tw = min(tile_size, H), min(tile_size, W)
    classes = np.full((H, W), NODATA, np.uint8)
    confidence = np.full((H, W), np.nan, np.float32)
    probs = np.full((n_classes, H, W), np.nan, np.float32) if return_probs else None

    todo: list[tuple[int, int]] = []
    skipped = 0
    for r0, c0 in tile_origins(H, W, th, tw):
        if bool(mask_t[r0 : r0 + th, c0 : c0 + tw].any()):
            todo.append((r0, c0))
        else:
            skipped += 1

    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if precision != "fp32"
        else None
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="tiles", unit="tile")
    with torch.inference_mode():
        for b in range(0, len(todo), batch_size):
            batch = todo[b : b + batch_size]
            xs, oks = [], []
            for r0, c0 in batch:
                x = _cut(feats, r0 - halo, c0 - halo, th + 2 * halo, tw + 2 * halo, math.nan)
                x = x.to(dev, non_blocking=True).float()
                bad = ~torch.isfinite(x).all(dim=0)
                if valid_t is not None:
                    v = _cut(valid_t, r0 - halo, c0 - halo, th + 2 * halo, tw + 2 * halo, False)
                    bad |= ~v.to(dev)
                # a pixel is usable only if its whole S x S window is good
                win_bad = F.max_pool2d(bad[None, None].float(), s, stride=1)[0, 0] > 0
                m = _cut(mask_t, r0, c0, th, tw, False).to(dev)
                oks.append(m & ~win_bad)
                xs.append(x)
            x = torch.stack(xs)
            p = None
            for member in members:
                xin = torch.stack([_prepare(member, xi) for xi in x])
                if dev.type == "cuda":
                    xin = xin.contiguous(memory_format=torch.channels_last)
                if autocast is not None:
                    with autocast:
                        logits = member.model.dense_logits(xin)
                else:
                    logits = member.model.dense_logits(xin)
                pk = torch.softmax(logits.float() / float(member.temperature), dim=1)
                p = pk if p is None else p + pk
            p = p / len(members)
            conf, cls = p.max(dim=1)
            for i, (r0, c0) in enumerate(batch):
                ok = oks[i]
                hh, ww = min(th, H - r0), min(tw, W - c0)
                cls_i = torch.where(ok, cls[i].to(torch.uint8), NODATA)[:hh, :ww]
                conf_i = torch.where(ok, conf[i], math.nan)[:hh, :ww]
                classes[r0 : r0 + hh, c0 : c0 + ww] = cls_i.cpu().numpy()
                confidence[r0 : r0 + hh, c0 : c0 + ww] = conf_i.cpu().numpy()
                if probs is not None:
                    pi = torch.where(ok, p[i], math.nan)[:, :hh, :ww]
                    probs[:, r0 : r0 + hh, c0 : c0 + ww] = pi.cpu().numpy()
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return DensePrediction(
        classes, confidence, probs, tiles_run=len(todo), tiles_skipped=skipped,
        stats={"tile_h": th, "tile_w": tw, "halo": halo},
    )


def patch_predict(
    members: Sequence[Member] | Member,
    features: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The per-patch method (reference): cut each pixel's S x S window and run `forward`.

    Windows are views from numpy's sliding_window_view, stacked per batch; all given pixels must
    have their window inside the raster. Returns calibrated (N, n_classes) probabilities.
    """
    members = [members] if isinstance(members, Member) else list(members)
    s = members[0].patch_size
    halo = s // 2
    dev = resolve_device(device)
    windows = np.lib.stride_tricks.sliding_window_view(features, (s, s), axis=(1, 2))
    # windows[f, i, j] is the window with top-left (i, j) -> centre (i + halo, j + halo)
    out = []
    with torch.inference_mode():
        for m in members:
            m.model.eval().to(dev)
        for b in range(0, len(rows), batch_size):
            r = np.asarray(rows[b : b + batch_size]) - halo
            c = np.asarray(cols[b : b + batch_size]) - halo
            x = torch.from_numpy(np.ascontiguousarray(windows[:, r, c].transpose(1, 0, 2, 3)))
            x = x.to(dev).float()
            p = None
            for member in members:
                xin = torch.stack([_prepare(member, xi) for xi in x])
                pk = torch.softmax(member.model(xin).float() / float(member.temperature), dim=1)
                p = pk if p is None else p + pk
            out.append((p / len(members)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 8), np.float32)
