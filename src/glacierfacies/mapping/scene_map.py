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


DEFAULT_BLOCK_SIZE = 2048


#: Tiles on CPU are at most this size: a 1024 px tile of the paper-width model holds ~0.6 GB
#: of activations for a few % less halo work; maps do not depend on the tile size.
CPU_MAX_TILE_PX = 512


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


def _mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) of the True pixels of a 2-D mask, or None."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


#: On CUDA, window inputs are padded (NaN, nothing mapped there) to multiples of this, so that
#: the windows share a few tile shapes and cuDNN's autotuning (on for a map) runs per shape,
#: not per window. Results do not depend on it (tile-size independence).
CUDA_WINDOW_MULTIPLE = 256


def _window_multiple(device: str) -> int:
    return CUDA_WINDOW_MULTIPLE if str(device).startswith("cuda") else 1


def _pad_window(features: Any, mask: np.ndarray, observed: np.ndarray, multiple: int
                ) -> tuple[Any, np.ndarray, np.ndarray]:
    """Features (F, h, w) NaN-padded, mask and observed False-padded, at the bottom and
    right to multiples of `multiple` (unchanged for 1)."""
    import torch

    h, w = mask.shape
    ph, pw = -(-h // multiple) * multiple - h, -(-w // multiple) * multiple - w
    if ph == 0 and pw == 0:
        return features, mask, observed
    x = torch.nn.functional.pad(features, (0, pw, 0, ph), value=float("nan"))
    return x, np.pad(mask, ((0, ph), (0, pw))), np.pad(observed, ((0, ph), (0, pw)))


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]
           ) -> tuple[int, int, int, int]:
    """The smallest window (r0, c0, h, w) holding windows a and b."""
    r0, c0 = min(a[0], b[0]), min(a[1], b[1])
    r1, c1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return r0, c0, r1 - r0, c1 - c0


def _window_of(mask: np.ndarray, win: tuple[int, int, int, int]) -> np.ndarray:
    """mask (H, W) cut to a window (r0, c0, h, w) that may reach past the grid (False there)."""
    r0, c0, h, w = win
    out = np.zeros((h, w), bool)
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + h, mask.shape[0]), min(c0 + w, mask.shape[1])
    if re_ > rs and ce > cs:
        out[rs - r0 : re_ - r0, cs - c0 : ce - c0] = mask[rs:re_, cs:ce]
    return out


def _prescale_prepass(members: Sequence[Any], todo: list, load: Any, feats: Any,
                      mask: np.ndarray) -> dict[str, tuple[float, float]] | None:
    """The paper's scene-wise pre-scaling (elevation min/max inside the outlines, proximity
    max) over the whole scene when it is mapped in several windows: one features-only pass
    merges each window's constants, so every window is scaled alike, as one whole-scene run
    would be. None when no member pre-scales or one window holds all glacier pixels."""
    from glacierfacies.mapping.inference import prescale_stats_of

    if len(todo) < 2 or not any(getattr(m, "prescale", None) for m in members):
        return None
    stats: dict[str, tuple[float, float]] = {}
    for i, (*_, win) in enumerate(todo):
        rd, z, *_ = load(i)
        wf = None if rd is None else feats.window(*win, read=rd, dem=z)
        if wf is None:
            continue
        for k, (lo, hi) in prescale_stats_of(wf.features, _window_of(mask, win)).items():
            old = stats.get(k)
            stats[k] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return stats or None


