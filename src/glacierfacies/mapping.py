"""Facies maps of whole scenes: features -> exact dense tiled inference -> smoothing -> COG.

`map_scene` reads a scene, builds its 11 features on the scene's 10 m grid, runs the model
(or an ensemble of fold models, mean calibrated probabilities) tile by tile with a halo of
S // 2 (see `inference.py`: tile seams never change a pixel), keeps pixels inside the glacier
outlines (+ an optional buffer), smooths with a 3x3 mode filter that ignores nodata
(`smoothing.py`) and writes a Cloud-Optimised GeoTIFF (uint8 classes, colour table, class
names, nodata 255, mode overviews), an optional confidence COG and a QGIS style beside the
map. Every output is written to a temporary file and renamed, the map last, so an existing
map means a finished scene: `map_many` (Dask) skips those on a rerun.

Large scenes are processed in blocks of the scene grid (`block_size`), each read as a window
with rasterio and given its own feature stack with a context margin, so peak memory depends
on the block size, not on the scene size.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS, colour_table
from glacierfacies.errors import InputError, atomic_output
from glacierfacies.features import FEATURE_NAMES

PathLike = str | os.PathLike


# ---------------------------------------------------------------- options and models


def parse_buffer(text: str | float | int | None) -> float:
    """'50m', '50 m', '0.05km' or a number (metres) -> metres (>= 0); ValueError otherwise."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m|km)?\s*", str(text).lower())
        if not m:
            raise ValueError(f"cannot read buffer {text!r}; use e.g. 50m or 0.1km")
        value = float(m.group(1)) * (1000.0 if m.group(2) == "km" else 1.0)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"buffer must be >= 0 m, got {text!r}")
    return value


def _card_get(card: Any, key: str, default: Any = None) -> Any:
    if isinstance(card, dict):
        return card.get(key, default)
    return getattr(card, key, default)


def load_members(model_paths: Sequence[PathLike]) -> list:
    """Load fold models and their cards into `inference.Member`s (features, norm, temperature).

    A model that expects a feature this run cannot build is a one-line InputError naming it.
    """
    from glacierfacies.inference import Member
    from glacierfacies.training import load_model

    if not model_paths:
        raise InputError(None, "no model given (--model)")
    members = []
    for path in model_paths:
        if not Path(path).exists():
            raise InputError(path, "model file does not exist")
        model, card = load_model(path)
        names = list(_card_get(card, "features") or [])
        missing = [n for n in names if n not in FEATURE_NAMES]
        if missing or not names:
            raise InputError(
                path,
                f"model expects feature(s) {missing or names} that mapping cannot build "
                f"(available: {', '.join(FEATURE_NAMES)})",
            )
        norm = _card_get(card, "normalisation")
        calib = _card_get(card, "calibration") or {}
        temperature = float(calib.get("temperature", 1.0)) if isinstance(calib, dict) else 1.0
        members.append(
            Member(
                model=model,
                temperature=temperature,
                feature_index=[FEATURE_NAMES.index(n) for n in names],
                minimum=None if norm is None else list(norm["min"]),
                maximum=None if norm is None else list(norm["max"]),
            )
        )
    sizes = {m.patch_size for m in members}
    if len(sizes) > 1:
        raise InputError(model_paths[0], f"ensemble models have different patch sizes {sizes}")
    return members


# ---------------------------------------------------------------- writing


