"""The compact two-scale CNN of the paper, with an exact dense (whole-image) pass."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def allowed_patch_sizes(fine_depth: int = 3, coarse_depth: int = 3, up_to: int = 99) -> list[int]:
    """Patch sizes valid for the given depths (1 and 2*fine + 3*P, P odd >= 2*coarse+1)."""
    sizes = [1]
    p = 2 * coarse_depth + 1
    while 2 * fine_depth + 3 * p <= up_to:
        sizes.append(2 * fine_depth + 3 * p)
        p += 2
    return sizes


def pooled_grid_size(patch_size: int, fine_depth: int = 3, coarse_depth: int = 3) -> int:
    """The pooled grid size P of the CNN for `patch_size` (0 for S == 1).

    ValueError if the network cannot take that size; a dataset's own rule (odd, 1..65) is
    `data.patchset.check_patch_size`.
    """
    if patch_size == 1:
        return 0
    rest = patch_size - 2 * fine_depth
    pooled = rest // 3
    if rest <= 0 or rest % 3 or pooled % 2 == 0 or pooled < 2 * coarse_depth + 1:
        raise ValueError(
            f"patch size {patch_size} does not fit the two-scale CNN with fine_depth="
            f"{fine_depth}, coarse_depth={coarse_depth}: it must be 1 or 2*fine_depth + 3*P "
            f"with P odd >= {2 * coarse_depth + 1}, e.g. "
            f"{', '.join(map(str, allowed_patch_sizes(fine_depth, coarse_depth, 60)[1:]))}"
        )
    return pooled


class _ConvBlock(nn.Module):
    """Conv (valid) + BatchNorm + ELU; `dilation` only used by the dense twin."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        if dilation == 1:
            y = self.conv(x)
        else:
            y = F.conv2d(x, self.conv.weight, self.conv.bias, stride=1, padding=0,
                         dilation=dilation)
        return F.elu(self.bn(y))  # bn is an Identity in a fused_for_inference() copy

    def fuse(self) -> None:
        """Fold eval-mode BatchNorm into the conv (w * g / sd, b - mean * g / sd), in float64."""
        if isinstance(self.bn, nn.Identity):
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = bn.bias.double() - bn.running_mean.double() * scale
        if conv.bias is not None:
            bias = bias + conv.bias.double() * scale
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=0,
                          bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
            fused.bias.copy_(bias)
        self.conv, self.bn = fused, nn.Identity()


def _window_max(x: torch.Tensor, n: int, step: int, impl: str) -> torch.Tensor:
    """Valid stride-1 max over an n x n window of taps `step` apart (a dilated max-pool).

    impl 'pool': F.max_pool2d (on CUDA it also writes int64 indices, 4x the bf16 output);
    'window': amax over an as_strided window view (one read, one write);
    'slices': separable torch.maximum of shifted slices.
    """
    if n == 1:
        return x
    if impl == "pool":
        return F.max_pool2d(x, n, stride=1, dilation=step)
    span = (n - 1) * step
    b, c, h, w = x.shape
    oh, ow = h - span, w - span
    if impl == "window":
        # (B, H, W, C) view: the reduced output comes out NHWC, i.e. channels-last
        sb, sc, sh, sw = x.stride()
        win = x.as_strided((b, oh, ow, c, n, n), (sb, sh, sw, sc, step * sh, step * sw))
        return win.amax(dim=(-2, -1)).permute(0, 3, 1, 2)
    if impl == "slices":
        r = x[..., :ow]
        for k in range(1, n):
            r = torch.maximum(r, x[..., k * step : k * step + ow])
        out = r[..., :oh, :]
        for k in range(1, n):
            out = torch.maximum(out, r[..., k * step : k * step + oh, :])
        return out
    raise ValueError(f"unknown max-pool implementation {impl!r}")