def _predict_blocks(
    members: Sequence[Any], scene: PathLike, dem: PathLike, outlines: PathLike, grid: Any,
    buffer_m: float, block_size: int, tile_size: int, device: str, precision: str,
    progress: bool, writer: Any, read: Any = None, return_probs: bool = False,
    threads: bool = True,
) -> dict:
    """Dense prediction block by block into `writer` (a `BlockMapWriter`).

    The glacier mask (+ buffer) is burned once on the scene grid; a block without a pixel
    to map is written as nodata before anything of it is read. A block that has some is
    computed on one window only: the bounding box of its mapped pixels plus the receptive
    halo (`scene_features.SceneFeatures`: that window of the scene read once, the DEM under
    it plus the shadow reach, terrain with torch on `device`, proximity on the window plus
    its reach). Reading the next block's window and DEM (a reader thread) and writing the
    last block's outputs (a writer thread) overlap the features and inference of this one.

    Every window uses the whole scene's `stack.TerrainContext`, so its features, hence its
    map, equal a whole-scene run's on glacier pixels.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    from glacierfacies.mapping.inference import NODATA, dense_predict
    from glacierfacies.mapping.scene_features import SceneFeatures
    from glacierfacies.outlines import rasterise_outlines, read_outlines
    from glacierfacies.stack import scene_notes

    t_start = time.perf_counter()
    height, width = grid.shape
    halo = members[0].patch_size // 2
    gdf = read_outlines(outlines, grid=grid)  # raises when no outline touches the scene
    mask = rasterise_outlines(grid, gdf, buffer_m=buffer_m, as_mask=True)
    if not mask.any():
        raise InputError(outlines, "no glacier outline overlaps the scene")
    feats = SceneFeatures(scene, dem, outlines, grid, read=read, device=device,
                          buffer_m=buffer_m, halo=halo)
    timing = {"mask": time.perf_counter() - t_start}
    blocks = [(r, c) for r in range(0, height, block_size) for c in range(0, width, block_size)]
    todo = []  # (r0, c0, bh, bw, window)
    for r0, c0 in blocks:
        bh, bw = min(block_size, height - r0), min(block_size, width - c0)
        bb = _mask_bbox(mask[r0 : r0 + bh, c0 : c0 + bw])
        if bb is None:
            writer.write_nodata(r0, c0, bh, bw)
            continue
        wr0, wc0 = r0 + bb[0] - halo, c0 + bb[2] - halo
        todo.append((r0, c0, bh, bw, (wr0, wc0, bb[1] - bb[0] + 2 * halo,
                                      bb[3] - bb[2] + 2 * halo)))
    info = {"blocks": len(blocks), "blocks_run": 0, "tiles_run": 0, "tiles_skipped": 0,
            "scene_id": None, "sensor": "", "acquired": "", "notes": {}, "terrain": {},
            "window_px": int(sum(w[2] * w[3] for *_, w in todo))}
    for k in ("read", "dem", "terrain", "proximity", "assemble", "inference", "write"):
        timing[k] = 0.0
    bar = None
    if progress:
        from glacierfacies.progress import tqdm

        bar = tqdm(total=len(todo), desc="blocks", unit="block")

    def load(i: int) -> tuple:
        """Reader thread: the scene window and its DEM (the context comes from the first)."""
        import rasterio

        r0, c0, bh, bw, win = todo[i]
        # GDAL decodes the tiles of one window read on several cores where there are
        # enough (on 2 cores they would take the CPU from torch's threads)
        with rasterio.Env(GDAL_NUM_THREADS=gdal_threads, GDAL_CACHEMAX=COG_CACHE_MB):
            t0 = time.perf_counter()
            # a product with QA bits: its QA band covers the whole block, so read the block
            # and the window together (the features still come from the window alone)
            outer = _union(win, (r0, c0, bh, bw)) if qa_mode["on"] else None
            rd = feats.read_window(*win, outer=outer)
            if rd is not None and rd[0].qa is not None and outer is None and want_qa:
                qa_mode["on"] = True
                rd = feats.read_window(*win, outer=_union(win, (r0, c0, bh, bw)))
            t1 = time.perf_counter()
            z = None
            if rd is not None:
                feats.ensure_context(rd[0])
                z = feats.read_dem(*win)
        return rd, z, t1 - t0, time.perf_counter() - t1

    def store(r0, c0, bh, bw, cls, conf, qa, probs, mcls=None) -> float:
        t0 = time.perf_counter()
        writer.write(r0, c0, cls, conf, qa, probs, mcls)
        return time.perf_counter() - t0

    import os

    gdal_threads = "ALL_CPUS" if (os.cpu_count() or 1) >= 4 else "1"
    multiple = _window_multiple(device)
    want_qa = getattr(writer, "qa_out", None) is not None
    qa_mode = {"on": False}
    workers = 1 if threads else 0
    reader = ThreadPoolExecutor(max_workers=1) if workers else None
    wpool = ThreadPoolExecutor(max_workers=1) if workers else None
    pending_write = None
    stats = _prescale_prepass(members, todo, load, feats, mask)
    try:
        if reader is not None and todo:
            # the first read makes the context the reads after it need: run it first
            nxt = reader.submit(load, 0)
        for i, (r0, c0, bh, bw, win) in enumerate(todo):
            if reader is not None:
                rd, z, t_read, t_dem = nxt.result()
                if i + 1 < len(todo):
                    nxt = reader.submit(load, i + 1)
            else:
                rd, z, t_read, t_dem = load(i)
            timing["read"] += t_read
            timing["dem"] += t_dem
            wf = None if rd is None else feats.window(*win, read=rd, dem=z)
            if wf is None:
                if pending_write is not None:
                    timing["write"] += pending_write.result()
                    pending_write = None
                writer.write_nodata(r0, c0, bh, bw)
                if bar is not None:
                    bar.update(1)
                continue
            for k in ("terrain", "proximity", "assemble"):
                timing[k] += wf.seconds[k]
            ctx = feats.context
            info.update(scene_id=wf.scene.scene_id, sensor=wf.scene.sensor,
                        acquired=wf.scene.acquired, notes=scene_notes(wf.scene),
                        terrain=ctx.tags())
            wr0, wc0, wh, ww = win
            # the window's mapped pixels: this block's only (a neighbour maps its own)
            wmask = np.zeros((wh, ww), bool)
            rs, cs = max(wr0, r0), max(wc0, c0)
            re_, ce = min(wr0 + wh, r0 + bh), min(wc0 + ww, c0 + bw)
            wmask[rs - wr0 : re_ - wr0, cs - wc0 : ce - wc0] = mask[rs:re_, cs:ce]
            t0 = time.perf_counter()
            x, xm, xo = _pad_window(wf.features, wmask, wf.observed, multiple)
            pred = dense_predict(members, x, xm, observed=xo,
                                 tile_size=tile_size, device=device, precision=precision,
                                 return_probs=return_probs, prescale_stats=stats)
            timing["inference"] += time.perf_counter() - t0
            cls = np.full((bh, bw), NODATA, np.uint8)
            conf = np.full((bh, bw), np.nan, np.float32)
            core = (slice(rs - r0, re_ - r0), slice(cs - c0, ce - c0))
            part = (slice(rs - wr0, re_ - wr0), slice(cs - wc0, ce - wc0))
            cls[core] = pred.classes[part]
            conf[core] = pred.confidence[part]
            qa = None
            sc_qa = rd[0].qa
            if sc_qa is not None:
                from glacierfacies.scenes.masks import QA_NODATA

                o_r, o_c = rd[2]  # the read's origin in the grid
                qa = np.full((bh, bw), QA_NODATA, np.uint8)
                hh, wq = sc_qa.shape
                qs = (slice(max(r0 - o_r, 0), min(r0 + bh - o_r, hh)),
                      slice(max(c0 - o_c, 0), min(c0 + bw - o_c, wq)))
                qa[qs[0].start + o_r - r0 : qs[0].stop + o_r - r0,
                   qs[1].start + o_c - c0 : qs[1].stop + o_c - c0] = sc_qa[qs]
            probs = None
            if pred.probs is not None:
                probs = np.full((pred.probs.shape[0], bh, bw), np.nan, np.float32)
                probs[(slice(None), *core)] = pred.probs[(slice(None), *part)]
            mcls = None
            if pred.member_classes is not None:
                mcls = np.full((pred.member_classes.shape[0], bh, bw), NODATA, np.uint8)
                mcls[(slice(None), *core)] = pred.member_classes[(slice(None), *part)]
            if pending_write is not None:
                timing["write"] += pending_write.result()
            if wpool is not None:
                pending_write = wpool.submit(store, r0, c0, bh, bw, cls, conf, qa, probs, mcls)
            else:
                timing["write"] += store(r0, c0, bh, bw, cls, conf, qa, probs, mcls)
            info["blocks_run"] += 1
            info["tiles_run"] += pred.tiles_run
            info["tiles_skipped"] += pred.tiles_skipped
            del wf, pred
            if bar is not None:
                bar.update(1)
        if pending_write is not None:
            timing["write"] += pending_write.result()
    finally:
        for pool in (reader, wpool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    info["seconds"] = {k: round(v, 3) for k, v in timing.items()}
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
    buffer_m, tile_size, precision = cfg.buffer_m, cfg.tile_size, cfg.precision
    from glacierfacies.mapping.inference import auto_device

    device = auto_device(cfg.device)
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
    if block_size is None:  # windows around the glaciers: the least to read and compute
        block_size = DEFAULT_BLOCK_SIZE
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

