"""Terrain features with torch, on the device the model runs on (CPU threads or CUDA).

The same definitions as `terrain` (numpy), written as the same float32 operations in the
same order: Horn's gradients, slope, hillshade (gdaldem's formula) and the cast-shadow march
whose steps both share (`terrain.shadow_steps`). The shadow mask equals `terrain.cast_shadow`
bit for bit (a sum, a product and a comparison per step, each rounded as numpy rounds it);
slope and hillshade agree to float rounding (torch's and numpy's arctan / sqrt may differ in
the last bit, which moves a hillshade byte across a .5 at a few pixels in a million).

Pure torch + numpy, no file I/O. Tensors are (H, W) float32, NaN = missing, north up.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from glacierfacies.terrain import SHADOW_LOW, _pixel_xy, shadow_steps

__all__ = ["horn_gradients", "slope_from_gradients", "hillshade", "cast_shadow", "proximity"]

_HORN = (
    (-1, -1, -1, 1),
    (-1, 0, 0, 2),
    (-1, 1, 1, 1),
    (0, -1, -2, 0),
    (0, 1, 2, 0),
    (1, -1, -1, -1),
    (1, 0, 0, -2),
    (1, 1, 1, -1),
)


def _as_f32(dem: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    t = dem if isinstance(dem, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(dem))
    t = t.to(device=device if device is not None else t.device, dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"dem must be 2-D, got shape {tuple(t.shape)}")
    return t


def horn_gradients(dem: np.ndarray | torch.Tensor, pixel_size_m: float | tuple[float, float],
                   device: str | torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Horn's (dz/dx east, dz/dy north) in m/m (float32 tensors): `terrain.horn_gradients`.

    A missing neighbour (NaN or beyond the edge) takes the centre value; NaN pixels give NaN.
    """
    px, py = _pixel_xy(pixel_size_m)
    z = _as_f32(dem, device)
    h, w = z.shape
    pad = torch.nn.functional.pad(z[None, None], (1, 1, 1, 1), value=math.nan)[0, 0]
    dzdx = torch.zeros_like(z)
    dzdy = torch.zeros_like(z)
    diff = torch.empty_like(z)
    for dr, dc, wx, wy in _HORN:
        torch.sub(pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w], z, out=diff)
        diff.nan_to_num_(nan=0.0)
        for acc, wgt in ((dzdx, wx), (dzdy, wy)):
            if wgt == 1:
                acc += diff
            elif wgt == -1:
                acc -= diff
            elif wgt:
                acc += diff * float(wgt)
    # a true elementwise division (a scalar divisor may become a reciprocal multiply)
    dzdx /= torch.full_like(dzdx, float(np.float32(8.0 * px)))
    dzdy /= torch.full_like(dzdy, float(np.float32(8.0 * py)))
    missing = torch.isnan(z)
    dzdx[missing] = math.nan
    dzdy[missing] = math.nan
    return dzdx, dzdy


def slope_from_gradients(dzdx: torch.Tensor, dzdy: torch.Tensor) -> torch.Tensor:
    """Slope in degrees (float32) from Horn gradients: `terrain.slope_from_gradients`."""
    return torch.rad2deg(torch.atan(torch.hypot(dzdx, dzdy)))


def hillshade(dzdx: torch.Tensor, dzdy: torch.Tensor, azimuth_deg: float = 315.0,
              altitude_deg: float = 45.0) -> torch.Tensor:
    """Hillshade uint8 1..255 (0 where the DEM is NaN) from Horn gradients:
    `terrain.hillshade` (gdaldem's formula)."""
    az, alt = math.radians(azimuth_deg), math.radians(altitude_deg)
    sun_e, sun_n, sun_u = math.sin(az) * math.cos(alt), math.cos(az) * math.cos(alt), math.sin(alt)
    num = sun_u - dzdx * sun_e - dzdy * sun_n
    den = torch.sqrt(1.0 + dzdx * dzdx + dzdy * dzdy)
    val = 1.0 + 254.0 * torch.clamp(num / den, min=0.0)
    ok = ~torch.isnan(val)
    out = torch.clamp(torch.floor(val + 0.5), 1, 255)
    return torch.where(ok, out, torch.zeros_like(out)).to(torch.uint8)


