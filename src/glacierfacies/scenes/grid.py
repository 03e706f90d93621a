"""The target grid and reading any raster onto it (windowed, aligned or warped)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.errors import InputError

TARGET_RES_M = 10.0


_RASTER_EXT = (".jp2", ".tif", ".tiff")


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape (height, width)."""

    crs: Any
    transform: Any
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        w, s, e, n = array_bounds(self.height, self.width, self.transform)
        return (min(w, e), min(s, n), max(w, e), max(s, n))

    def window(self, row: int, col: int, height: int, width: int) -> Grid:
        """The grid of the window starting at pixel (row, col), which may lie outside this
        grid (negative offsets pad it): what a block or a patch window is read onto."""
        from rasterio.transform import Affine

        return Grid(self.crs, self.transform @ Affine.translation(col, row), height, width)

    @classmethod
    def of(cls, obj: Any) -> Grid:
        """A Grid from a Grid, Scene, FeatureStack or anything with crs/transform/shape."""
        if isinstance(obj, Grid):
            return obj
        if isinstance(obj, str | os.PathLike):
            with _open_raster(obj) as src:
                return cls(src.crs, src.transform, src.height, src.width)
        shape = getattr(obj, "shape", None)
        if shape is None or len(shape) < 2:
            shape = (obj.height, obj.width)
        return cls(obj.crs, obj.transform, int(shape[-2]), int(shape[-1]))


def _is_vsi(path: str | os.PathLike) -> bool:
    return str(path).startswith("/vsi")


