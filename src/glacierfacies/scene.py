"""Read Sentinel-2 / Landsat / GeoTIFF scenes onto a 10 m grid and build the 11-feature stack.

Readers follow the real product layouts:

- Sentinel-2 L2A `.SAFE`: `MTD_MSIL2A.xml` (PROCESSING_BASELINE, BOA_ADD_OFFSET_VALUES_LIST,
  BOA_QUANTIFICATION_VALUE, PRODUCT_START_TIME), `GRANULE/*/MTD_TL.xml` (Mean_Sun_Angle),
  band files `GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2` ... `R20m/*_B11_20m.jp2` (.jp2 or .tif).
  A plain folder of S2 band files (`*_B02*.tif` ...) works too; metadata XML is used when
  present, otherwise the time comes from the `YYYYMMDDTHHMMSS` in the file names.
- Landsat 4/5/7/8/9 Collection-2 Level-2: `<id>_SR_B*.TIF` + `<id>_MTL.txt` or `_MTL.xml`.
- A plain multi-band GeoTIFF with a band map, scale and offset (time from the tag
  ACQUISITION_TIME or a date in the file name; sun angles from tags SUN_AZIMUTH /
  SUN_ELEVATION or computed).

Grid: unless a `grid` is given, a scene lands on a 10 m grid in its own (projected) CRS: the
10 m bands' own grid when there are any, else a 10 m grid snapped to multiples of 10 m
(like `gdalwarp -tap`) covering the bands, so that scenes of one area and CRS share pixels.
Coarser bands (S2 20 m, Landsat 30 m) are resampled onto it with
`rasterio.warp.reproject(..., Resampling.bilinear)`, nodata/saturated pixels excluded.
Reflectance is float32, NaN where invalid (DN 0 = nodata, 65535 = saturated).

Only the part of each band file (and of the DEM) under the requested grid is read: a
rasterio window with a margin for the bilinear kernel, resampled from the window's own
transform. Values equal a whole-file read onto the same grid (bit-exact for 10 m / 20 m
bands and aligned DEMs; within 1 float32 ulp for 30 m Landsat bands, where GDAL's 1/3-pixel
weights round differently with the source origin). `scene_grid(path)` gives the default
grid from the file headers alone, so a huge scene can be mapped block by block.

Sun angles feed the terrain features (cast shadow, hillshade); they come from the metadata,
or from `terrain.solar_position` at the acquisition time and scene centre.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies import sensors, terrain
from glacierfacies.errors import InputError, atomic_output
from glacierfacies.features import FEATURE_NAMES, OPTICAL_BANDS

TARGET_RES_M = 10.0
#: Extra DEM margin (metres) around the scene for cast shadows / slope / proximity at edges.
TERRAIN_MARGIN_M = 1000.0

_S2_BAND_ID = {
    "B01": 0,
    "B02": 1,
    "B03": 2,
    "B04": 3,
    "B05": 4,
    "B06": 5,
    "B07": 6,
    "B08": 7,
    "B8A": 8,
    "B09": 9,
    "B10": 10,
    "B11": 11,
    "B12": 12,
}
_RASTER_EXT = (".jp2", ".tif", ".tiff")


# ---------------------------------------------------------------------------- data types


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


@dataclass
class Scene:
    """Surface reflectance of one acquisition on a 10 m grid, with its sun geometry."""

    reflectance: np.ndarray  # (6, H, W) float32, OPTICAL_BANDS order, NaN where invalid
    valid: np.ndarray  # (H, W) bool
    transform: Any
    crs: Any
    sensor: str
    scene_id: str
    acquired: dt.datetime  # UTC, tz-aware
    sun_azimuth_deg: float
    sun_elevation_deg: float
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.crs, self.transform, *self.valid.shape)


@dataclass
class FeatureStack:
    """The 11 per-pixel features of one scene (FEATURE_NAMES order) and its glacier index.

    `features` units: reflectance (6 optical), elevation m, slope deg, shadow_mask 0/1,
    hillshade 0..255 (gdaldem byte scale, 1 = darkest lit), proximity m (signed distance to
    the nearest outline edge, > 0 inside a glacier, < 0 outside). All 11 are NaN where
    `valid` is False. `glacier_index` is 0 off glacier and i for `outlines.iloc[i - 1]`.
    """

    features: np.ndarray  # (11, H, W) float32
    valid: np.ndarray  # (H, W) bool
    glacier_index: np.ndarray  # (H, W) int32
    outlines: Any  # GeoDataFrame in the scene CRS (the outlines that touch the scene)
    transform: Any
    crs: Any
    scene: Scene  # metadata; its reflectance is a view of features[:6]
    feature_names: tuple[str, ...] = FEATURE_NAMES

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.valid.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.crs, self.transform, *self.valid.shape)


# ---------------------------------------------------------------------------- raster helpers


def _open_raster(path: str | os.PathLike):
    """rasterio.open with corrupt/unreadable files turned into a one-line InputError."""
    import rasterio
    from rasterio.errors import RasterioError

    if not Path(path).exists():
        raise InputError(path, "file not found")
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read raster ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _read_band(src, index, path, window=None) -> np.ndarray:
    """`src.read(index, window=window)` with read errors as a one-line InputError."""
    from rasterio.errors import RasterioError

    try:
        return src.read(index, window=window)
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read band {index} ({_first_line(exc)})") from None


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
    if src.crs != grid.crs:
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
    if src_crs != grid.crs or t.b != 0 or t.d != 0 or g.b != 0 or g.d != 0:
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


def _read_onto(src, indexes: list[int], path, grid: Grid, to_float) -> list[np.ndarray]:
    """Bands `indexes` of `src` as float32 (NaN = nodata, from `to_float(k, raw_band_k)`) on
    `grid`. Only the source window under the grid is read; an aligned grid is a slice,
    any other grid is bilinear `reproject` from the window (same values as from the file)."""
    win = _source_window(src, grid)
    if win is None:
        return [np.full(grid.shape, np.nan, dtype=np.float32) for _ in indexes]
    wt = src.window_transform(win)
    offset = _aligned_offset(wt, src.crs, grid)
    out = []
    for k, index in enumerate(indexes):
        arr = to_float(k, _read_band(src, index, path, window=win))
        if offset is not None:
            out.append(_paste(arr, offset, grid.shape))
        else:
            out.append(_warp_to(arr, wt, src.crs, grid))
        del arr
    return out


def _warp_to(arr: np.ndarray, src_transform, src_crs, grid: Grid, resampling=None) -> np.ndarray:
    """Float32 array (NaN = nodata) onto `grid`, bilinear by default (NaN stays out)."""
    from rasterio.warp import Resampling, reproject

    dst = np.full(grid.shape, np.nan, dtype=np.float32)
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


def _default_grid(path, src) -> Grid:
    """The scene's 10 m grid from one of its band files (see module docstring)."""
    if src.crs is None:
        raise InputError(path, "raster has no CRS")
    if src.crs.is_geographic:
        raise InputError(
            path,
            "scene is in a geographic CRS; reproject it to a projected (metre) CRS or pass a grid",
        )
    t = src.transform
    if t.b == 0 and t.d == 0 and abs(t.a) == TARGET_RES_M and t.e == -TARGET_RES_M:
        return Grid(src.crs, t, src.height, src.width)
    b = src.bounds
    return _tap_grid(src.crs, (b.left, b.bottom, b.right, b.top))