def cast_shadow(
    dem: np.ndarray | torch.Tensor,
    pixel_size_m: float | tuple[float, float],
    sun_azimuth_deg: float,
    sun_elevation_deg: float,
    max_distance_m: float | None = None,
    region: tuple[slice, slice] | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Cast-shadow mask of the pixels in `region` (bool tensor of the region's shape; the
    whole array when None): `terrain.cast_shadow(...)[region]`, identical.

    The march of `terrain.shadow_steps` (a horizon scan toward the sun, one step of the
    dominant axis at a time, every target pixel of the region at once): each step is a few
    whole-region tensor operations, so on a GPU the scan over a Sentinel-2 tile's glaciers
    takes milliseconds; only the region's pixels are computed, the rest of the array (the
    terrain margin) casting onto them.
    """
    z = _as_f32(dem, device)
    h, w = z.shape
    if region is None:
        region = (slice(0, h), slice(0, w))
    g_r0, g_r1, _ = region[0].indices(h)
    g_c0, g_c1, _ = region[1].indices(w)
    valid = torch.isfinite(z)
    shadow = torch.zeros((max(g_r1 - g_r0, 0), max(g_c1 - g_c0, 0)), dtype=torch.bool,
                         device=z.device)
    vreg = valid[g_r0:g_r1, g_c0:g_c1]
    if shadow.numel() == 0 or sun_elevation_deg >= 90.0 or not bool(valid.any()):
        return shadow
    if sun_elevation_deg <= 0.0:
        return vreg.clone()
    zv = z[valid]
    relief = float(zv.max()) - float(zv.min())
    steps = shadow_steps((h, w), pixel_size_m, sun_azimuth_deg, sun_elevation_deg, relief,
                         max_distance_m)
    if not steps:
        return shadow
    zf = torch.where(valid, z, torch.full_like(z, float(SHADOW_LOW)))
    tmp = torch.empty_like(shadow, dtype=torch.float32)
    hit = torch.empty_like(shadow)
    for st in steps:
        t = st.targets(h, w, g_r0, g_r1, g_c0, g_c1)
        if t is None:
            break
        t_r0, t_r1, t_c0, t_c1 = t
        (ra, ca), (rb, cb) = st.shifts
        sa = zf[t_r0 + ra : t_r1 + ra, t_c0 + ca : t_c1 + ca]
        sb = zf[t_r0 + rb : t_r1 + rb, t_c0 + cb : t_c1 + cb]
        th, tw = t_r1 - t_r0, t_c1 - t_c0
        buf = tmp[:th, :tw]
        rise = float(st.rise)
        if st.frac == 0:
            torch.sub(sa, rise, out=buf)
        else:
            # float32, rounded after each operation as numpy's sa + frac * (sb - sa) - rise
            torch.sub(sb, sa, out=buf)
            buf.mul_(float(st.frac))
            buf.add_(sa)
            buf.sub_(rise)
        hv = hit[:th, :tw]
        torch.gt(buf, zf[t_r0:t_r1, t_c0:t_c1], out=hv)
        shadow[t_r0 - g_r0 : t_r1 - g_r0, t_c0 - g_c0 : t_c1 - g_c0] |= hv
    shadow &= vreg
    return shadow


def proximity(mask: np.ndarray | torch.Tensor, pixel_size_m: float | tuple[float, float],
              region: tuple[slice, slice] | None = None,
              device: str | torch.device | None = None, chunk: int = 1 << 26) -> torch.Tensor:
    """`terrain.proximity(mask, pixel_size_m)[region]` (float32 tensor), exactly, for a GPU.

    The nearest pixel of the other kind to a pixel is always one that has a 4-neighbour of
    the pixel's own kind (a step from it toward the pixel would otherwise be nearer), so the
    distance transform is the minimum over those boundary pixels: a brute-force search,
    `chunk` pairs at a time, in float64 ((dr py)^2 + (dc px)^2 is exact; one correctly
    rounded sqrt), as scipy's exact EDT computes it. Cost ~ region pixels x boundary pixels:
    for a GPU. A mask that is all True or all False falls back to `terrain.proximity`.
    """
    from glacierfacies import terrain

    px, py = _pixel_xy(pixel_size_m)
    m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask, bool))
    m = m.to(device=device if device is not None else m.device, dtype=torch.bool)
    h, w = m.shape
    if region is None:
        region = (slice(0, h), slice(0, w))
    r0, r1, _ = region[0].indices(h)
    c0, c1, _ = region[1].indices(w)
    n_true = int(m.sum())
    if n_true == 0 or n_true == h * w:
        full = terrain.proximity(m.cpu().numpy(), (px, py))
        return torch.from_numpy(np.ascontiguousarray(full[r0:r1, c0:c1])).to(m.device)
    # boundary pixels: a 4-neighbour of the other kind inside the array
    pad = torch.nn.functional.pad(m[None, None].to(torch.uint8), (1, 1, 1, 1), value=2)[0, 0]
    nb = [pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in
          ((-1, 0), (1, 0), (0, -1), (0, 1))]
    mu = m.to(torch.uint8)
    other = torch.zeros_like(m)
    for n in nb:
        other |= (n != 2) & (n != mu)
    half = 0.5 * min(px, py)
    out = torch.empty((r1 - r0, c1 - c0), dtype=torch.float32, device=m.device)
    reg = m[r0:r1, c0:c1]
    for inside in (True, False):
        # targets of this kind, boundary pixels of the other kind
        bnd = torch.nonzero(other & (m != inside)).to(torch.float64)
        tgt = torch.nonzero(reg == inside)
        if tgt.numel() == 0:
            continue
        br, bc = bnd[:, 0] * py, bnd[:, 1] * px
        tr = (tgt[:, 0] + r0).to(torch.float64) * py
        tc = (tgt[:, 1] + c0).to(torch.float64) * px
        d2 = torch.empty(tgt.shape[0], dtype=torch.float64, device=m.device)
        step = max(1, chunk // max(bnd.shape[0], 1))
        for s in range(0, tgt.shape[0], step):
            dr = tr[s : s + step, None] - br[None]
            dc = tc[s : s + step, None] - bc[None]
            d2[s : s + step] = (dr * dr + dc * dc).amin(dim=1)
        d = torch.sqrt(d2) - half
        out[tgt[:, 0], tgt[:, 1]] = (d if inside else -d).to(torch.float32)
    return out
