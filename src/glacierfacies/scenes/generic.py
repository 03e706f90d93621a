"""Generic GeoTIFF stacks: a band map names which band holds which optical band."""

from __future__ import annotations

from pathlib import Path

from glacierfacies.errors import InputError
from glacierfacies.features import OPTICAL_BANDS
from glacierfacies.scenes.base import (
    Scene,
    _assemble,
    _assume_time,
    _name_has_time,
    _parse_time,
    _sun_from_time,
    _time_from_name,
)
from glacierfacies.scenes.grid import Grid, _grid_of_files, _open_raster
from glacierfacies.scenes.options import ReadOptions
from glacierfacies.scenes.spec import SensorSpec


def generic(
    band_map: dict[str, int] | None, scale: float | None, offset: float | None, count: int
) -> SensorSpec:
    """A plain GeoTIFF stack: `band_map` feature -> 1-based band (default: bands 1..6 in
    feature order, only when the file has exactly 6 bands); scale/offset default 1 and 0.
    No DN is nodata unless the file says so (scene.py applies the file's nodata)."""
    if band_map is None:
        if count != 6:
            raise ValueError(
                f"a {count}-band GeoTIFF needs a band map (e.g. blue=1,green=2,...,swir2=6)"
            )
        band_map = {name: i + 1 for i, name in enumerate(OPTICAL_BANDS)}
    missing = [b for b in OPTICAL_BANDS if b not in band_map]
    unknown = [b for b in band_map if b not in OPTICAL_BANDS]
    if missing or unknown:
        raise ValueError(
            f"band map must name exactly {', '.join(OPTICAL_BANDS)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    bad = {k: v for k, v in band_map.items() if not (1 <= int(v) <= count)}
    if bad:
        raise ValueError(f"band map indexes {bad} outside 1..{count}")
    return SensorSpec(
        name="generic",
        bands={k: str(int(band_map[k])) for k in OPTICAL_BANDS},
        scale=1.0 if scale is None else float(scale),
        offset=0.0 if offset is None else float(offset),
        nodata_dn=None,
        saturated_dn=None,
    )


def parse_band_map(text: str) -> dict[str, int]:
    """'blue=1,green=2,...' -> {'blue': 1, ...} (for the CLI)."""
    out: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"band map entry {part!r} is not name=index")
        k, v = part.split("=", 1)
        out[k.strip()] = int(v)
    return out


def _is_stack(path: Path) -> bool:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return src.count >= 6
    except Exception:  # noqa: BLE001 - unreadable files are not scenes
        return False


def _read_generic(path: Path, grid: Grid | None, options: ReadOptions | None = None) -> Scene:
    options = options or ReadOptions()
    with _open_raster(path) as src:
        count, tags = src.count, src.tags()
    try:
        spec = generic(options.band_map, options.scale, options.offset, count)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    acquired, time_note = None, None
    for key in ("ACQUISITION_TIME", "ACQUIRED", "acquired", "DATE_ACQUIRED"):
        if key in tags:
            try:
                acquired = _parse_time(tags[key])
                break
            except ValueError:
                raise InputError(path, f"bad {key} tag {tags[key]!r}") from None
    files = [(path, int(spec.bands[b])) for b in OPTICAL_BANDS]
    has_sun = "SUN_AZIMUTH" in tags and "SUN_ELEVATION" in tags
    if acquired is None and (acquired := _time_from_name(path.name)) is not None:
        if not _name_has_time(path.name) and not has_sun:
            acquired, time_note = _assume_time(acquired.date(), _grid_of_files(files),
                                               10.5, path)
    if acquired is None:
        raise InputError(
            path,
            "no acquisition time (tag ACQUISITION_TIME or a YYYYMMDD in the "
            "file name) to place the sun",
        )
    refl, valid, grid = _assemble(files, spec, grid, [None] * 6, [options.nodata] * 6)
    if has_sun:
        sun_az, sun_el = float(tags["SUN_AZIMUTH"]), float(tags["SUN_ELEVATION"])
    else:
        sun_az, sun_el = _sun_from_time(acquired, grid)
    meta = {
        "band_map": {b: int(spec.bands[b]) for b in OPTICAL_BANDS},
        "scale": spec.scale,
        "offset": spec.offset,
        "nodata": options.nodata,
        "product_mask": "none (GeoTIFF stack)",
        "sun_angles": "tags" if has_sun else "computed",
    }
    return Scene.on_grid(
        grid,
        reflectance=refl,
        valid=valid,
        sensor=tags.get("SENSOR", "generic"),
        scene_id=tags.get("SCENE_ID", path.stem),
        acquired=acquired,
        sun_azimuth_deg=sun_az,
        sun_elevation_deg=sun_el,
        source=path,
        metadata=meta,
        time_note=time_note,
    )
