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

from glacierfacies.data.normalisation import apply_minmax
from glacierfacies.model.member import Member

NODATA = 255


Normaliser = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DensePrediction:
    """Per-pixel result: class (uint8, 255 nodata), confidence (float32, NaN nodata).

    `confidence` is the (ensemble, calibrated) probability of the predicted class; `probs`
    (n_classes, H, W) float32 is only filled on request (it is 8x the size of the map).
    """

    classes: np.ndarray
    confidence: np.ndarray
    probs: np.ndarray | None = None
    #: (n_members, H, W) uint8: each ensemble member's own class (255 nodata), with `probs`
    #: for ensembles of two or more; `products` takes the members' spread into its
    #: uncertainties (the model error the calibrated probabilities of one mean do not hold)
    member_classes: np.ndarray | None = None
    tiles_run: int = 0
    tiles_skipped: int = 0
    stats: dict = field(default_factory=dict)


def auto_device(device: str | torch.device | None) -> str:
    """'auto' (or None) -> 'cuda' when CUDA is available, else 'cpu'; other names as given."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from 'auto' / 'cpu' / 'cuda' / 'cuda:N' ('auto': CUDA when present);
    ValueError if unknown or unavailable."""
    name = auto_device(device)
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:") or name == "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
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


def _prepare_input(member: Member, x: torch.Tensor) -> torch.Tensor:
    """Select features, min-max normalise, fill non-finite with 0 (those windows are masked).

    Works on (F, H, W) and (B, F, H, W). The normalisation is `patches.apply_minmax`, the
    one the datasets use, so maps see what training saw.
    """
    if member.feature_index is not None:
        x = x[..., list(member.feature_index), :, :]
    if member.minimum is not None:
        x = apply_minmax(x, {"min": member.minimum, "max": member.maximum})
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


@dataclass
class DenseOptions:
    """Speed settings of `dense_predict`; every setting gives the same map (fp32: <= 1e-5).

    `None` means: the measured best for the device (docs/benchmarks.md, H100).
    - fuse_bn: fold BatchNorm into the conv weights (`TwoScaleCNN.fused_for_inference`).
    - phase_split: run the 3-dilated coarse layers as undilated convs on the 9 phase grids
      (None: off; on the H100 the faster convs did not pay for the extra copies).
    - pad_channels: zero-pad input channels to a multiple of this (None: 8 on CUDA, as
      measured; the gain over 11 channels is within noise on the H100; 1 elsewhere).
    - balanced_tiles: equal tiles of at most `tile_size` (a 10980 raster with tile 2048 runs
      6 tiles of 1830, not 6 of 2048 of which the last is mostly padding).
    - pool: stride-1 max-pool implementation of the dense net (None: 'slices' on CUDA
      eager, where F.max_pool2d also writes int64 indices; 'pool' elsewhere and when
      compiled, as inductor lowers it without indices).
    - overlap_copies: copy results to the host asynchronously, one batch behind the GPU.
    - compile / compile_mode: `torch.compile` the network + softmax: ~1.5x faster on the
      H100 but pays a compile (~20 s cold, ~4 s with inductor's disk cache) per tile shape
      and process, so it is for batch runs; the compiled function is cached on the Member.
    """

    fuse_bn: bool = True
    phase_split: bool | None = None
    pad_channels: int | None = None
    balanced_tiles: bool = True
    pool: str | None = None
    overlap_copies: bool = True
    compile: bool = False
    compile_mode: str | None = None


def _window_bad(bad: torch.Tensor, s: int) -> torch.Tensor:
    """(B, h, w) bad cells -> (B, h-s+1, w-s+1): any bad cell in the s x s window (separable)."""
    b = bad[:, None].float()
    b = F.max_pool2d(F.max_pool2d(b, (s, 1), stride=1), (1, s), stride=1)
    return b[:, 0] > 0