def qml_style() -> str:
    """A QGIS paletted-renderer style with the class names and colours (nodata transparent)."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.code}" color="#{c.colour[0]:02x}{c.colour[1]:02x}'
        f'{c.colour[2]:02x}" alpha="255" label="{c.name}"/>'
        for c in CLASSES
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" opacity="1" band="1" alphaBand="-1" '
        'nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n"
    )


def _write_cog(
    array: np.ndarray,
    dest: Path,
    transform: Any,
    crs: Any,
    nodata: float,
    resampling: str,
    description: str,
    tags: dict[str, str],
    band_tags: dict[str, str] | None = None,
    colormap: dict | None = None,
) -> None:
    """Write a single-band COG at `dest`: a tiled GTiff beside it, then GDAL's COG copy."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    height, width = array.shape
    scratch = dest.with_name(dest.name + ".gtiff")
    profile = dict(
        driver="GTiff", height=height, width=width, count=1, dtype=array.dtype.name,
        crs=crs, transform=transform, nodata=nodata, tiled=True, blockxsize=512,
        blockysize=512, compress="deflate", BIGTIFF="IF_SAFER",
    )
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            dst.write(array, 1)
            dst.set_band_description(1, description)
            dst.update_tags(**tags)
            if band_tags:
                dst.update_tags(1, **band_tags)
            if colormap is not None:
                dst.write_colormap(1, colormap)
        rio_copy(
            scratch, dest, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


def class_tags(extra: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Dataset tags (CLASS_NAMES, NODATA_CLASS, ...) and band tags (CLASS_<code>=name)."""
    tags = {
        "CLASS_NAMES": ",".join(CLASS_NAMES),
        "CLASS_CODES": ",".join(str(c.code) for c in CLASSES),
        "NODATA_CLASS": str(NODATA_CLASS),
        "PRODUCER": "glacierfacies",
    }
    tags.update(extra or {})
    band = {f"CLASS_{c.code}": c.name for c in CLASSES}
    return tags, band


def confidence_array(confidence: np.ndarray, dtype: str = "uint8") -> tuple[np.ndarray, float]:
    """Confidence in [0, 1] with NaN nodata -> (uint8 percent with 255 nodata | float32 NaN)."""
    if dtype == "float32":
        return confidence.astype(np.float32), float("nan")
    if dtype != "uint8":
        raise ValueError(f"confidence dtype must be uint8 or float32, got {dtype!r}")
    out = np.full(confidence.shape, 255, np.uint8)
    ok = np.isfinite(confidence)
    out[ok] = np.clip(np.floor(confidence[ok] * 100.0 + 0.5), 0, 100).astype(np.uint8)
    return out, 255.0


def write_outputs(
    classes: np.ndarray,
    transform: Any,
    crs: Any,
    out: PathLike,
    confidence: np.ndarray | None = None,
    confidence_out: PathLike | None = None,
    confidence_dtype: str = "uint8",
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
) -> list[Path]:
    """Write the class COG, its .qml and the optional confidence COG, atomically.

    All files are written to temporaries first; the class map is renamed last, so its
    presence means every output of the scene is complete.
    """
    out = Path(out)
    targets = [out, out.with_suffix(".qml")]
    if confidence_out is not None:
        targets.append(Path(confidence_out))
    for t in targets:
        if not t.parent.is_dir():
            raise InputError(t.parent, "output folder does not exist")
        if t.exists() and not overwrite:
            raise InputError(t, "output exists; pass --overwrite to replace it")
    ds_tags, band_tags = class_tags(tags)
    with contextlib.ExitStack() as stack:
        # entered first -> renamed last
        tmp_map = stack.enter_context(atomic_output(out, overwrite=overwrite))
        tmp_qml = stack.enter_context(atomic_output(targets[1], overwrite=overwrite))
        if confidence_out is not None:
            tmp_conf = stack.enter_context(atomic_output(confidence_out, overwrite=overwrite))
            conf, nodata = confidence_array(confidence, confidence_dtype)
            _write_cog(
                conf, tmp_conf, transform, crs, nodata, "average",
                "confidence (calibrated probability of the model's class"
                + (", percent)" if confidence_dtype == "uint8" else ")"),
                {"UNITS": "percent" if confidence_dtype == "uint8" else "probability",
                 "PRODUCER": "glacierfacies", **(tags or {})},
            )
        tmp_qml.write_text(qml_style())
        _write_cog(
            classes.astype(np.uint8, copy=False), tmp_map, transform, crs, NODATA_CLASS,
            "mode", "facies class", ds_tags, band_tags, colour_table(),
        )
    return targets


# ---------------------------------------------------------------- masks and checks


def glacier_mask(stack: Any, buffer_m: float = 0.0) -> np.ndarray:
    """Pixels to classify: inside the outlines, or within `buffer_m` metres of them."""
    if buffer_m <= 0:
        return np.asarray(stack.glacier_index) > 0
    from rasterio.features import rasterize

    shapes = [g for g in stack.outlines.geometry.buffer(buffer_m) if g is not None and not g.is_empty]
    height, width = np.asarray(stack.glacier_index).shape
    if not shapes:
        return np.zeros((height, width), bool)
    burned = rasterize(
        ((g, 1) for g in shapes), out_shape=(height, width), transform=stack.transform,
        fill=0, dtype="uint8",
    )
    return burned.astype(bool) | (np.asarray(stack.glacier_index) > 0)


def check_device(device: str) -> str:
    """Validate --device early (before any reading); InputError on unknown/unavailable."""
    from glacierfacies.inference import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    return device


# ---------------------------------------------------------------- one scene


@dataclass
class MapResult:
    """What `map_scene` did: outputs, pixel counts per class, timings."""

    scene: str
    outputs: list[str]
    n_classified: int
    class_counts: dict[str, int]
    seconds: float
    tiles_run: int = 0
    tiles_skipped: int = 0
    extra: dict = field(default_factory=dict)


def predict_stack(
    members: Sequence[Any],
    stack: Any,
    buffer_m: float = 0.0,
    tile_size: int = 1024,
    device: str = "cpu",
    precision: str = "fp32",
    return_probs: bool = False,
    progress: bool = False,
    outlines_path: PathLike | None = None,
):
    """Dense prediction for a FeatureStack (no smoothing): `inference.DensePrediction`."""
    from glacierfacies.inference import dense_predict

    mask = glacier_mask(stack, buffer_m)
    if not mask.any():
        raise InputError(outlines_path, "no glacier outline overlaps the scene")
    return dense_predict(
        members, stack.features, mask=mask, valid=stack.valid, tile_size=tile_size,
        device=device, return_probs=return_probs, precision=precision, progress=progress,
    )


BLOCK_THRESHOLD_PX = 5000 * 5000  # scenes larger than this are mapped block by block
DEFAULT_BLOCK_SIZE = 2048
BLOCK_CONTEXT_PX = 100  # extra context (beyond the receptive halo) read around each block


def scene_grid(scene: PathLike) -> Any:
    """The scene's 10 m grid without reading pixels (`scene.scene_grid`)."""
    from glacierfacies import scene as sc

    return sc.scene_grid(scene)


def _check_dem_overlap(dem: PathLike, grid: Any) -> None:
    """InputError naming the DEM when its bounds miss the scene grid (cheap, no pixels read)."""
    import rasterio
    from rasterio.warp import transform_bounds

    try:
        with rasterio.open(dem) as src:
            if src.crs is None:
                raise InputError(dem, "DEM has no CRS")
            w, s, e, n = transform_bounds(grid.crs, src.crs, *grid.bounds)
            b = src.bounds
    except rasterio.errors.RasterioError as exc:
        raise InputError(dem, f"cannot read DEM ({str(exc).splitlines()[0]})") from None
    if w >= b.right or e <= b.left or s >= b.top or n <= b.bottom:
        raise InputError(dem, "DEM does not overlap the scene")


def _outline_mask(outlines: PathLike, grid: Any, buffer_m: float) -> np.ndarray:
    """Glacier mask (+ buffer) rasterised on the whole scene grid, as build_feature_stack does."""
    from rasterio.features import rasterize

    from glacierfacies import scene as sc

    gdf = sc._read_outlines(outlines, grid)  # raises when no outline touches the scene
    geoms = list(gdf.geometry)
    if buffer_m > 0:
        geoms += [g for g in gdf.geometry.buffer(buffer_m) if g is not None and not g.is_empty]
    mask = rasterize(((g, 1) for g in geoms), out_shape=grid.shape, transform=grid.transform,
                     fill=0, dtype="uint8")
    return mask.astype(bool)


def _predict_blocks(
    members: Sequence[Any], scene: PathLike, dem: PathLike, outlines: PathLike, grid: Any,
    mask: np.ndarray, block_size: int, tile_size: int, device: str, precision: str,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Dense prediction block by block: each block (+ halo + context) read as a window grid.

    Memory ~ one block's features plus the (H, W) class/confidence/mask arrays. Optical
    features equal the whole-scene ones; terrain features see `BLOCK_CONTEXT_PX` plus
    scene.TERRAIN_MARGIN_M of terrain beyond the block (cast shadows longer than that, or
    proximity to an edge farther than that, can differ from a whole-scene run).
    """
    from rasterio.transform import Affine

    from glacierfacies import scene as sc
    from glacierfacies.inference import dense_predict

    height, width = grid.shape
    margin = members[0].patch_size // 2 + BLOCK_CONTEXT_PX
    classes = np.full((height, width), NODATA_CLASS, np.uint8)
    confidence = np.full((height, width), np.nan, np.float32)
    blocks = [(r, c) for r in range(0, height, block_size) for c in range(0, width, block_size)]
    todo = [(r, c) for r, c in blocks if mask[r : r + block_size, c : c + block_size].any()]
    info = {"blocks": len(blocks), "blocks_run": 0, "tiles_run": 0, "tiles_skipped": 0,
            "scene_id": None, "sensor": "", "acquired": ""}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="blocks", unit="block")
    for r0, c0 in todo:
        bh, bw = min(block_size, height - r0), min(block_size, width - c0)
        bgrid = sc.Grid(grid.crs, grid.transform @ Affine.translation(c0 - margin, r0 - margin),
                        bh + 2 * margin, bw + 2 * margin)
        try:
            block_scene = sc.read_scene(scene, grid=bgrid)
        except InputError as exc:
            if "no valid pixel" in exc.problem:
                continue
            raise
        stack = sc.build_feature_stack(block_scene, dem, outlines)
        info.update(scene_id=block_scene.scene_id, sensor=block_scene.sensor,
                    acquired=block_scene.acquired)
        bmask = np.zeros(bgrid.shape, bool)
        rs, cs = max(r0 - margin, 0), max(c0 - margin, 0)
        re_, ce = min(r0 + bh + margin, height), min(c0 + bw + margin, width)
        bmask[rs - (r0 - margin) : re_ - (r0 - margin), cs - (c0 - margin) : ce - (c0 - margin)] \
            = mask[rs:re_, cs:ce]
        pred = dense_predict(members, stack.features, bmask, stack.valid, tile_size=tile_size,
                             device=device, precision=precision)
        core = (slice(margin, margin + bh), slice(margin, margin + bw))
        classes[r0 : r0 + bh, c0 : c0 + bw] = pred.classes[core]
        confidence[r0 : r0 + bh, c0 : c0 + bw] = pred.confidence[core]
        info["blocks_run"] += 1
        info["tiles_run"] += pred.tiles_run
        info["tiles_skipped"] += pred.tiles_skipped
        del stack, block_scene, pred
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return classes, confidence, info


def map_scene(
    scene: PathLike,
    dem: PathLike,
    outlines: PathLike,
    models: Sequence[PathLike],
    out: PathLike,
    confidence_out: PathLike | None = None,
    buffer: str | float = 0.0,
    smoothing: bool = True,
    device: str = "cpu",
    tile_size: int = 1024,
    overwrite: bool = False,
    confidence_dtype: str = "uint8",
    precision: str = "fp32",
    progress: bool = True,
    members: Sequence[Any] | None = None,
    block_size: int | None = None,
) -> MapResult:
    """Map one scene to a facies COG (+ confidence COG, + .qml); see the module docstring.

    `block_size` None: whole-scene features for scenes up to BLOCK_THRESHOLD_PX pixels,
    blocks of DEFAULT_BLOCK_SIZE beyond; 0 forces whole-scene, N > 0 forces blocks of N.
    """
    from glacierfacies.scene import build_feature_stack, read_scene
    from glacierfacies.smoothing import mode_filter

    t0 = time.perf_counter()
    out = Path(out)
    for t in [out, out.with_suffix(".qml")] + ([Path(confidence_out)] if confidence_out else []):
        if not t.parent.is_dir():
            raise InputError(t.parent, "output folder does not exist")
        if t.exists() and not overwrite:
            raise InputError(t, "output exists; pass --overwrite to replace it")
    check_device(device)
    if tile_size < 1:
        raise InputError(None, f"--tile-size must be >= 1, got {tile_size}")
    try:
        buffer_m = parse_buffer(buffer)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if confidence_dtype not in ("uint8", "float32"):
        raise InputError(None, f"confidence dtype must be uint8 or float32, got {confidence_dtype}")
    for p, what in ((scene, "scene"), (dem, "DEM"), (outlines, "outlines")):
        if not Path(p).exists():
            raise InputError(p, f"{what} does not exist")
    if members is None:
        members = load_members(models)
    grid = scene_grid(scene)
    _check_dem_overlap(dem, grid)
    if block_size is None:
        block_size = DEFAULT_BLOCK_SIZE if grid.height * grid.width > BLOCK_THRESHOLD_PX else 0
    if block_size > 0:
        mask = _outline_mask(outlines, grid, buffer_m)
        if not mask.any():
            raise InputError(outlines, "no glacier outline overlaps the scene")
        classes, conf, info = _predict_blocks(
            members, scene, dem, outlines, grid, mask, block_size, tile_size, device,
            precision, progress,
        )
        del mask
        transform, crs = grid.transform, grid.crs
        ident = {k: info.pop(k) for k in ("scene_id", "sensor", "acquired")}
        tiles_run, tiles_skipped = info["tiles_run"], info["tiles_skipped"]
    else:
        sc = read_scene(scene)
        stack = build_feature_stack(sc, dem, outlines)
        pred = predict_stack(
            members, stack, buffer_m, tile_size, device, precision, progress=progress,
            outlines_path=outlines,
        )
        classes, conf = pred.classes, pred.confidence
        transform, crs = stack.transform, stack.crs
        ident = {"scene_id": sc.scene_id, "sensor": sc.sensor, "acquired": sc.acquired}
        tiles_run, tiles_skipped, info = pred.tiles_run, pred.tiles_skipped, {}
        del stack, sc, pred
    if smoothing:
        classes = mode_filter(classes)
    counts = np.bincount(classes[classes != NODATA_CLASS], minlength=len(CLASS_NAMES))
    meta = {
        "SCENE_ID": str(ident["scene_id"] or scene_stem(scene)),
        "SENSOR": str(ident["sensor"]),
        "ACQUIRED": str(ident["acquired"]),
        "MODELS": ",".join(Path(m).name for m in models),
        "SMOOTHING": "mode3x3" if smoothing else "none",
        "BUFFER_M": f"{buffer_m:g}",
    }
    outputs = write_outputs(
        classes, transform, crs, out, conf, confidence_out, confidence_dtype, overwrite, meta,
    )
    return MapResult(
        scene=str(scene), outputs=[str(p) for p in outputs],
        n_classified=int(counts.sum()),
        class_counts={n: int(c) for n, c in zip(CLASS_NAMES, counts, strict=True)},
        seconds=time.perf_counter() - t0, tiles_run=tiles_run, tiles_skipped=tiles_skipped,
        extra=info,
    )


# ---------------------------------------------------------------- many scenes (Dask)


def scene_stem(scene: PathLike) -> str:
    """Output name stem of a scene path: the folder/file name without .SAFE/.tif suffixes."""
    name = Path(scene).name
    for suffix in (".SAFE", ".safe", ".tif", ".tiff", ".TIF", ".vrt", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def output_paths(scene: PathLike, out_dir: PathLike, confidence: bool) -> tuple[Path, Path | None]:
    """Where map-many writes a scene: OUT_DIR/<stem>_facies.tif (+ _confidence.tif)."""
    stem = scene_stem(scene)
    out_dir = Path(out_dir)
    return out_dir / f"{stem}_facies.tif", (
        out_dir / f"{stem}_confidence.tif" if confidence else None
    )


def _map_task(kwargs: dict) -> dict:
    """Dask task: map one scene; bad input comes back as a record (not retried)."""
    try:
        import torch

        torch.set_num_threads(int(kwargs.pop("threads", 1)))
    except ImportError:  # pragma: no cover
        pass
    try:
        res = map_scene(**kwargs, progress=False)
    except InputError as exc:
        return {"scene": str(kwargs["scene"]), "status": "bad input", "message": str(exc)}
    return {"scene": res.scene, "status": "done", "seconds": res.seconds,
            "n_classified": res.n_classified}


@dataclass
class ManyResult:
    """Outcome of `map_many`: per-scene records (done / skipped / bad input / failed)."""

    records: list[dict]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("done", "skipped", "bad input", "failed")]
        lines = [f"map-many: {len(self.records)} scenes: " + ", ".join(parts)]
        lines += [f"  {r['status']}: {r['scene']}: {r.get('message', '')}"
                  for r in self.records if r["status"] in ("bad input", "failed")]
        return "\n".join(lines)


def expand_scenes(pattern: str) -> list[Path]:
    """Scenes matching a glob (files or folders such as *.SAFE), sorted; InputError if none."""
    hits = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern)))
    if not hits:
        raise InputError(pattern, "no scene matches this pattern")
    return hits


def map_many(
    scenes: Sequence[PathLike],
    dem: PathLike,
    outlines: PathLike,
    models: Sequence[PathLike],
    out_dir: PathLike,
    scheduler: str = "local",
    workers: int = 2,
    confidence: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    **options: Any,
) -> ManyResult:
    """Map scenes on Dask distributed: a LocalCluster ('local') or a scheduler ADDRESS.

    Scenes whose map already exists are skipped (atomic writes: exists == finished), so a
    rerun after an interruption maps only the missing ones. A scene that raises is retried
    once by Dask and then reported as failed; bad input is reported without a retry.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(out_dir, "output folder does not exist")
    if workers < 1:
        raise InputError(None, f"--workers must be >= 1, got {workers}")
    check_device(options.get("device", "cpu"))
    for p, what in ((dem, "DEM"), (outlines, "outlines")):
        if not Path(p).exists():
            raise InputError(p, f"{what} does not exist")
    for m in models:
        if not Path(m).exists():
            raise InputError(m, "model file does not exist")
    records: list[dict] = []
    jobs = []
    for scene in scenes:
        out, conf = output_paths(scene, out_dir, confidence)
        if out.exists() and not overwrite:
            records.append({"scene": str(scene), "status": "skipped", "message": "exists"})
            continue
        jobs.append(dict(scene=str(scene), dem=str(dem), outlines=str(outlines),
                         models=[str(m) for m in models], out=str(out),
                         confidence_out=None if conf is None else str(conf),
                         # the map is missing: companions (.qml, confidence) left by an
                         # interrupted run are stale and get replaced
                         overwrite=True, **options))
    if not jobs:
        return ManyResult(records)
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=40,
            ))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="20s"))
            except OSError as exc:
                raise InputError(scheduler, f"cannot reach Dask scheduler: {exc}") from None
        futures = {}
        for job in jobs:
            job["threads"] = 1
            fut = client.submit(_map_task, job, retries=1, pure=False,
                                key=f"map-{scene_stem(job['scene'])}-{time.time_ns()}")
            futures[fut] = job["scene"]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc="scenes", unit="scene")
        for fut in as_completed(list(futures)):
            try:
                records.append(fut.result())
            except Exception as exc:  # failed twice (Dask retried once)
                records.append({"scene": futures[fut], "status": "failed",
                                "message": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return ManyResult(records)
