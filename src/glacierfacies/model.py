"""The compact two-scale CNN of Maslov et al. (2026), with an exact fully convolutional twin.

Patch forward: ``fine_depth`` valid 3x3 conv + BN + ELU at full resolution, a 3x3 max-pool
(stride 3), ``coarse_depth`` valid 3x3 conv + BN + ELU on the pooled map; the features of the
centre cell of both scales plus a global max over the coarse map are concatenated, then
dropout and two dense ELU layers of ``dense_width`` give the class logits.

Dense forward (``dense_logits``) uses the *same weights* on a whole raster: a stride-1
max-pool followed by coarse convolutions dilated by 3 visits, for every pixel, exactly the
cells its own patch would have visited, so the per-pixel logits equal the patch logits
(up to float rounding). The reference's zero padding at patch borders would break this,
hence valid convolutions inside the patch.

Allowed patch sizes: ``S == 1`` (a per-pixel spectral MLP) or
``S = 2 * fine_depth + 3 * P`` with ``P`` odd and ``P >= 2 * coarse_depth + 1`` (P is the
pooled grid size; odd P puts the centre fine cell in the centre of the centre pooled cell, so
pooling is symmetric about the labelled pixel). With the default depths (3, 3) that is
S = 27, 33, 39, 45, ... (S = 3 mod 6, S >= 27); the paper's S = 33 gives P = 9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TwoScaleCNN", "allowed_patch_sizes", "check_patch_size"]


def allowed_patch_sizes(fine_depth: int = 3, coarse_depth: int = 3, up_to: int = 99) -> list[int]:
    """Patch sizes valid for the given depths (1 and 2*fine + 3*P, P odd >= 2*coarse+1)."""
    sizes = [1]
    p = 2 * coarse_depth + 1
    while 2 * fine_depth + 3 * p <= up_to:
        sizes.append(2 * fine_depth + 3 * p)
        p += 2
    return sizes


def check_patch_size(patch_size: int, fine_depth: int = 3, coarse_depth: int = 3) -> int:
    """Return the pooled grid size P for `patch_size` (0 for S == 1); ValueError if not allowed."""
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
            y = F.conv2d(x, self.conv.weight, None, stride=1, padding=0, dilation=dilation)
        return F.elu(self.bn(y))


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
        self.pooled_size = check_patch_size(patch_size, fine_depth, coarse_depth)
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
        feats = torch.cat([fine_centre, g[:, :, cc, cc], g.amax(dim=(-2, -1))], dim=1)
        return self._head(feats)

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes, H-S+1, W-S+1) of every pixel whose SxS window fits in x.

        Output cell (i, j) is the patch logit of input pixel (i + S//2, j + S//2).
        """
        if x.ndim != 4 or x.shape[1] != self.n_features:
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
            g = F.max_pool2d(h, 3, stride=1)
            for block in self.coarse:
                g = block(g, dilation=3)
            n = self.coarse_size
            cc = 3 * (n // 2)
            coarse_centre = g[:, :, cc : cc + oh, cc : cc + ow]
            gmax = F.max_pool2d(g, n, stride=1, dilation=3) if n > 1 else g
            feats = torch.cat([fine_centre, coarse_centre, gmax[:, :, :oh, :ow]], dim=1)
        logits = self._head(feats.permute(0, 2, 3, 1))
        return logits.permute(0, 3, 1, 2)