def _runner(member: Member, dev: torch.device, opts: DenseOptions, autocast_dtype,
            phase_split: bool, pad: int, pool: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, C, h, w) prepared input -> calibrated probabilities (B, h-S+1, w-S+1, n_classes)."""
    key = (str(dev), opts.fuse_bn, phase_split, pad, pool, opts.compile, opts.compile_mode,
           autocast_dtype, float(member.temperature), id(member.model))
    if opts.compile and key in member._compiled:
        return member._compiled[key]
    net = member.model.eval().to(dev)
    if opts.fuse_bn and hasattr(net, "fused_for_inference"):
        net = net.fused_for_inference(pad_inputs_to=pad)
        if dev.type == "cuda":  # a private copy: its weights may change layout
            net = net.to(memory_format=torch.channels_last)
    temperature = float(member.temperature)
    kwargs = {"phase_split": True} if phase_split else {}
    if pool != "pool":
        kwargs["pool"] = pool

    per_patch = bool(getattr(net, "per_patch", False))

    def run(x: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        # a per-patch model (model.reference) computes only the pixels that are mapped
        kw = {**kwargs, "where": where} if per_patch else kwargs
        if autocast_dtype is None:
            logits = net.dense_logits(x, **kw)
        else:
            with torch.autocast(dev.type, dtype=autocast_dtype):
                logits = net.dense_logits(x, **kw)
        return torch.softmax(logits.permute(0, 2, 3, 1).float() / temperature, dim=-1)

    if opts.compile:
        run = torch.compile(run, mode=opts.compile_mode, dynamic=False)
        member._compiled[key] = run
    return run


def prescale_stats_of(features: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor | None
                      ) -> dict[str, tuple[float, float]]:
    """The reference's scene-wise pre-scaling constants: elevation (min, max) inside the
    glacier mask, proximity (0, max) over the scene (apply.py of Maslov et al.)."""
    from glacierfacies.features import FEATURE_NAMES

    feats = _as_tensor(features)
    out: dict[str, tuple[float, float]] = {}
    z = feats[FEATURE_NAMES.index("elevation")]
    zin = z[_as_tensor(mask).bool()] if mask is not None else z.reshape(-1)
    zin = zin[torch.isfinite(zin)]
    if zin.numel():
        out["elevation"] = (float(zin.min()), float(zin.max()))
    prox = feats[FEATURE_NAMES.index("proximity")]
    prox = prox[torch.isfinite(prox)]
    if prox.numel():
        out["proximity"] = (0.0, float(prox.max()))
    return out


def prescaled_members(members: Sequence[Member], features: np.ndarray | torch.Tensor,
                      mask: np.ndarray | torch.Tensor | None,
                      stats: dict[str, tuple[float, float]] | None) -> list[Member]:
    """Members whose pre-scaling is folded into their min-max: x' = (x - a) / (b - a), then
    (x' - lo) / (hi - lo) is one min-max with min a + lo (b - a), max a + hi (b - a)."""
    import dataclasses

    from glacierfacies.features import FEATURE_NAMES

    if not any(m.prescale for m in members):
        return list(members)
    if stats is None:
        stats = prescale_stats_of(features, mask)
    out = []
    for m in members:
        if not m.prescale or m.minimum is None:
            out.append(m)
            continue
        lo, hi = list(m.minimum), list(m.maximum)
        idx = list(m.feature_index) if m.feature_index is not None else list(
            range(len(FEATURE_NAMES)))
        for name in m.prescale:
            fi = FEATURE_NAMES.index(name)
            if fi not in idx:
                continue
            if name not in stats:
                raise ValueError(f"no valid {name} values to pre-scale for the reference model")
            a, b = stats[name]
            span = (b - a) if b != a else 1.0
            k = idx.index(fi)
            lo[k], hi[k] = a + lo[k] * span, a + hi[k] * span
        out.append(dataclasses.replace(m, minimum=lo, maximum=hi, prescale=None))
    return out


def tile_shape(height: int, width: int, tile_size: int, balanced: bool = True) -> tuple[int, int]:
    """Output tile (h, w): at most tile_size; balanced = equal tiles covering the raster."""
    th, tw = min(tile_size, height), min(tile_size, width)
    if balanced:
        th = -(-height // -(-height // th))
        tw = -(-width // -(-width // tw))
    return th, tw


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
    options: DenseOptions | None = None,
    observed: np.ndarray | torch.Tensor | None = None,
    prescale_stats: dict[str, tuple[float, float]] | None = None,
) -> DensePrediction:
    """Classify every pixel of `features` (F, H, W) where `mask` is True, tile by tile.

    A pixel is classified when every feature the models use (the union of the members'
    `feature_index`) is finite over its S x S window, so a DEM void does not blank the
    window of a spectral-only model. `valid` (H, W) marks usable input pixels over the
    window too (all features); `observed` (H, W) is checked at the pixel itself only (the
    product mask: a masked pixel is never classified, its neighbours are). Output tiles
    are at most `tile_size` square and read with a halo of S // 2; identical results for
    every tile size. `precision` 'bf16' uses autocast on CUDA (fast, not exact). `options`
    tunes speed only (`DenseOptions`). Members with a `prescale` (the paper's models) get
    their scene-wise pre-scaling from `prescale_stats` (`prescale_stats_of`), else from
    these features inside `mask`.
    """
    members = [members] if isinstance(members, Member) else list(members)
    if not members:
        raise ValueError("no model given")
    sizes = {m.patch_size for m in members}
    if len(sizes) != 1:
        raise ValueError(f"ensemble members have different patch sizes {sorted(sizes)}")
    members = prescaled_members(members, features, mask, prescale_stats)
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if tile_size < 1:
        raise ValueError(f"tile size must be >= 1, got {tile_size}")
    dev = resolve_device(device)
    opts = options or DenseOptions()
    cuda = dev.type == "cuda"
    phase_split = False if opts.phase_split is None else bool(opts.phase_split)
    pool = opts.pool or ("slices" if cuda and not opts.compile else "pool")
    pad = (8 if cuda else 1) if opts.pad_channels is None else max(1, int(opts.pad_channels))
    s = sizes.pop()
    halo = s // 2
    feats = _as_tensor(features)
    if feats.ndim != 3:
        raise ValueError(f"features must be (F, H, W), got {tuple(feats.shape)}")
    _, H, W = feats.shape
    mask_t = None if mask is None else _as_tensor(mask).bool()
    valid_t = None if valid is None else _as_tensor(valid).bool()
    obs_t = None if observed is None else _as_tensor(observed).bool()
    if any(t is not None and t.shape != (H, W) for t in (mask_t, valid_t, obs_t)):
        raise ValueError("mask, valid and observed must have the features' (H, W) shape")
    used = sorted({int(i) for m in members for i in (
        m.feature_index if m.feature_index is not None else range(feats.shape[0]))})
    used_t = None if used == list(range(feats.shape[0])) else torch.tensor(used)
    n_classes = int(getattr(members[0].model, "n_classes", 8))
    autocast_dtype = None
    if precision != "fp32":
        autocast_dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    runners = [_runner(m, dev, opts, autocast_dtype, phase_split, pad, pool) for m in members]
    c_in = [
        -(-(len(m.feature_index) if m.feature_index is not None else feats.shape[0]) // pad)
        * pad for m in members
    ]

    th, tw = tile_shape(H, W, tile_size, opts.balanced_tiles)
    # every pixel lies in exactly one tile, and each tile's block is written whole (run) or
    # filled with nodata (skipped), so the outputs need no initial fill
    classes = np.empty((H, W), np.uint8)
    confidence = np.empty((H, W), np.float32)
    probs = np.empty((n_classes, H, W), np.float32) if return_probs else None
    n_members = len(members)
    member_cls = (np.empty((n_members, H, W), np.uint8) if return_probs and n_members > 1
                  else None)

    todo: list[tuple[int, int]] = []
    skipped = 0
    for r0, c0 in tile_origins(H, W, th, tw):
        if mask_t is None or bool(mask_t[r0 : r0 + th, c0 : c0 + tw].any()):
            todo.append((r0, c0))
        else:
            skipped += 1
            classes[r0 : r0 + th, c0 : c0 + tw] = NODATA
            confidence[r0 : r0 + th, c0 : c0 + tw] = np.nan
            if probs is not None:
                probs[:, r0 : r0 + th, c0 : c0 + tw] = np.nan
            if member_cls is not None:
                member_cls[:, r0 : r0 + th, c0 : c0 + tw] = NODATA

    def flush(item: tuple) -> None:
        batch, host, event = item
        if event is not None:
            event.synchronize()
        for i, (r0, c0) in enumerate(batch):
            hh, ww = min(th, H - r0), min(tw, W - c0)
            classes[r0 : r0 + hh, c0 : c0 + ww] = host[0][i, :hh, :ww].numpy()
            confidence[r0 : r0 + hh, c0 : c0 + ww] = host[1][i, :hh, :ww].numpy()
            if probs is not None:
                probs[:, r0 : r0 + hh, c0 : c0 + ww] = host[2][i, :hh, :ww].permute(2, 0, 1).numpy()
            if member_cls is not None:
                member_cls[:, r0 : r0 + hh, c0 : c0 + ww] = host[3][i, :, :hh, :ww].numpy()

    bar = None
    if progress:
        from glacierfacies.progress import tqdm

        bar = tqdm(total=len(todo), desc="tiles", unit="tile")
    lag = 1 if (cuda and opts.overlap_copies) else 0
    pending: list[tuple] = []
    old_benchmark = torch.backends.cudnn.benchmark
    if cuda:
        torch.backends.cudnn.benchmark = True  # one tile shape per run: autotune pays off
    try:
        with torch.inference_mode():
            for b in range(0, len(todo), batch_size):
                batch = todo[b : b + batch_size]
                hin, win = th + 2 * halo, tw + 2 * halo
                x = torch.stack([
                    _cut(feats, r0 - halo, c0 - halo, hin, win, math.nan) for r0, c0 in batch
                ]).to(dev, non_blocking=True).float()
                bad = ~torch.isfinite(x if used_t is None else x[:, used_t.to(x.device)]
                                      ).all(dim=1)
                if valid_t is not None:
                    v = torch.stack([
                        _cut(valid_t, r0 - halo, c0 - halo, hin, win, False) for r0, c0 in batch
                    ])
                    bad |= ~v.to(dev)
                # a pixel is usable only if its whole S x S window is good
                ok = ~_window_bad(bad, s)
                if mask_t is not None:
                    ok &= torch.stack([_cut(mask_t, r0, c0, th, tw, False) for r0, c0 in batch]
                                      ).to(dev)
                if obs_t is not None:
                    ok &= torch.stack([_cut(obs_t, r0, c0, th, tw, False) for r0, c0 in batch]
                                      ).to(dev)
                p = None
                member_k = []
                for member, run, c in zip(members, runners, c_in, strict=True):
                    xin = _prepare_input(member, x)
                    if c > xin.shape[1]:
                        xin = torch.cat([xin, xin.new_zeros((xin.shape[0], c - xin.shape[1],
                                                             hin, win))], dim=1)
                    if cuda:
                        xin = xin.contiguous(memory_format=torch.channels_last)
                    pk = run(xin, ok)
                    if member_cls is not None:
                        member_k.append(torch.where(ok, pk.argmax(dim=-1).to(torch.uint8),
                                                    NODATA))
                    p = pk if p is None else p + pk
                if len(members) > 1:
                    p = p / len(members)
                conf, cls = p.max(dim=-1)
                outs = [torch.where(ok, cls.to(torch.uint8), NODATA),
                        torch.where(ok, conf, math.nan)]
                if probs is not None:
                    outs.append(torch.where(ok[..., None], p, math.nan))
                if member_cls is not None:
                    outs.append(torch.stack(member_k, dim=1))  # (B, k, h, w)
                host = [t.to("cpu", non_blocking=lag > 0) for t in outs]
                event = None
                if lag:
                    event = torch.cuda.Event()
                    event.record()
                pending.append((batch, host, event))
                while len(pending) > lag:
                    flush(pending.pop(0))
                if bar is not None:
                    bar.update(len(batch))
            while pending:
                flush(pending.pop(0))
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        if bar is not None:
            bar.close()
    return DensePrediction(
        classes, confidence, probs, member_classes=member_cls, tiles_run=len(todo),
        tiles_skipped=skipped,
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
                xin = torch.stack([_prepare_input(member, xi) for xi in x])
                pk = torch.softmax(member.model(xin).float() / float(member.temperature), dim=1)
                p = pk if p is None else p + pk
            out.append((p / len(members)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 8), np.float32)

