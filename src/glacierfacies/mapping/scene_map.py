"""Map one scene: feature stack (whole or by blocks) -> dense ensemble inference -> COG."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import check_output_folder
from glacierfacies.classes import CLASS_NAMES
from glacierfacies.errors import InputError
from glacierfacies.mapping.cog import COG_CACHE_MB
from glacierfacies.mapping.config import MapConfig, PathLike
from glacierfacies.model.card import check_resolution, load_members, trained_classes


def glacier_mask(stack: Any, buffer_m: float = 0.0) -> np.ndarray:
    """Pixels to classify: inside the outlines, or within `buffer_m` metres of them.

    Burned by `outlines.rasterise_outlines` on the stack's grid, as block-wise mapping burns
    it on each block's window (`window_mask`), so both modes classify the same pixels.
    """
    from glacierfacies.outlines import rasterise_outlines

    return rasterise_outlines(stack.grid, stack.outlines, buffer_m=buffer_m, as_mask=True)


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
    from glacierfacies.mapping.inference import dense_predict

    mask = glacier_mask(stack, buffer_m)
    if not mask.any():
        raise InputError(outlines_path, "no glacier outline overlaps the scene")
    return dense_predict(
        members, stack.features, mask=mask, observed=stack.observed, tile_size=tile_size,
        device=device, return_probs=return_probs, precision=precision, progress=progress,
    )


BLOCK_THRESHOLD_PX = 5000 * 5000  # scenes larger than this are mapped block by block


DEFAULT_BLOCK_SIZE = 2048


#: Tiles on CPU are at most this size: a 1024 px tile of the paper-width model holds ~0.6 GB
#: of activations for a few % less halo work; maps do not depend on the tile size.
CPU_MAX_TILE_PX = 512


BLOCK_CONTEXT_PX = 100  # extra context (beyond the receptive halo) read around each block


def scene_grid(scene: PathLike, resolution_m: float = 10.0) -> Any:
    """The scene's grid (10 m, or `resolution_m`) without reading pixels
    (`scenes.reader.scene_grid`)."""
    from glacierfacies.scenes.reader import scene_grid as _scene_grid

    return _scene_grid(scene, resolution_m)


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


def window_mask(gdf: Any, grid: Any, r0: int, c0: int, h: int, w: int,
                buffer_m: float) -> np.ndarray:
    """Glacier mask (+ buffer) of the window (r0, c0, h, w) of `grid`, burned on that window
    without building its feature stack: what `glacier_mask` gives on those pixels."""

    from glacierfacies.outlines import rasterise_outlines

    return rasterise_outlines(grid.window(r0, c0, h, w), gdf, buffer_m=buffer_m, as_mask=True)


def core_of(margin: int, bh: int, bw: int) -> tuple[slice, slice]:
    """The block itself inside its (block + margin) arrays."""
    return slice(margin, margin + bh), slice(margin, margin + bw)


def _predict_blocks(
    members: Sequence[Any], scene: PathLike, dem: PathLike, outlines: PathLike, grid: Any,
    buffer_m: float, block_size: int, tile_size: int, device: str, precision: str,
    progress: bool, writer: Any, read: Any = None, return_probs: bool = False,
) -> dict:
    """Dense prediction block by block into `writer` (a `BlockMapWriter`): each block
    (+ halo + context) read as a window grid, its glacier mask burned on that window.

    Memory ~ one block's features; nothing of the scene's size is held. Every block uses
    the whole scene's `stack.TerrainContext` (DEM margin from relief and sun elevation,
    proximity margin from the glaciers' size, sun azimuth turned to grid north), so its
    features, hence its map, equal a whole-scene run's on glacier pixels.
    """

    from glacierfacies.mapping.inference import dense_predict
    from glacierfacies.outlines import read_outlines
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, scene_notes, terrain_context

    height, width = grid.shape
    margin = members[0].patch_size // 2 + BLOCK_CONTEXT_PX
    context = None
    gdf = read_outlines(outlines, grid=grid)  # raises when no outline touches the scene

    blocks = [(r, c) for r in range(0, height, block_size) for c in range(0, width, block_size)]
    todo = []
    for r0, c0 in blocks:
        bh, bw = min(block_size, height - r0), min(block_size, width - c0)
        if window_mask(gdf, grid, r0, c0, bh, bw, buffer_m).any():
            todo.append((r0, c0))
        else:
            writer.write_nodata(r0, c0, bh, bw)
    if not todo:
        raise InputError(outlines, "no glacier outline overlaps the scene")
    info = {"blocks": len(blocks), "blocks_run": 0, "tiles_run": 0, "tiles_skipped": 0,
            "scene_id": None, "sensor": "", "acquired": "", "notes": {}, "terrain": {}}
    bar = None
    if progress:
        from glacierfacies.progress import tqdm

        bar = tqdm(total=len(todo), desc="blocks", unit="block")
    for r0, c0 in todo:
        bh, bw = min(block_size, height - r0), min(block_size, width - c0)
        bgrid = grid.window(r0 - margin, c0 - margin, bh + 2 * margin, bw + 2 * margin)
        try:
            block_scene = read_scene(scene, grid=bgrid, options=read)
        except InputError as exc:
            if "no valid pixel" in exc.problem:
                writer.write_nodata(r0, c0, bh, bw)
                continue
            raise
        if context is None:  # the whole scene's margins and sun, for every block
            context = terrain_context(block_scene, dem, outlines, grid=grid)
        stack = build_feature_stack(block_scene, dem, outlines, context=context)
        info.update(scene_id=block_scene.scene_id, sensor=block_scene.sensor,
                    acquired=block_scene.acquired, notes=scene_notes(block_scene),
                    terrain=context.tags())
        bmask = np.zeros(bgrid.shape, bool)
        rs, cs = max(r0 - margin, 0), max(c0 - margin, 0)
        re_, ce = min(r0 + bh + margin, height), min(c0 + bw + margin, width)
        bmask[rs - (r0 - margin) : re_ - (r0 - margin), cs - (c0 - margin) : ce - (c0 - margin)] \
            = window_mask(gdf, grid, rs, cs, re_ - rs, ce - cs, buffer_m)
        qa = None if block_scene.qa is None else block_scene.qa[core_of(margin, bh, bw)]
        del block_scene  # its reflectance is copied into the stack
        pred = dense_predict(members, stack.features, bmask, observed=stack.observed,
                             tile_size=tile_size,
                             device=device, precision=precision, return_probs=return_probs)
        core = core_of(margin, bh, bw)
        writer.write(r0, c0, pred.classes[core], pred.confidence[core], qa,
                     None if pred.probs is None else pred.probs[(slice(None), *core)],
                     None if pred.member_classes is None
                     else pred.member_classes[(slice(None), *core)])
        info["blocks_run"] += 1
        info["tiles_run"] += pred.tiles_run
        info["tiles_skipped"] += pred.tiles_skipped
        del stack, pred, bmask
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return info


def map_scene(
    scene: PathLike,
    dem: PathLike,
    outlines: PathLike,
    models: Sequence[PathLike],
    out: PathLike,
    *,
    config: MapConfig | None = None,
    confidence_out: PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    members: Sequence[Any] | None = None,
    probabilities_out: PathLike | None = None,
) -> MapResult:
    """Map one scene to a facies COG (+ confidence COG, + .qml); options in `MapConfig`.

    Pixels the product's own mask removes are nodata (255). When the product has mask files,
    their QA band (`scenes.masks.QA_*` bits) is written beside the map as `<out stem>_qa.tif`;
    the tags PRODUCT_MASK and SATURATION say which masks were used. `members` (loaded
    ensemble members) saves reloading the models for every scene. `probabilities_out` also
    writes the calibrated class probabilities (8 bands, float32, before smoothing): what
    `products` needs for uncertainties and ``--shadow probabilities``.
    """
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, scene_notes

    t0 = time.perf_counter()
    out = Path(out)
    extra_outs = [Path(p) for p in (confidence_out, probabilities_out) if p]
    from glacierfacies.stac import map_item_path, write_map_item

    for t in [out, out.with_suffix(".qml"), map_item_path(out), *extra_outs]:
        check_output_folder(t.parent)
        if t.exists() and not overwrite:
            raise InputError(t, "output exists; pass --overwrite to replace it")
    cfg = (config or MapConfig()).check()
    buffer_m, device, tile_size, precision = cfg.buffer_m, cfg.device, cfg.tile_size, cfg.precision
    if str(device).startswith("cpu"):  # same maps, a third of the activation memory
        tile_size = min(tile_size, CPU_MAX_TILE_PX)
    block_size, smoothing = cfg.block_size, cfg.smoothing
    from glacierfacies.scenes.stac import is_stac

    for p, what in ((scene, "scene"), (dem, "DEM"), (outlines, "outlines")):
        if not Path(p).exists() and not (what == "scene" and is_stac(p)):  # FILE.json#ID
            raise InputError(p, f"{what} does not exist")
    resolution_m = 10.0 if cfg.read is None else cfg.read.resolution_m
    check_resolution(models, resolution_m)
    if members is None:
        members = load_members(models)
    grid = scene_grid(scene, resolution_m)
    _check_dem_overlap(dem, grid)
    if block_size is None:
        block_size = DEFAULT_BLOCK_SIZE if grid.height * grid.width > BLOCK_THRESHOLD_PX else 0
    import rasterio

    from glacierfacies.mapping.blockwrite import BlockMapWriter

    writer = BlockMapWriter(grid, out, confidence_out=confidence_out,
                            confidence_dtype=cfg.confidence_dtype, qa_out=qa_path(out),
                            probabilities_out=probabilities_out, overwrite=overwrite,
                            smoothing=smoothing,
                            member_names=[f"member {k}" for k in range(len(members))]
                            if len(members) > 1 else None)
    # a bounded GDAL block cache: scratch writes and COG copies stay small on a whole tile
    with rasterio.Env(GDAL_CACHEMAX=COG_CACHE_MB), writer:
        if block_size > 0:
            info = _predict_blocks(
                members, scene, dem, outlines, grid, buffer_m, block_size, tile_size, device,
                precision, progress, writer, cfg.read,
                return_probs=probabilities_out is not None,
            )
            ident = {k: info.pop(k) for k in ("scene_id", "sensor", "acquired", "notes",
                                               "terrain")}
            tiles_run, tiles_skipped = info["tiles_run"], info["tiles_skipped"]
        else:
            sc = read_scene(scene, options=cfg.read)
            stack = build_feature_stack(sc, dem, outlines)
            pred = predict_stack(
                members, stack, buffer_m, tile_size, device, precision, progress=progress,
                outlines_path=outlines, return_probs=probabilities_out is not None,
            )
            writer.write(0, 0, pred.classes, pred.confidence, sc.qa, pred.probs,
                         pred.member_classes)
            ident = {"scene_id": sc.scene_id, "sensor": sc.sensor, "acquired": sc.acquired,
                     "notes": scene_notes(sc), "terrain": stack.terrain.tags()}
            tiles_run, tiles_skipped, info = pred.tiles_run, pred.tiles_skipped, {}
            del stack, sc, pred
        from glacierfacies.model.builtin import sensor_warning

        mismatch = sensor_warning(models, str(ident["sensor"]))
        if mismatch:
            warnings.warn(mismatch, stacklevel=2)
        meta = {
            **({"WARNING": mismatch} if mismatch else {}),
            "SCENE_ID": str(ident["scene_id"] or scene_stem(scene)),
            "SENSOR": str(ident["sensor"]),
            "ACQUIRED": str(ident["acquired"]),
            "MODELS": ",".join(Path(m).name for m in models),
            "SMOOTHING": "mode3x3" if smoothing else "none",
            "BUFFER_M": f"{buffer_m:g}",
            **{k.upper(): v for k, v in ident["notes"].items()},
            **ident["terrain"],
        }
        if writer.has_qa:
            meta["QA"] = qa_path(out).name
        classes = trained_classes(models) if models else None
        if classes is not None:  # what the model can see: products say firn_mapped from it
            meta["MODEL_CLASSES"] = ",".join(c for c in CLASS_NAMES if c in classes)
        outputs, counts = writer.finish(meta)
    outputs.append(_write_item(out, scene, confidence_out, probabilities_out, "QA" in meta,
                               models, write_map_item))
    return MapResult(
        scene=str(scene), outputs=[str(p) for p in outputs],
        n_classified=int(counts.sum()),
        class_counts={n: int(c) for n, c in zip(CLASS_NAMES, counts, strict=True)},
        seconds=time.perf_counter() - t0, tiles_run=tiles_run, tiles_skipped=tiles_skipped,
        extra=info,
    )


def _write_item(out: Path, scene: PathLike, confidence_out: PathLike | None,
                probabilities_out: PathLike | None, has_qa: bool, models: Sequence[PathLike],
                write_map_item: Any) -> Path:
    """The map's STAC item beside it (`glacierfacies.stac`), linked to the scene's own item
    when the scene was read from one."""
    from glacierfacies.scenes.stac import is_stac, split_ref

    source = split_ref(scene)[0] if str(scene).lower().split("#")[0].endswith(".json") \
        and is_stac(scene) else None
    return write_map_item(out, confidence=confidence_out, probabilities=probabilities_out,
                          qa=qa_path(out) if has_qa else None, source_item=source,
                          models=[Path(m).name for m in models])


def qa_path(out: PathLike) -> Path:
    """Where the QA band of a map goes: <map stem>_qa.tif beside it."""
    out = Path(out)
    return out.with_name(out.stem + "_qa.tif")


def scene_stem(scene: PathLike) -> str:
    """Output name stem of a scene path: the folder/file name without .SAFE/.tif/.zip/.tar
    suffixes (an HLS band file gives its granule's name)."""
    import re

    from glacierfacies.scenes.stac import is_stac, stac_scene_id

    if str(scene).lower().endswith(".json") or ".json#" in str(scene).lower():
        if is_stac(scene):  # a STAC item: its id
            return stac_scene_id(scene)
    name = Path(scene).name
    for suffix in (".zip", ".ZIP", ".gz", ".tgz", ".tar", ".TAR", ".SAFE", ".safe", ".tif",
                   ".tiff", ".TIF", ".vrt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    m = re.match(r"^(HLS\.[A-Z]\d{2}\..+\.v\d+\.\d+)\.\w+$", name)
    return m.group(1) if m else name


def output_paths(scene: PathLike, out_dir: PathLike, confidence: bool) -> tuple[Path, Path | None]:
    """Where map-many writes a scene: OUT_DIR/<stem>_facies.tif (+ _confidence.tif)."""
    stem = scene_stem(scene)
    out_dir = Path(out_dir)
    return out_dir / f"{stem}_facies.tif", (
        out_dir / f"{stem}_confidence.tif" if confidence else None
    )