def _display(path: str | os.PathLike) -> str:
    """A raster path as users wrote it: '/vsizip//data/x.SAFE.zip/a.jp2' -> '/data/x.SAFE.zip/a.jp2'."""
    text = str(path)
    for prefix in ("/vsizip/", "/vsitar/", "/vsigzip/"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _open_raster(path: str | os.PathLike):
    """rasterio.open with corrupt/unreadable files turned into a one-line InputError.
    GDAL virtual paths (/vsizip/, /vsitar/: a band inside an archive) are opened in place."""
    import rasterio
    from rasterio.errors import RasterioError

    if not _is_vsi(path) and not Path(path).exists():
        raise InputError(path, "file not found")
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise InputError(_display(path), f"cannot read raster ({_first_line(exc)})") from None


def canonical_crs(crs: Any) -> Any:
    """`crs`, or the EPSG CRS it equals when it does not name one: a WKT such as HLS L30's
    'UTM Zone 11, Northern Hemisphere' on an unnamed datum 'based upon the WGS 84 ellipsoid'
    is EPSG:32611. Why: two spellings of one CRS must compare equal, or aligned reads turn
    into resampling and tags name no EPSG code."""
    from rasterio.crs import CRS

    if crs is None:
        return None
    crs = CRS.from_user_input(crs)
    if crs.to_epsg() is not None:
        return crs
    code = _equal_epsg(crs.to_wkt())
    return crs if code is None else CRS.from_epsg(code)


@functools.lru_cache(maxsize=64)
def _equal_epsg(wkt: str) -> int | None:
    """The EPSG code whose definition equals this WKT's (same projection and parameters; an
    unnamed datum on the WGS 84 ellipsoid counts as WGS 84), else None."""
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    try:
        code = crs.to_epsg(confidence_threshold=20)
    except Exception:  # noqa: BLE001 - PROJ cannot identify it
        return None
    if code is None:
        return None

    def params(c: Any) -> dict:
        d = dict(c.to_dict())
        if d.get("ellps") == "WGS84" and "datum" not in d and "towgs84" not in d:
            d.pop("ellps")
            d["datum"] = "WGS84"
        return d

    return code if params(crs) == params(CRS.from_epsg(code)) else None


def same_crs(a: Any, b: Any) -> bool:
    """True when `a` and `b` are one CRS, however spelt (see `canonical_crs`)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    return canonical_crs(a) == canonical_crs(b)


def _first_line(exc: BaseException) -> str:
    if "See previous exception" in str(exc) and exc.__cause__ is not None:
        exc = exc.__cause__  # rasterio's generic "Read failed": GDAL's own message is the cause
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


#: Set by `decimated_reads()`: reads onto a grid coarser than the file go through GDAL's
#: decimated read (the file's overviews where it has them) instead of full resolution.
_DECIMATED: contextvars.ContextVar[bool] = contextvars.ContextVar("decimated", default=False)


@contextlib.contextmanager
def decimated_reads():
    """Inside: a band read onto a grid at least 2x coarser than the file is read at about
    the grid's resolution (nearest, from the overviews where the file has them), then
    resampled. For previews (the report's quicklooks): bounded memory and time on a full
    tile; the values are not the ones the features use."""
    token = _DECIMATED.set(True)
    try:
        yield
    finally:
        _DECIMATED.reset(token)


def _read_band(src, index, path, window=None, out_shape=None) -> np.ndarray:
    """`src.read(index, window=window)` with read errors as a one-line InputError;
    `out_shape` reads decimated (nearest, overviews where present)."""
    from rasterio.errors import RasterioError

    try:
        if out_shape is not None:
            from rasterio.enums import Resampling

            return src.read(index, window=window, out_shape=out_shape,
                            resampling=Resampling.nearest)
        return src.read(index, window=window)
    except (RasterioError, OSError) as exc:
        raise InputError(_display(path), f"cannot read band {index} ({_first_line(exc)})"
                         ) from None


#: Source pixels read beyond the grid on each side (times the downsampling ratio), so that
#: bilinear resampling from a window gives exactly what it gives from the whole file.
_WINDOW_MARGIN_PX = 3


def _source_window(src, grid: Grid):
    """The integer window of `src` that covers `grid` plus a resampling margin, clipped to
    the dataset; None when the grid misses the dataset. Why: block-wise mapping of a 10980 px
    tile must read only the pixels a block needs, not every band file in full each time."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    full = Window(0, 0, src.width, src.height)
    t = src.transform
    if t.b != 0 or t.d != 0:  # rotated source: no cheap window, read it all
        return full
    bounds = grid.bounds
    if not same_crs(src.crs, grid.crs):
        bounds = transform_bounds(grid.crs, src.crs, *bounds, densify_pts=21)
    w, s, e, n = bounds
    # downsampling widens GDAL's bilinear kernel by the size ratio
    ratio = max(
        1.0,
        (e - w) / max(grid.width, 1) / abs(t.a),
        (n - s) / max(grid.height, 1) / abs(t.e),
    )
    m = _WINDOW_MARGIN_PX * int(math.ceil(ratio))
    win = from_bounds(w, s, e, n, transform=t)
    c0 = max(int(math.floor(win.col_off + 1e-6)) - m, 0)
    r0 = max(int(math.floor(win.row_off + 1e-6)) - m, 0)
    c1 = min(int(math.ceil(win.col_off + win.width - 1e-6)) + m, src.width)
    r1 = min(int(math.ceil(win.row_off + win.height - 1e-6)) + m, src.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


def _aligned_offset(src_transform, src_crs, grid: Grid) -> tuple[int, int] | None:
    """(row, col) of the grid's first pixel in the source array when both share pixel size
    and pixel edges (same CRS, integer pixel offset): then a slice is the exact answer."""
    t, g = src_transform, grid.transform
    if not same_crs(src_crs, grid.crs) or t.b != 0 or t.d != 0 or g.b != 0 or g.d != 0:
        return None
    if abs(t.a - g.a) > 1e-9 * abs(g.a) or abs(t.e - g.e) > 1e-9 * abs(g.e):
        return None
    col, row = (g.c - t.c) / t.a, (g.f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def _paste(arr: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """`arr` cropped/padded (NaN) to `shape`; `offset` = (row, col) of the output origin."""
    r, c = offset
    h, w = shape
    if (r, c) == (0, 0) and arr.shape == (h, w):
        return arr
    out = np.full((h, w), np.nan, dtype=np.float32)
    rs, cs = max(r, 0), max(c, 0)
    re_, ce = min(r + h, arr.shape[0]), min(c + w, arr.shape[1])
    if re_ > rs and ce > cs:
        out[rs - r : re_ - r, cs - c : ce - c] = arr[rs:re_, cs:ce]
    return out


def _read_onto(src, indexes: list[int], path, grid: Grid, to_float, resampling=None
               ) -> list[np.ndarray]:
    """Bands `indexes` of `src` as float32 (NaN = nodata, from `to_float(k, raw_band_k)`) on
    `grid`. Only the source window under the grid is read; an aligned grid is a slice,
    any other grid is `reproject` from the window (same values as from the file), bilinear
    unless `resampling` says otherwise (nearest for class codes and bit masks)."""
    win = _source_window(src, grid)
    if win is None:
        return [np.full(grid.shape, np.nan, dtype=np.float32) for _ in indexes]
    wt = src.window_transform(win)
    offset = _aligned_offset(wt, src.crs, grid)
    shape = None
    if offset is None and _DECIMATED.get() and same_crs(src.crs, grid.crs):
        f = int(min(abs(grid.transform.a) / abs(wt.a), abs(grid.transform.e) / abs(wt.e)))
        if f >= 2:
            from rasterio.transform import Affine

            shape = (max(1, int(win.height) // f), max(1, int(win.width) // f))
            wt = wt @ Affine.scale(int(win.width) // shape[1], int(win.height) // shape[0])
    out = []
    # decimated: all bands in one read (a pixel-interleaved file is decoded once, not per band)
    raw = None if shape is None else _read_decimated(src, list(indexes), path, win, shape)
    for k, index in enumerate(indexes):
        arr = to_float(k, raw[k] if raw is not None else
                       _read_band(src, index, path, window=win))
        if offset is not None:
            out.append(_paste(arr, offset, grid.shape))
        else:
            out.append(_warp_to(arr, wt, src.crs, grid, resampling))
        del arr
    return out


def _read_decimated(src, indexes: list[int], path, win, shape: tuple[int, int]) -> np.ndarray:
    """Bands of window `win` decimated to `shape` (nearest): GDAL's decimated read from the
    overviews where the file has them; else strips of full-resolution rows, all bands at
    once, subsampled (bounded memory whatever GDAL's block cache, each block decoded once)."""
    from rasterio.windows import Window

    out_shape = (len(indexes), *shape)
    if all(src.overviews(i) for i in indexes):
        return _read_band(src, indexes, path, window=win, out_shape=out_shape)
    fy, fx = int(win.height) // shape[0], int(win.width) // shape[1]
    out = None
    strip = max(fy, (256 // fy) * fy)
    for r in range(0, shape[0] * fy, strip):
        h = min(strip, shape[0] * fy - r)
        part = _read_band(src, indexes, path,
                          window=Window(win.col_off, win.row_off + r, shape[1] * fx, h))
        sub = part[:, fy // 2 :: fy, fx // 2 :: fx][:, :, : shape[1]]
        if out is None:
            out = np.empty(out_shape, dtype=part.dtype)
        out[:, r // fy : r // fy + sub.shape[1]] = sub
    return out


def _warp_to(arr: np.ndarray, src_transform, src_crs, grid: Grid, resampling=None) -> np.ndarray:
    """Float32 array (NaN = nodata) onto `grid`, bilinear by default (NaN stays out)."""
    from rasterio.warp import Resampling, reproject

    dst = np.full(grid.shape, np.nan, dtype=np.float32)
    if same_crs(src_crs, grid.crs):
        src_crs = grid.crs  # one CRS spelt twice: no datum shift, not even a ballpark one
    reproject(
        source=arr.astype(np.float32, copy=False),
        destination=dst,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.bilinear if resampling is None else resampling,
        num_threads=2,
    )
    return dst


def _tap_grid(crs, bounds: tuple[float, float, float, float], res: float = TARGET_RES_M) -> Grid:
    """A north-up grid of `res` pixels snapped to multiples of `res`, covering `bounds`."""
    from rasterio.transform import from_origin

    w, s, e, n = bounds
    x0, y1 = math.floor(w / res + 1e-9) * res, math.ceil(n / res - 1e-9) * res
    x1, y0 = math.ceil(e / res - 1e-9) * res, math.floor(s / res + 1e-9) * res
    return Grid(
        crs, from_origin(x0, y1, res, res), int(round((y1 - y0) / res)), int(round((x1 - x0) / res))
    )


def _default_grid(path, src, res: float = TARGET_RES_M) -> Grid:
    """The scene's `res` m grid (10 m by default) from one of its band files (see module
    docstring)."""
    if src.crs is None:
        raise InputError(path, "raster has no CRS")
    if src.crs.is_geographic:
        raise InputError(
            path,
            "scene is in a geographic CRS; reproject it to a projected (metre) CRS or pass a grid",
        )
    t = src.transform
    crs = canonical_crs(src.crs)
    if t.b == 0 and t.d == 0 and abs(t.a) == res and t.e == -res:
        return Grid(crs, t, src.height, src.width)
    b = src.bounds
    return _tap_grid(crs, (b.left, b.bottom, b.right, b.top), res)


def _grid_of_files(files: list[tuple[Path, int]], res: float = TARGET_RES_M) -> Grid:
    """The default `res` m grid of a scene's band files: the finest band decides."""
    best = None
    for f in dict.fromkeys(f for f, _ in files):
        with _open_raster(f) as src:
            if best is None or abs(src.transform.a) < best[0]:
                best = (abs(src.transform.a), _default_grid(f, src, res))
    return best[1]