# ---------------------------------------------------------------------------- metadata helpers


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(path, f"cannot parse metadata XML ({_first_line(exc)})") from None


def _xml_find(root: ET.Element, name: str) -> ET.Element | None:
    for el in root.iter():
        if _local(el.tag) == name:
            return el
    return None


def _xml_text(root: ET.Element, name: str) -> str | None:
    el = _xml_find(root, name)
    return el.text.strip() if el is not None and el.text else None


def _parse_time(text: str) -> dt.datetime:
    """ISO-like UTC time ('2020-08-12T10:36:29.024Z', nanosecond fractions allowed)."""
    t = text.strip().strip('"').replace("Z", "")
    m = re.match(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?", t)
    if m:
        frac = float(m.group(3)) if m.group(3) else 0.0
        base = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
        return (base + dt.timedelta(seconds=frac)).replace(tzinfo=dt.UTC)
    m = re.match(r"(\d{8})T?(\d{6})?", t)
    if m:
        fmt = "%Y%m%d%H%M%S" if m.group(2) else "%Y%m%d"
        return dt.datetime.strptime(m.group(1) + (m.group(2) or ""), fmt).replace(tzinfo=dt.UTC)
    raise ValueError(f"unrecognised time {text!r}")


def _time_from_name(name: str) -> dt.datetime | None:
    m = re.search(r"(?<!\d)(\d{8})T(\d{6})(?!\d)", name) or re.search(
        r"(?<!\d)((?:19|20)\d{6})(?!\d)", name
    )
    if not m:
        return None
    try:
        return _parse_time(m.group(0))
    except ValueError:
        return None


def _sun_from_time(acquired: dt.datetime, grid: Grid) -> tuple[float, float]:
    """(azimuth, elevation) at the scene centre, from terrain.solar_position."""
    from rasterio.warp import transform as warp_transform

    w, s, e, n = grid.bounds
    lon, lat = warp_transform(grid.crs, "EPSG:4326", [(w + e) / 2], [(s + n) / 2])
    az, el = terrain.solar_position(acquired, lat[0], lon[0])
    return float(az), float(el)


# ---------------------------------------------------------------------------- scene kinds


def _is_safe(p: Path) -> bool:
    return p.is_dir() and (p.suffix.upper() == ".SAFE" or (p / "MTD_MSIL2A.xml").exists())


def _find_mtl(p: Path) -> Path | None:
    if p.is_file() and re.search(r"_MTL\.(txt|xml)$", p.name, re.I):
        return p
    if p.is_dir():
        cands = sorted(q for q in p.iterdir() if re.search(r"_MTL\.(txt|xml)$", q.name, re.I))
        txt = [q for q in cands if q.suffix.lower() == ".txt"]
        return (txt or cands or [None])[0]
    return None


def _band_pattern(band: str) -> re.Pattern:
    return re.compile(rf"(^|[_\-.]){band}([_\-.]|$)", re.I)


def _s2_band_files(folder: Path) -> dict[str, Path]:
    """S2 band name -> file in a folder tree (finest resolution first: R10m, R20m, R60m)."""
    files = [
        q
        for q in folder.rglob("*")
        if q.suffix.lower() in _RASTER_EXT
        and q.is_file()
        and not q.name.upper().startswith("MSK_")  # QI_DATA masks (MSK_QUALIT_B02.jp2 ...)
    ]
    img = [q for q in files if "IMG_DATA" in q.parts]
    files = img or files  # in a .SAFE only IMG_DATA holds reflectance

    def res_key(q: Path) -> tuple[int, str]:
        m = re.search(r"_(\d{2})m$", q.stem)
        return (int(m.group(1)) if m else 999, str(q))

    out: dict[str, Path] = {}
    for band in ("B02", "B03", "B04", "B08", "B11", "B12"):
        pat = _band_pattern(band)
        hits = sorted((q for q in files if pat.search(q.stem)), key=res_key)
        if hits:
            out[band] = hits[0]
    return out


def _is_s2_band_folder(p: Path) -> bool:
    return p.is_dir() and any(
        q.suffix.lower() in _RASTER_EXT and _band_pattern("B02").search(q.stem) for q in p.iterdir()
    )


def find_scenes(directory: str | os.PathLike) -> list[Path]:
    """Scenes under `directory` (sorted): Sentinel-2 `.SAFE` folders, folders of S2 band files,
    Landsat folders (with an `_MTL.txt`/`.xml`), and GeoTIFF stacks of >= 6 bands."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(root, "scene folder not found")
    found: list[Path] = []

    def walk(d: Path) -> None:
        if _is_safe(d) or _find_mtl(d) is not None or _is_s2_band_folder(d):
            found.append(d)
            return
        for q in sorted(d.iterdir()):
            if q.is_dir():
                walk(q)
            elif q.suffix.lower() in (".tif", ".tiff") and _is_stack(q):
                found.append(q)

    walk(root)
    return sorted(found)


def _is_stack(path: Path) -> bool:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return src.count >= 6
    except Exception:  # noqa: BLE001 - unreadable files are not scenes
        return False


def read_scene(
    path: str | os.PathLike,
    grid: Any = None,
    band_map: dict[str, int] | None = None,
    scale: float | None = None,
    offset: float | None = None,
) -> Scene:
    """Read one scene (S2 .SAFE / S2 band folder / Landsat C2 L2 folder or MTL / GeoTIFF
    stack) to 6-band float32 surface reflectance on a 10 m grid (or `grid`: a Grid, Scene,
    FeatureStack or raster path). `band_map`/`scale`/`offset` are for plain GeoTIFFs."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "scene not found")
    target = None if grid is None else Grid.of(grid)
    if _is_safe(p):
        scene = _read_s2(p, target, safe=True)
    elif (mtl := _find_mtl(p)) is not None:
        scene = _read_landsat(mtl, target)
    elif p.is_dir() and _is_s2_band_folder(p):
        scene = _read_s2(p, target, safe=False)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        scene = _read_generic(p, target, band_map, scale, offset)
    else:
        raise InputError(
            p,
            "not a recognised scene (.SAFE, S2 band folder, Landsat folder "
            "with _MTL.txt/.xml, or GeoTIFF)",
        )
    if not scene.valid.any():
        raise InputError(p, "scene has no valid pixel (all nodata or saturated on the grid)")
    return scene


def _grid_of_files(files: list[tuple[Path, int]]) -> Grid:
    """The default 10 m grid of a scene's band files: the finest band decides."""
    best = None
    for f in dict.fromkeys(f for f, _ in files):
        with _open_raster(f) as src:
            if best is None or abs(src.transform.a) < best[0]:
                best = (abs(src.transform.a), _default_grid(f, src))
    return best[1]


def scene_grid(path: str | os.PathLike) -> Grid:
    """The 10 m grid `read_scene(path)` would use, from the band files' headers only (no
    pixels read): lets block-wise mapping plan blocks of a huge scene cheaply."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, "scene not found")
    if _is_safe(p) or (p.is_dir() and _find_mtl(p) is None and _is_s2_band_folder(p)):
        files = _s2_files(p, sensors.sentinel2(), safe=_is_safe(p))
    elif (mtl := _find_mtl(p)) is not None:
        _, prefix, _, spec = _landsat_product(mtl)
        files = _landsat_files(mtl, prefix, spec)
    elif p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
        files = [(p, 1)]
    else:
        raise InputError(
            p,
            "not a recognised scene (.SAFE, S2 band folder, Landsat folder "
            "with _MTL.txt/.xml, or GeoTIFF)",
        )
    return _grid_of_files(files)


def _assemble(
    files: list[tuple[Path, int]],
    spec: sensors.SensorSpec,
    grid: Grid | None,
    offsets: list[float | None],
    extra_nodata: list[float | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, Grid]:
    """Read the 6 (file, band index) pairs (only the window under `grid`; each file opened
    once, so a 6-band stack is read in one pass), decode DN, warp onto the grid."""
    if grid is None:
        grid = _grid_of_files(files)
    refl = np.empty((len(files),) + grid.shape, dtype=np.float32)
    by_file: dict[Path, list[int]] = {}
    for i, (f, _) in enumerate(files):
        by_file.setdefault(f, []).append(i)
    for f, slots in by_file.items():
        with _open_raster(f) as src:
            if src.crs is None:
                raise InputError(f, "raster has no CRS")

            def to_float(k: int, dn: np.ndarray, src=src, slots=slots) -> np.ndarray:
                i = slots[k]
                band = spec.decode(dn, offsets[i])
                nd = src.nodata if extra_nodata is None else extra_nodata[i]
                if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
                    band[dn == nd] = np.nan
                return band

            bands = _read_onto(src, [files[i][1] for i in slots], f, grid, to_float)
            for i, band in zip(slots, bands, strict=True):
                refl[i] = band
            del bands
    valid = np.isfinite(refl).all(axis=0)
    refl[:, ~valid] = np.nan
    return refl, valid, grid


def _s2_files(folder: Path, spec: sensors.SensorSpec, safe: bool) -> list[tuple[Path, int]]:
    """(file, band 1) of the six optical bands of an S2 product / band folder."""
    band_files = _s2_band_files(folder)
    missing = [b for b in spec.bands.values() if b not in band_files]
    if missing:
        where = folder / "GRANULE" / "*" / "IMG_DATA" if safe else folder
        raise InputError(where, f"missing band file(s) {', '.join(missing)} (.jp2 or .tif)")
    return [(band_files[spec.bands[b]], 1) for b in OPTICAL_BANDS]


def _read_s2(folder: Path, grid: Grid | None, safe: bool) -> Scene:
    mtd = next(iter(sorted(folder.glob("MTD_MSIL2A.xml"))), None) or next(
        iter(sorted(folder.rglob("MTD_MSIL2A.xml"))), None
    )
    tl = next(iter(sorted(folder.glob("GRANULE/*/MTD_TL.xml"))), None) or next(
        iter(sorted(folder.rglob("MTD_TL.xml"))), None
    )
    if safe and mtd is None:
        raise InputError(folder / "MTD_MSIL2A.xml", "Sentinel-2 product metadata not found")
    baseline, quant, acquired = None, sensors.S2_QUANTIFICATION, None
    band_offsets: dict[int, float] = {}
    if mtd is not None:
        root = _parse_xml(mtd)
        baseline = _xml_text(root, "PROCESSING_BASELINE")
        q = _xml_text(root, "BOA_QUANTIFICATION_VALUE")
        quant = float(q) if q else quant
        lst = _xml_find(root, "BOA_ADD_OFFSET_VALUES_LIST")
        if lst is not None:
            for el in lst:
                if _local(el.tag) == "BOA_ADD_OFFSET" and el.text:
                    band_offsets[int(el.get("band_id", "-1"))] = float(el.text)
        t = _xml_text(root, "PRODUCT_START_TIME")
        if t:
            try:
                acquired = _parse_time(t)
            except ValueError:
                raise InputError(mtd, f"bad PRODUCT_START_TIME {t!r}") from None
    if baseline is None:
        m = re.search(r"_N(\d{2})(\d{2})_", folder.name)
        baseline = f"{m.group(1)}.{m.group(2)}" if m else None
    spec = sensors.sentinel2(baseline, quantification=quant)
    sun_az = sun_el = None
    if tl is not None:
        root = _parse_xml(tl)
        mean = _xml_find(root, "Mean_Sun_Angle")
        if mean is not None:
            zen, az = _xml_text(mean, "ZENITH_ANGLE"), _xml_text(mean, "AZIMUTH_ANGLE")
            if zen and az:
                sun_az, sun_el = float(az), 90.0 - float(zen)
        if acquired is None and (t := _xml_text(root, "SENSING_TIME")):
            acquired = _parse_time(t)
    names = [spec.bands[b] for b in OPTICAL_BANDS]
    files = _s2_files(folder, spec, safe)
    offsets = [
        band_offsets[_S2_BAND_ID[n]] * spec.scale if _S2_BAND_ID[n] in band_offsets else None
        for n in names
    ]
    if acquired is None:
        acquired = _time_from_name(folder.name) or _time_from_name(files[0][0].name)
    if acquired is None:
        raise InputError(
            folder,
            "no acquisition time (no MTD_MSIL2A.xml/MTD_TL.xml and no "
            "YYYYMMDDTHHMMSS in the names)",
        )
    refl, valid, grid = _assemble(files, spec, grid, offsets)
    if sun_az is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    scene_id = folder.name[:-5] if folder.name.upper().endswith(".SAFE") else folder.name
    return Scene(
        reflectance=refl,
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        sensor=spec.name,
        scene_id=scene_id,
        acquired=acquired,
        sun_azimuth_deg=float(sun_az),
        sun_elevation_deg=float(sun_el),
        source=folder,
        metadata={
            "processing_baseline": baseline,
            "boa_offsets": band_offsets,
            "quantification": quant,
            "band_files": [str(f) for f, _ in files],
        },
    )


def _parse_mtl(path: Path) -> dict[str, dict[str, str]]:
    """Landsat MTL (txt `GROUP = ...` / `KEY = VALUE` or the XML form) -> {group: {key: value}}."""
    groups: dict[str, dict[str, str]] = {}
    try:
        if path.suffix.lower() == ".xml":
            root = _parse_xml(path)
            for grp in root:
                groups[_local(grp.tag)] = {
                    _local(el.tag): (el.text or "").strip() for el in grp if len(el) == 0
                }
            return groups
        stack: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            if "=" not in line:
                continue
            k, v = (s.strip() for s in line.split("=", 1))
            if k == "GROUP":
                stack.append(v)
            elif k == "END_GROUP":
                if stack:
                    stack.pop()
            else:
                groups.setdefault(stack[-1] if stack else "", {})[k] = v.strip('"')
    except (OSError, UnicodeError) as exc:
        raise InputError(path, f"cannot read MTL ({_first_line(exc)})") from None
    return groups


def _mtl_get(groups: dict[str, dict[str, str]], key: str, prefer: str | None = None) -> str | None:
    if prefer and key in groups.get(prefer, {}):
        return groups[prefer][key]
    for g in groups.values():
        if key in g and g[key] not in ("", "NULL"):
            return g[key]
    return None


def _landsat_product(mtl: Path) -> tuple[dict, str, str, sensors.SensorSpec]:
    """(MTL groups, file prefix, product id, sensor spec) of a Landsat C2 L2 product."""
    groups = _parse_mtl(mtl)
    if not groups:
        raise InputError(mtl, "empty or unreadable MTL")
    prefix = re.sub(r"_MTL\.(txt|xml)$", "", mtl.name, flags=re.I)
    product_id = _mtl_get(groups, "LANDSAT_PRODUCT_ID") or prefix
    mission = sensors.landsat_mission(product_id) or sensors.landsat_mission(
        _mtl_get(groups, "SPACECRAFT_ID") or ""
    )
    if mission is None:
        raise InputError(mtl, "cannot tell the Landsat mission (LANDSAT_PRODUCT_ID/SPACECRAFT_ID)")
    return groups, prefix, product_id, sensors.landsat(mission)


def _landsat_files(mtl: Path, prefix: str, spec: sensors.SensorSpec) -> list[tuple[Path, int]]:
    """(file, band 1) of the six optical SR bands beside the MTL."""
    files = []
    for b in OPTICAL_BANDS:
        name = spec.bands[b]
        cands = [
            q
            for q in mtl.parent.iterdir()
            if q.stem.upper() == f"{prefix}_{name}".upper()
            and q.suffix.lower() in (".tif", ".tiff")
        ]
        if not cands:
            raise InputError(mtl.parent / f"{prefix}_{name}.TIF", "missing band file")
        files.append((cands[0], 1))
    return files


def _read_landsat(mtl: Path, grid: Grid | None) -> Scene:
    groups, prefix, product_id, spec = _landsat_product(mtl)
    # Level-2 SR coefficients from the MTL when given (not the Level-1 TOA ones).
    l2 = "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"
    mults, adds = [], []
    for name in (spec.bands[b] for b in OPTICAL_BANDS):
        n = name.split("_B")[-1]
        mult = groups.get(l2, {}).get(f"REFLECTANCE_MULT_BAND_{n}")
        add = groups.get(l2, {}).get(f"REFLECTANCE_ADD_BAND_{n}")
        mults.append(float(mult) if mult else None)
        adds.append(float(add) if add else None)
    if any(m is not None and abs(m - spec.scale) > 1e-12 for m in mults):
        raise InputError(mtl, f"unexpected SR scale {mults} (Collection-2 L2 uses 2.75e-05)")
    files = _landsat_files(mtl, prefix, spec)
    date = _mtl_get(groups, "DATE_ACQUIRED")
    ctime = _mtl_get(groups, "SCENE_CENTER_TIME")
    acquired = None
    if date:
        try:
            acquired = _parse_time(f"{date}T{ctime or '00:00:00'}")
        except ValueError:
            raise InputError(
                mtl, f"bad DATE_ACQUIRED/SCENE_CENTER_TIME {date!r} {ctime!r}"
            ) from None
    az, el = _mtl_get(groups, "SUN_AZIMUTH"), _mtl_get(groups, "SUN_ELEVATION")
    if (az is None or el is None) and (acquired is None or ctime is None):
        raise InputError(
            mtl,
            "no sun angles (SUN_AZIMUTH/SUN_ELEVATION) and no acquisition "
            "time (DATE_ACQUIRED + SCENE_CENTER_TIME) to compute them",
        )
    if acquired is None:
        raise InputError(mtl, "no acquisition date (DATE_ACQUIRED)")
    refl, valid, grid = _assemble(files, spec, grid, adds)
    if az is None or el is None:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    else:
        sun_az, sun_el = float(az), float(el)
    return Scene(
        reflectance=refl,
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        sensor=spec.name,
        scene_id=product_id,
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=mtl.parent,
        metadata={
            "mtl": str(mtl),
            "band_files": [str(f) for f, _ in files],
            "sun_angles": "computed" if az is None else "MTL",
        },
    )


def _read_generic(path: Path, grid: Grid | None, band_map, scale, offset) -> Scene:
    with _open_raster(path) as src:
        count, tags = src.count, src.tags()
        nodata = src.nodata
    try:
        spec = sensors.generic(band_map, scale, offset, count)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    acquired = None
    for key in ("ACQUISITION_TIME", "ACQUIRED", "acquired", "DATE_ACQUIRED"):
        if key in tags:
            try:
                acquired = _parse_time(tags[key])
                break
            except ValueError:
                raise InputError(path, f"bad {key} tag {tags[key]!r}") from None
    acquired = acquired or _time_from_name(path.name)
    if acquired is None:
        raise InputError(
            path,
            "no acquisition time (tag ACQUISITION_TIME or a YYYYMMDD in the "
            "file name) to place the sun",
        )
    files = [(path, int(spec.bands[b])) for b in OPTICAL_BANDS]
    refl, valid, grid = _assemble(files, spec, grid, [None] * 6, [nodata] * 6)
    if "SUN_AZIMUTH" in tags and "SUN_ELEVATION" in tags:
        sun_az, sun_el = float(tags["SUN_AZIMUTH"]), float(tags["SUN_ELEVATION"])
    else:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    return Scene(
        reflectance=refl,
        valid=valid,
        transform=grid.transform,
        crs=grid.crs,
        sensor=tags.get("SENSOR", "generic"),
        scene_id=tags.get("SCENE_ID", path.stem),
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=path,
        metadata={
            "band_map": {b: int(spec.bands[b]) for b in OPTICAL_BANDS},
            "scale": spec.scale,
            "offset": spec.offset,
        },
    )


# ---------------------------------------------------------------------------- feature stack


def _pad_grid(grid: Grid, pad: int) -> Grid:
    from rasterio.transform import Affine

    t = grid.transform
    return Grid(
        grid.crs, t @ Affine.translation(-pad, -pad), grid.height + 2 * pad, grid.width + 2 * pad
    )


def _read_dem(dem_path, grid: Grid, scene_grid: Grid) -> np.ndarray:
    """DEM elevation (float32, NaN nodata) on `grid` (the scene grid + terrain margin),
    reading only the DEM window under it."""
    from rasterio.warp import transform_bounds

    with _open_raster(dem_path) as src:
        if src.crs is None:
            raise InputError(dem_path, "DEM has no CRS")
        w, s, e, n = transform_bounds(scene_grid.crs, src.crs, *scene_grid.bounds)
        b = src.bounds
        if w >= b.right or e <= b.left or s >= b.top or n <= b.bottom:
            raise InputError(dem_path, "DEM does not overlap the scene")
        nodata = src.nodata

        def to_float(_k: int, raw: np.ndarray) -> np.ndarray:
            z = raw.astype(np.float32)
            if nodata is not None:
                z[z == nodata] = np.nan
            z[~np.isfinite(z)] = np.nan
            return z

        return _read_onto(src, [1], dem_path, grid, to_float)[0]


def _read_outlines(outlines_path, grid: Grid):
    """Outlines that intersect `grid`, in its CRS, in file (FID) order; only features whose
    bounding box meets the grid are read (GeoPackage/shapefile spatial index)."""
    import geopandas as gpd
    import pyogrio
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    p = Path(outlines_path)
    if not p.exists():
        raise InputError(p, "file not found")
    try:
        crs = pyogrio.read_info(p).get("crs")
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(p, f"cannot read outlines ({_first_line(exc)})") from None
    bbox = None
    if crs:
        try:  # the grid's box in the file CRS, densified and widened a little
            w, s, e, n = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
            pad = 1e-3 * max(e - w, n - s)
            bbox = (w - pad, s - pad, e + pad, n + pad)
        except Exception:  # noqa: BLE001 - no bbox filter then; the exact test follows
            bbox = None
    try:
        gdf = gpd.read_file(p, bbox=bbox, engine="pyogrio", fid_as_index=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise InputError(p, f"cannot read outlines ({_first_line(exc)})") from None
    if gdf.crs is None:
        raise InputError(p, "outlines have no CRS")
    gdf = gdf.sort_index()
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    inter = gdf.geometry.intersects(box(*grid.bounds))
    gdf = gdf[inter].reset_index(drop=True)
    if gdf.empty:
        raise InputError(p, "no outline intersects the scene")
    return gdf


def build_feature_stack(
    scene: Scene, dem_path: str | os.PathLike, outlines_path: str | os.PathLike
) -> FeatureStack:
    """The 11 features on the scene's grid (FEATURE_NAMES order; units in FeatureStack).

    The DEM is reprojected onto the scene grid plus a TERRAIN_MARGIN_M margin (bilinear),
    so slopes, cast shadows and proximity see terrain and outlines beyond the scene edge: a
    block of a scene gets the whole scene's features wherever that margin holds the terrain
    and the nearest outline edge. Only the DEM window and the outlines under the padded grid
    are read. Cast shadow and hillshade use the scene's sun. Outlines in another CRS are
    reprojected.
    """
    from rasterio.features import rasterize
    from shapely.geometry import box

    grid = scene.grid
    res_x, res_y = abs(grid.transform.a), abs(grid.transform.e)
    pad = int(math.ceil(TERRAIN_MARGIN_M / max(res_x, res_y)))
    pgrid = _pad_grid(grid, pad)
    inner = (slice(pad, pad + grid.height), slice(pad, pad + grid.width))
    # Outlines within the terrain margin count for proximity; `outlines` (and the indices
    # in glacier_index) are those that touch the scene, in file order.
    near = _read_outlines(outlines_path, pgrid)
    touch = near.geometry.intersects(box(*grid.bounds)).to_numpy()
    if not touch.any():
        raise InputError(outlines_path, "no outline intersects the scene")
    outlines = near[touch].reset_index(drop=True)
    z = _read_dem(dem_path, pgrid, grid)
    if not np.isfinite(z[inner]).any():
        raise InputError(dem_path, "DEM has no valid elevation over the scene")
    grads = terrain.horn_gradients(z, (res_x, res_y))
    slope = terrain.slope_from_gradients(*grads)
    shadow = terrain.cast_shadow(z, (res_x, res_y), scene.sun_azimuth_deg, scene.sun_elevation_deg)
    hs = terrain.hillshade(
        z,
        (res_x, res_y),
        scene.sun_azimuth_deg,
        max(scene.sun_elevation_deg, 0.0),
        gradients=grads,
    )
    del grads
    n = len(outlines)
    codes = np.where(touch, np.cumsum(touch), n + 1 + np.arange(len(near)))
    shapes = ((geom, int(c)) for geom, c in zip(near.geometry, codes, strict=True))
    gidx = rasterize(
        shapes, out_shape=pgrid.shape, transform=pgrid.transform, fill=0, dtype="int32"
    )
    prox = terrain.proximity(gidx > 0, (res_x, res_y))
    gin = gidx[inner]
    gin[gin > n] = 0  # an outline off the scene covers no scene pixel centre; be sure

    feats = np.empty((len(FEATURE_NAMES),) + grid.shape, dtype=np.float32)
    feats[: len(OPTICAL_BANDS)] = scene.reflectance
    zin = z[inner]
    terrain_layers = {
        "elevation": zin,
        "slope": slope[inner],
        "shadow_mask": shadow[inner].astype(np.float32),
        "hillshade": hs[inner].astype(np.float32),
        "proximity": prox[inner],
    }
    for name, layer in terrain_layers.items():
        feats[FEATURE_NAMES.index(name)] = layer
    valid = scene.valid & np.isfinite(zin)
    feats[:, ~valid] = np.nan
    meta = dataclasses.replace(scene, reflectance=feats[: len(OPTICAL_BANDS)], valid=valid)
    return FeatureStack(
        features=feats,
        valid=valid,
        glacier_index=np.ascontiguousarray(gin),
        outlines=outlines,
        transform=grid.transform,
        crs=grid.crs,
        scene=meta,
    )


def write_feature_stack(
    stack: FeatureStack, path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write the 11-band float32 GeoTIFF (NaN nodata, band descriptions = feature names,
    scene metadata as tags), atomically."""
    import rasterio

    dest = Path(path)
    h, w = stack.shape
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": len(stack.feature_names),
        "dtype": "float32",
        "crs": stack.crs,
        "transform": stack.transform,
        "nodata": np.nan,
        "compress": "deflate",
        "predictor": 3,
        "BIGTIFF": "IF_SAFER",
        "interleave": "band",
    }
    if h >= 256 and w >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    sc = stack.scene
    with atomic_output(dest, overwrite=overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(stack.features)
            for i, name in enumerate(stack.feature_names, start=1):
                dst.set_band_description(i, name)
            dst.update_tags(
                sensor=sc.sensor,
                scene_id=sc.scene_id,
                acquired=sc.acquired.isoformat(),
                sun_azimuth_deg=f"{sc.sun_azimuth_deg:.4f}",
                sun_elevation_deg=f"{sc.sun_elevation_deg:.4f}",
                source=str(sc.source),
                features=",".join(stack.feature_names),
                units="reflectance x6, m, deg, 0/1, 0..255 (gdaldem), m (>0 inside glacier)",
            )
    return dest


def scene_ids(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The scene_id each path would get from read_scene, without reading pixels."""
    out = []
    for p in map(Path, paths):
        if _is_safe(p) or _is_s2_band_folder(p):
            out.append(p.name[:-5] if p.name.upper().endswith(".SAFE") else p.name)
        elif (mtl := _find_mtl(p)) is not None:
            groups = _parse_mtl(mtl)
            out.append(
                _mtl_get(groups, "LANDSAT_PRODUCT_ID")
                or re.sub(r"_MTL\.(txt|xml)$", "", mtl.name, flags=re.I)
            )
        else:
            with _open_raster(p) as src:
                out.append(src.tags().get("SCENE_ID", p.stem))
    return out