def _to_phases(g: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) -> (B*k*k, C, ceil(H/k), ceil(W/k)) channels-last: phase (a, b) holds
    the cells (k*u + a, k*v + b); a k-dilated op on g is an undilated op on every phase."""
    b, c, h, w = g.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    if (hp, wp) != (h, w):  # cells past the end only feed outputs past the end (cropped)
        g = F.pad(g, (0, wp - w, 0, hp - h))
    t = g.permute(0, 2, 3, 1).reshape(b, hp // k, k, wp // k, k, c).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b * k * k, hp // k, wp // k, c).permute(0, 3, 1, 2)


def _from_phases(p: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of `_to_phases` (without the padding): (B*k*k, C, u, v) -> (B, C, k*u, k*v)."""
    bkk, c, u, v = p.shape
    t = p.permute(0, 2, 3, 1).reshape(bkk // (k * k), k, k, u, v, c).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(bkk // (k * k), k * u, k * v, c).permute(0, 3, 1, 2)


class TwoScaleCNN(nn.Module):
    """Two-scale patch classifier; `forward` on (B,F,S,S) patches, `dense_logits` on rasters."""

    def __init__(
        self,
        n_features: int,
        n_classes: int = 8,
        width: int = 64,
        patch_size: int = 33,
        fine_depth: int = 3,
        coarse_depth: int = 3,
        dense_width: int = 32,
        dropout: float = 0.5,
    ):
        super().__init__()
        if n_features < 1 or n_classes < 2 or width < 1 or dense_width < 1:
            raise ValueError("n_features >= 1, n_classes >= 2, width >= 1, dense_width >= 1")
        if fine_depth < 1 or coarse_depth < 0:
            raise ValueError("fine_depth must be >= 1 and coarse_depth >= 0")
        self.pooled_size = pooled_grid_size(patch_size, fine_depth, coarse_depth)
        self.kwargs = dict(
            n_features=n_features, n_classes=n_classes, width=width, patch_size=patch_size,
            fine_depth=fine_depth, coarse_depth=coarse_depth, dense_width=dense_width,
            dropout=dropout,
        )
        self.n_features = n_features
        self.n_classes = n_classes
        self.patch_size = patch_size
        self.spectral = patch_size == 1
        kernel = 1 if self.spectral else 3
        self.fine = nn.ModuleList(
            _ConvBlock(n_features if i == 0 else width, width, kernel) for i in range(fine_depth)
        )
        self.coarse = nn.ModuleList(
            () if self.spectral else (_ConvBlock(width, width, 3) for _ in range(coarse_depth))
        )
        n_head = width if self.spectral else 3 * width
        self.dropout = nn.Dropout(dropout)
        self.dense1 = nn.Linear(n_head, dense_width)
        self.dense2 = nn.Linear(dense_width, dense_width)
        self.out = nn.Linear(dense_width, n_classes)

    @property
    def receptive_halo(self) -> int:
        """Pixels of context each side of a classified pixel (S // 2)."""
        return self.patch_size // 2

    @property
    def coarse_size(self) -> int:
        """Side of the coarse map inside one patch (global max is taken over it)."""
        return self.pooled_size - 2 * len(self.coarse)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        h = self.dropout(h)
        h = F.elu(self.dense1(h))
        h = F.elu(self.dense2(h))
        return self.out(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes) of the centre pixel of each (B, F, S, S) patch."""
        if x.ndim != 4 or x.shape[1] != self.n_features or x.shape[-2:] != (
            self.patch_size, self.patch_size
        ):
            raise ValueError(
                f"expected patches (B, {self.n_features}, {self.patch_size}, {self.patch_size}),"
                f" got {tuple(x.shape)}"
            )
        h = x
        for block in self.fine:
            h = block(h)
        if self.spectral:
            return self._head(h.flatten(1))
        c = h.shape[-1] // 2
        fine_centre = h[:, :, c, c]
        g = F.max_pool2d(h, 3, stride=3)
        for block in self.coarse:
            g = block(g)
        cc = g.shape[-1] // 2
        # global max as a pool, not amax: same value, but its gradient follows the saved
        # argmax; torch.compile's amax backward (x == max) / count gave NaN gradients under
        # bf16 autocast (count 0 after recomputation; docs/benchmarks.md)
        gmax = F.adaptive_max_pool2d(g, 1).flatten(1)
        feats = torch.cat([fine_centre, g[:, :, cc, cc], gmax], dim=1)
        return self._head(feats)

    def fused_for_inference(self, pad_inputs_to: int = 1) -> TwoScaleCNN:
        """An eval-mode copy with every BatchNorm folded into its conv (fewer memory passes).

        Same function up to float rounding (fp32 logits within ~1e-6). `pad_inputs_to` > 1
        zero-pads the first conv's input channels to a multiple of it (e.g. 8: tensor-core
        friendly); `dense_logits` then also takes inputs with that many channels (the extra
        channels meet zero weights, so their values do not matter).
        """
        m = copy.deepcopy(self).eval()
        for block in [*m.fine, *m.coarse]:
            block.fuse()
        first = m.fine[0].conv
        c_in = -(-first.in_channels // pad_inputs_to) * pad_inputs_to
        if c_in != first.in_channels:
            padded = nn.Conv2d(c_in, first.out_channels, first.kernel_size, padding=0, bias=True,
                               device=first.weight.device, dtype=first.weight.dtype)
            with torch.no_grad():
                padded.weight.zero_()
                padded.weight[:, : first.in_channels] = first.weight
                padded.bias.copy_(first.bias)
            m.fine[0].conv = padded
        return m

    @property
    def input_channels(self) -> int:
        """Channels the first conv takes (n_features, or more in a padded fused copy)."""
        return int(self.fine[0].conv.in_channels)

    def dense_logits(self, x: torch.Tensor, phase_split: bool = False, pool: str = "pool"
                     ) -> torch.Tensor:
        """Logits (B, n_classes, H-S+1, W-S+1) of every pixel whose SxS window fits in x.

        Output cell (i, j) is the patch logit of input pixel (i + S//2, j + S//2).
        `phase_split` runs the 3-dilated coarse convs and the global max as undilated ops on
        the 9 phase grids of the pooled map (same values; faster where dilated kernels are
        slow, as in cuDNN). `pool` picks the stride-1 max-pool implementation (`_window_max`:
        'pool', 'window' or 'slices'; same values).
        """
        if x.ndim != 4 or x.shape[1] not in (self.n_features, self.input_channels):
            raise ValueError(f"expected (B, {self.n_features}, H, W), got {tuple(x.shape)}")
        s = self.patch_size
        if x.shape[-2] < s or x.shape[-1] < s:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the patch size {s}")
        oh, ow = x.shape[-2] - s + 1, x.shape[-1] - s + 1
        h = x
        for block in self.fine:
            h = block(h)
        if self.spectral:
            feats = h
        else:
            # fine map index a <-> input pixel a + fine_depth; patch at top-left i has its
            # centre fine cell at i + (S - 2*fine_depth) // 2.
            fc = (s - 2 * len(self.fine)) // 2
            fine_centre = h[:, :, fc : fc + oh, fc : fc + ow]
            # stride-1 pool: pooled cell p of the patch at i sits at dense index i + 3p
            g = _window_max(h, 3, 1, pool)
            n = self.coarse_size
            if phase_split:
                gp = _to_phases(g, 3)
                for block in self.coarse:
                    gp = block(gp)
                gmax = _from_phases(_window_max(gp, n, 1, pool), 3)
                g = _from_phases(gp, 3)
            else:
                for block in self.coarse:
                    g = block(g, dilation=3)
                gmax = _window_max(g, n, 3, pool)
            cc = 3 * (n // 2)
            coarse_centre = g[:, :, cc : cc + oh, cc : cc + ow]
            feats = torch.cat([fine_centre, coarse_centre, gmax[:, :, :oh, :ow]], dim=1)
        logits = self._head(feats.permute(0, 2, 3, 1))
        return logits.permute(0, 3, 1, 2)

