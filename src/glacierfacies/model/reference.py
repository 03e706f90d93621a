"""The paper's own network with its own semantics: "same" zero padding, one 33 x 33 patch per pixel.

Maslov et al.'s Keras model pads every 3 x 3 convolution with zeros at the patch edge, so
its output for a pixel depends on where that pixel's patch ends: it is not a valid-
convolution network, and one dense pass over a scene does not give its per-patch outputs.
`ReferenceCNN.forward` is the per-patch model, layer for layer as Keras runs it (eval mode).
`ReferenceCNN.dense_logits` gives exactly the same logits for every pixel of a raster without
cutting patches: it shares the work between neighbouring patches (docs/models.md):

- scale 1: a layer-l value at patch cell (a, b) depends on the patch only through the
  edges within l px of the cell; all other cells equal one dense pass. For each "edge state"
  (T0..T2 = 0..2 px below the top edge, I = interior, B2..B0 above the bottom; likewise
  for columns) one full-raster map is computed, from the maps of the layer below with the
  taps that cross the edge dropped: 3 + 24 + 56 = 83 conv-layer passes instead of 3 per
  patch-free pixel, and none per patch;
- the 3 x 3 / stride 3 max-pool of those maps gives 9 pooled maps (top/middle/bottom x
  left/middle/right), from which each patch's 11 x 11 scale-2 grid is gathered by strides;
- scale 2 (3 "same" convs on the 11 x 11 grid, centre cell, global max) and the head run
  per patch, batched, and only for the pixels asked for (`where`).

Pure torch; no file I/O (the Keras HDF5 reader is `model.reference_import`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REFERENCE_CLASSES", "REFERENCE_FEATURE_SETS", "ReferenceCNN"]

#: the network's output order (reference README), in our class names
REFERENCE_CLASSES = ("ice", "snow", "debris", "firn", "shadow", "refrozen-like", "water",
                     "cloud")
#: the four published feature sets, inputs in the reference's order (our feature names)
REFERENCE_FEATURE_SETS: dict[int, tuple[str, ...]] = {
    1: ("blue", "green", "red", "nir", "swir1", "swir2"),
    2: ("blue", "green", "red", "nir", "swir1", "swir2", "elevation", "slope"),
    3: ("blue", "green", "red", "nir", "swir1", "swir2", "elevation", "slope",
        "shadow_mask", "hillshade"),
    4: ("blue", "green", "red", "nir", "swir1", "swir2", "elevation", "slope",
        "shadow_mask", "hillshade", "proximity"),
}

PATCH = 33  # the reference's patch side
DEPTH = 3  # conv blocks per scale
POOL = 3  # max-pool size and stride
GRID = PATCH // POOL  # 11: the scale-2 grid
#: how far beyond its patch an output of the dense approximation reads: 3 dilated scale-2
#: convs reach 3 pool cells of 3 px (9 px) past the grid, scale 1 another 3 px
APPROX_MARGIN = DEPTH * POOL + DEPTH


class _Block(nn.Module):
    """Conv 3 x 3 ("same" zero padding, bias) + BatchNorm (Keras eps 1e-3) + ELU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.bn(self.conv(x)))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of conv and eval-mode BatchNorm folded into one affine conv."""
        bn = self.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = bn.bias.double() + (self.conv.bias.double() - bn.running_mean.double()) * scale
        w = self.conv.weight.double() * scale.view(-1, 1, 1, 1)
        return w.to(self.conv.weight.dtype), bias.to(self.conv.weight.dtype)


def _states(layer: int) -> list[tuple[str, int]]:
    """Distinct edge states of one axis at `layer` (0 = input): T0..T(l-1), I, B(l-1)..B0."""
    return ([("T", d) for d in range(layer)] + [("I", 0)]
            + [("B", d) for d in reversed(range(layer))])


def _source(state: tuple[str, int], tap: int, layer: int) -> tuple[str, int] | None:
    """The state at `layer - 1` that tap offset `tap` (-1, 0, 1) of a `layer` cell reads; None
    where the tap falls on the zero padding outside the patch."""
    kind, d = state
    if kind == "I":
        return ("I", 0)
    toward_edge = -1 if kind == "T" else 1
    nd = d - 1 if tap == toward_edge else d + 1 if tap == -toward_edge else d
    if nd < 0:
        return None
    return (kind, nd) if nd < layer - 1 else ("I", 0)


def _tap_groups(state: tuple[str, int], layer: int) -> list[tuple[tuple[str, int], int, int]]:
    """Contiguous runs of taps (first, last offset) that read one source state."""
    groups: list[tuple[tuple[str, int], int, int]] = []
    for tap in (-1, 0, 1):
        src = _source(state, tap, layer)
        if src is None:
            continue
        if groups and groups[-1][0] == src and groups[-1][2] == tap - 1:
            groups[-1] = (src, groups[-1][1], tap)
        else:
            groups.append((src, tap, tap))
    return groups


def _partial_conv(x: torch.Tensor, w: torch.Tensor, rows: tuple[int, int],
                  cols: tuple[int, int]) -> torch.Tensor:
    """sum over taps (dr, dc) in the given offset ranges of w[dr, dc] * x(. + dr, . + dc),
    same size as x (zero outside x; those cells are never read by a patch inside x)."""
    (r0, r1), (c0, c1) = rows, cols
    k = w[:, :, r0 + 1 : r1 + 2, c0 + 1 : c1 + 2]
    xp = F.pad(x, (1, 1, 1, 1))
    h, wd = x.shape[-2:]
    xp = xp[..., 1 + r0 : 1 + r0 + h + (r1 - r0), 1 + c0 : 1 + c0 + wd + (c1 - c0)]
    # channels-last: oneDNN (CPU, 4-6x) and cuDNN run these convs far faster in NHWC
    return F.conv2d(xp.contiguous(memory_format=torch.channels_last),
                    k.contiguous(memory_format=torch.channels_last))


class ReferenceCNN(nn.Module):
    """Maslov et al.'s two-scale CNN (Keras semantics); `forward` on (B, F, 33, 33) patches."""

    per_patch = True  # inference passes `where` to dense_logits (mapping.inference)
    #: "exact": per-patch semantics (default); "dense": the approximation `approx_logits`
    MODES = ("exact", "dense")

    def __init__(self, n_features: int, n_classes: int = 8, width: int = 64,
                 dense_width: int = 32, patch_size: int = PATCH):
        super().__init__()
        if patch_size != PATCH:
            raise ValueError(f"the reference network takes {PATCH} x {PATCH} patches")
        self.kwargs = dict(n_features=n_features, n_classes=n_classes, width=width,
                           dense_width=dense_width, patch_size=patch_size)
        self.n_features, self.n_classes, self.patch_size = n_features, n_classes, patch_size
        self.fine = nn.ModuleList(_Block(n_features if i == 0 else width, width)
                                  for i in range(DEPTH))
        self.coarse = nn.ModuleList(_Block(width, width) for _ in range(DEPTH))
        self.dense1 = nn.Linear(3 * width, dense_width)
        self.dense2 = nn.Linear(dense_width, dense_width)
        self.out = nn.Linear(dense_width, n_classes)
        self.mode = "exact"

    @property
    def receptive_halo(self) -> int:
        return PATCH // 2

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, 192) [centre 1, centre 2, global max] -> logits (dropout is identity in eval)."""
        h = F.elu(self.dense1(feats))
        h = F.elu(self.dense2(h))
        return self.out(h)

    def _scale2(self, grid: torch.Tensor, folded: bool = False) -> torch.Tensor:
        """(N, C, 11, 11) pooled grids -> (N, 2C) [centre, global max] after the coarse convs
        (`folded`: BatchNorm folded into the convs, channels-last; the fast inference form)."""
        g = grid
        if folded:
            g = g.contiguous(memory_format=torch.channels_last)
        for block in self.coarse:
            if folded:
                w, b = block.folded()
                w = w.to(g.dtype).contiguous(memory_format=torch.channels_last)
                g = F.elu(F.conv2d(g, w, b.to(g.dtype), padding=1))
            else:
                g = block(g)
        c = g.shape[-1] // 2
        return torch.cat([g[:, :, c, c], g.amax(dim=(-2, -1))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) of each (B, F, 33, 33) patch, as the Keras model computes them."""
        if x.ndim != 4 or x.shape[1] != self.n_features or tuple(x.shape[-2:]) != (PATCH, PATCH):
            raise ValueError(f"expected patches (B, {self.n_features}, {PATCH}, {PATCH}), "
                             f"got {tuple(x.shape)}")
        h = x
        for block in self.fine:
            h = block(h)
        c = PATCH // 2
        centre1 = h[:, :, c, c]
        s2 = self._scale2(F.max_pool2d(h, POOL, stride=POOL))
        return self.head(torch.cat([centre1, s2], dim=1))

    # -- exact whole-raster pass ------------------------------------------------------------

    @staticmethod
    def _layer_map(maps: dict[tuple, torch.Tensor], w: torch.Tensor, b: torch.Tensor,
                   rs: tuple[str, int], cs: tuple[str, int], layer: int) -> torch.Tensor:
        """One edge-state map of `layer` from the maps of the layer below."""
        acc = None
        for rsrc, r0, r1 in _tap_groups(rs, layer):
            for csrc, c0, c1 in _tap_groups(cs, layer):
                y = _partial_conv(maps[(rsrc, csrc)], w, (r0, r1), (c0, c1))
                acc = y if acc is None else acc + y
        return F.elu(acc + b.view(1, -1, 1, 1))

    def _fine_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[tuple[str, str], torch.Tensor]]:
        """Scale 1 over the raster x (1, F, H, W): the interior layer-3 map (the patches'
        centre cells) and the 9 pooled maps Q[rc, cc], Q(x, y) = the max over the 3 x 3 pool
        cell with top-left (x, y) for pool cells on a patch's top / middle / bottom row and
        left / middle / right column. Layer-3 maps are folded into Q one at a time."""
        maps = {(("I", 0), ("I", 0)): x}
        for layer, block in enumerate(self.fine[:-1], start=1):
            w, b = block.folded()
            maps = {(rs, cs): self._layer_map(maps, w.to(x.dtype), b.to(x.dtype), rs, cs, layer)
                    for rs in _states(layer) for cs in _states(layer)}
        layer = len(self.fine)
        w, b = self.fine[-1].folded()
        w, b = w.to(x.dtype), b.to(x.dtype)
        h, wd = x.shape[-2:]
        # which pooled maps a layer-3 state feeds, and at which shifts u (0..2) inside the cell
        def uses(state: tuple[str, int]) -> list[tuple[str, int]]:
            kind, d = state
            if kind == "I":
                return [("I", 0), ("I", 1), ("I", 2)]
            return [(kind, d if kind == "T" else POOL - 1 - d)]

        pooled: dict[tuple[str, str], torch.Tensor] = {}
        centre = None
        for rs in _states(layer):
            for cs in _states(layer):
                m = self._layer_map(maps, w, b, rs, cs, layer)
                if rs == ("I", 0) and cs == ("I", 0):
                    centre = m
                mp = F.pad(m, (0, POOL - 1, 0, POOL - 1))
                for rc, u in uses(rs):
                    for cc, v in uses(cs):
                        shifted = mp[..., u : u + h, v : v + wd]
                        q = pooled.get((rc, cc))
                        pooled[(rc, cc)] = shifted if q is None else torch.maximum(q, shifted)
        return centre, pooled

    @staticmethod
    def _gather_grids(pooled: dict[tuple[str, str], torch.Tensor], rows: torch.Tensor,
                      cols: torch.Tensor) -> torch.Tensor:
        """(N, C, 11, 11) scale-2 grids of the patches with top-left (rows, cols)."""
        p = torch.arange(GRID, device=rows.device) * POOL
        pr = rows[:, None] + p[None]  # (N, 11) map rows of the pool cells
        pc = cols[:, None] + p[None]
        n, c = rows.shape[0], pooled[("I", "I")].shape[1]
        grid = torch.empty((n, c, GRID, GRID), dtype=pooled[("I", "I")].dtype,
                           device=rows.device)
        spans = {"T": slice(0, 1), "I": slice(1, GRID - 1), "B": slice(GRID - 1, GRID)}
        for rc in ("T", "I", "B"):
            for cc in ("T", "I", "B"):
                q = pooled[(rc, cc)][0]  # (C, H, W)
                rr = pr[:, spans[rc]]
                cc_ = pc[:, spans[cc]]
                vals = q[:, rr[:, :, None], cc_[:, None, :]]  # (C, N, r, c)
                grid[:, :, spans[rc], spans[cc]] = vals.permute(1, 0, 2, 3)
        return grid

    def dense_logits(self, x: torch.Tensor, where: torch.Tensor | None = None,
                     strip_rows: int | None = None, batch: int | None = None,
                     **_ignored) -> torch.Tensor:
        """Logits (B, n_classes, H-32, W-32) of the patch of every pixel whose 33 x 33 window
        fits in x (B, F, H, W): cell (i, j) is the patch with top-left (i, j), exactly as
        `forward` on that patch (float rounding aside). `where` (B, H-32, W-32) bool limits
        the work to those pixels (others get logits 0). Extra input channels beyond
        n_features (zero padding of the inference path) are ignored. The raster is processed
        in strips of `strip_rows` output rows (None: a size that keeps memory near 1 GB); with
        `where`, in blocks of strip_rows x strip_rows (None: 256) cropped to the box of their
        wanted pixels, so a sparse mask costs the area of its boxes only."""
        if x.ndim != 4 or x.shape[1] < self.n_features:
            raise ValueError(f"expected (B, {self.n_features}, H, W), got {tuple(x.shape)}")
        if self.mode == "dense":
            return self.approx_logits(x, where=where, block=strip_rows)
        x = x[:, : self.n_features]
        b, _, h, w = x.shape
        if h < PATCH or w < PATCH:
            raise ValueError(f"input {(h, w)} is smaller than the patch size {PATCH}")
        oh, ow = h - PATCH + 1, w - PATCH + 1
        width = self.fine[0].conv.out_channels
        if strip_rows is None and where is not None:
            strip_rows = 256  # blocks of 256 x 256, each cropped to its wanted pixels
        if strip_rows is None:  # ~35 full maps of `width` channels live at once per strip
            budget = (16 << 30) if x.is_cuda else (1 << 30)
            per_row = 40 * width * w * x.element_size()
            strip_rows = max(8, int(budget // per_row) - (PATCH - 1))
        if batch is None:  # patches per scale-2 batch: ~0.5 GB (CPU) / 4 GB (GPU) of grids
            batch = 131072 if x.is_cuda else 16384
        out = x.new_zeros((b, self.n_classes, oh, ow), dtype=torch.float32)
        # with `where`, each strip is cut into column blocks of about strip_rows and each
        # block cropped to the box of its wanted pixels before the shared pass: sparse masks
        # (glaciers are ~5 % of a tile) cost the area of their boxes, not of the raster
        block_cols = ow if where is None else strip_rows
        for k in range(b):
            for r0 in range(0, oh, strip_rows):
                r1 = min(oh, r0 + strip_rows)
                for c0 in range(0, ow, block_cols):
                    c1 = min(ow, c0 + block_cols)
                    if where is None:
                        rr0, rr1, cc0, cc1, todo = r0, r1, c0, c1, None
                    else:
                        todo = where[k, r0:r1, c0:c1]
                        rows_any = torch.nonzero(todo.any(dim=1)).flatten()
                        if rows_any.numel() == 0:
                            continue
                        cols_any = torch.nonzero(todo.any(dim=0)).flatten()
                        rr0, rr1, cc0, cc1 = r0, r1, c0, c1
                        if not x.is_cuda:  # on a GPU one block shape keeps cuDNN's autotune
                            rr0, rr1 = r0 + int(rows_any[0]), r0 + int(rows_any[-1]) + 1
                            cc0, cc1 = c0 + int(cols_any[0]), c0 + int(cols_any[-1]) + 1
                            todo = where[k, rr0:rr1, cc0:cc1]
                    self._block_logits(x[k : k + 1, :, rr0 : rr1 + PATCH - 1,
                                         cc0 : cc1 + PATCH - 1], todo, batch,
                                       out[k, :, rr0:rr1, cc0:cc1])
        return out

    def _block_logits(self, xs: torch.Tensor, todo: torch.Tensor | None, batch: int,
                      out: torch.Tensor) -> None:
        """Logits of the patches of block xs (1, F, h+32, w+32) into out (n_classes, h, w),
        only where todo (h, w) is True (all when None)."""
        centre, pooled = self._fine_pass(xs)
        centre = centre[0]
        h, w = out.shape[1:]
        if todo is None:
            ii, jj = torch.meshgrid(torch.arange(h, device=xs.device),
                                    torch.arange(w, device=xs.device), indexing="ij")
            ii, jj = ii.reshape(-1), jj.reshape(-1)
        else:
            ii, jj = torch.nonzero(todo, as_tuple=True)
        for s in range(0, ii.numel(), batch):
            i, j = ii[s : s + batch], jj[s : s + batch]
            c1 = centre[:, i + PATCH // 2, j + PATCH // 2].T
            s2 = self._scale2(self._gather_grids(pooled, i, j), folded=True)
            logits = self.head(torch.cat([c1, s2], dim=1))
            out[:, i, j] = logits.float().T

    def approx_logits(self, x: torch.Tensor, where: torch.Tensor | None = None,
                      block: int | None = None) -> torch.Tensor:
        """The dense approximation: the same weights as one valid pass over the raster,
        logits (B, n_classes, H-32, W-32) laid out as `dense_logits`. Every conv sees the
        raster's real neighbours where the reference sees its patch's zero padding: scale 1
        is three 3 x 3 convs over the raster, the 11 x 11 grid of pool cells becomes a
        stride-1 3 x 3 max-pool read at dilation 3 (scale-2 convs dilated by 3, the global
        max an 11 x 11 max-pool at dilation 3). ~0.4 MFLOP per pixel instead of ~30; how far
        it is from the exact path is measured on real scenes (docs/models.md). An output
        reads the inputs from 12 px above / left of its patch to 12 px below / right of it,
        so with `where` the raster is run in blocks of `block` (None: 256) outputs, each
        with that margin, skipped when it holds no wanted pixel: the same values as one pass
        over the whole raster, at the cost of the glacier's blocks."""
        if where is not None:
            return self._approx_blocks(x, where, block or 256)
        return self._approx(x)

    def _approx_blocks(self, x: torch.Tensor, where: torch.Tensor, block: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        oh, ow = h - PATCH + 1, w - PATCH + 1
        m = APPROX_MARGIN
        out = x.new_zeros((x.shape[0], self.n_classes, oh, ow), dtype=torch.float32)
        for k in range(x.shape[0]):
            for r0 in range(0, oh, block):
                r1 = min(oh, r0 + block)
                for c0 in range(0, ow, block):
                    c1 = min(ow, c0 + block)
                    if not bool(where[k, r0:r1, c0:c1].any()):
                        continue
                    a0, a1 = max(0, r0 - m), min(h, r1 + PATCH - 1 + m)
                    b0, b1 = max(0, c0 - m), min(w, c1 + PATCH - 1 + m)
                    y = self._approx(x[k : k + 1, :, a0:a1, b0:b1])
                    out[k, :, r0:r1, c0:c1] = y[0, :, r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
        return out

    def _approx(self, x: torch.Tensor) -> torch.Tensor:
        """One dense-approximation pass over all of x (B, F, H, W)."""
        x = x[:, : self.n_features]
        if x.shape[-2] < PATCH or x.shape[-1] < PATCH:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the patch size {PATCH}")
        h = x
        for block in self.fine:
            w, b = block.folded()
            h = F.elu(F.conv2d(h, w.to(h.dtype), b.to(h.dtype), padding=1))
        half = PATCH // 2
        centre1 = h[:, :, half:-half, half:-half]
        g = F.max_pool2d(h, POOL, stride=1)  # g[y, x]: the pool cell with top-left (y, x)
        for block in self.coarse:
            w, b = block.folded()
            g = F.elu(F.conv2d(g, w.to(g.dtype), b.to(g.dtype), padding=POOL, dilation=POOL))
        c2 = (GRID // 2) * POOL  # the grid's centre cell of the patch with top-left (i, j)
        oh, ow = x.shape[-2] - PATCH + 1, x.shape[-1] - PATCH + 1
        centre2 = g[:, :, c2 : c2 + oh, c2 : c2 + ow]
        gmax = F.max_pool2d(g, GRID, stride=1, dilation=POOL)
        feats = torch.cat([centre1, centre2, gmax], dim=1)
        z = F.elu(F.conv2d(feats, self.dense1.weight[:, :, None, None].to(feats.dtype),
                           self.dense1.bias.to(feats.dtype)))
        z = F.elu(F.conv2d(z, self.dense2.weight[:, :, None, None].to(z.dtype),
                           self.dense2.bias.to(z.dtype)))
        return F.conv2d(z, self.out.weight[:, :, None, None].to(z.dtype),
                        self.out.bias.to(z.dtype)).float()

    def patch_logits(self, x: torch.Tensor, rows: Sequence[int] | torch.Tensor,
                     cols: Sequence[int] | torch.Tensor, batch: int = 4096) -> torch.Tensor:
        """Logits (N, n_classes) of the patches with top-left (rows, cols) of x (1, F, H, W),
        cut with `unfold` and run through `forward` (the plain exact way; for checks)."""
        rows = torch.as_tensor(rows, device=x.device)
        cols = torch.as_tensor(cols, device=x.device)
        x = x[:, : self.n_features]
        out = []
        for s in range(0, rows.numel(), batch):
            r, c = rows[s : s + batch], cols[s : s + batch]
            ar = torch.arange(PATCH, device=x.device)
            pr = (r[:, None] + ar)[:, :, None]
            pc = (c[:, None] + ar)[:, None, :]
            patches = x[0][:, pr, pc].permute(1, 0, 2, 3)
            out.append(self.forward(patches))
        return torch.cat(out) if out else x.new_zeros((0, self.n_classes))
