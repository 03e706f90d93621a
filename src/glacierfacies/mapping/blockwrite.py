"""Map outputs written block by block: scratch tiled GTiffs, halo smoothing, then COGs.

Mapping a Sentinel-2 tile used to hold full-scene class, confidence (and probability) arrays
and smooth the whole map at once. `BlockMapWriter` takes each block as it is predicted,
writes it into tiled scratch GTiffs beside the output, smooths the class map window by
window with a one-pixel halo read from the unsmoothed scratch (so the result equals the
whole-array `mode_filter`), counts the classes per window, and makes the COGs with GDAL's
COG copy. RAM is one window, whatever the scene size. The whole-array path uses the same
writer with one block, so both modes write byte-identical files for identical predictions.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import atomic_output, check_output_folder, sweep_temporaries, temp_prefix
from glacierfacies.classes import CLASS_NAMES, NODATA_CLASS, colour_table
from glacierfacies.errors import InputError
from glacierfacies.mapping.cog import (
    class_tags,
    confidence_array,
    copy_cog,
    describe,
    qml_style,
    scratch_profile,
)
from glacierfacies.mapping.config import PathLike

SMOOTH_WINDOW_PX = 2048  # rows/cols of one smoothing window (+ a 1 px halo)


def _mode_filter_classified(block: np.ndarray, mode_filter: Any) -> np.ndarray:
    """`mode_filter(block)`, computed on the bounding box of the classified pixels + 1 px
    only (nodata stays nodata and is never counted, so the rest cannot change): a tile's
    map is mostly nodata off the glaciers."""
    valid = block != NODATA_CLASS
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size == 0:
        return block
    cols = np.flatnonzero(valid.any(axis=0))
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, block.shape[0])
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, block.shape[1])
    out = block.copy()
    out[r0:r1, c0:c1] = mode_filter(block[r0:r1, c0:c1])
    return out


class BlockMapWriter:
    """Collect a map's blocks on disk, then `finish` into the COGs (atomic, map renamed last).

    Outputs: the class map (+ .qml), optional confidence, QA (made on the first block that
    has QA bits; blocks without QA are QA_NODATA) and probabilities. Use as a context
    manager: the scratch folder is removed however it ends.
    """

    def __init__(self, grid: Any, out: PathLike, *, confidence_out: PathLike | None = None,
                 confidence_dtype: str = "uint8", qa_out: PathLike | None = None,
                 probabilities_out: PathLike | None = None, overwrite: bool = False,
                 smoothing: bool = True, member_names: list[str] | None = None) -> None:
        self.grid, self.out = grid, Path(out)
        self.confidence_out = None if confidence_out is None else Path(confidence_out)
        self.qa_out = None if qa_out is None else Path(qa_out)
        self.probabilities_out = None if probabilities_out is None else Path(probabilities_out)
        self.confidence_dtype, self.overwrite, self.smoothing = (
            confidence_dtype, overwrite, smoothing)
        #: ensemble members whose own classes follow the 8 probabilities (bands 9..)
        self.member_names = list(member_names or []) if probabilities_out is not None else []
        for t in self._targets(with_qa=False):  # the QA band is checked when it appears
            check_output_folder(t.parent)
            if t.exists() and not overwrite:
                raise InputError(t, "output exists; pass --overwrite to replace it")
        self._dir: Path | None = None
        self._ds: dict[str, Any] = {}
        self._nodata_windows: list[tuple[int, int, int, int]] = []

    def _targets(self, with_qa: bool) -> list[Path]:
        t = [self.out, self.out.with_suffix(".qml")]
        t += [p for p in (self.confidence_out,) if p is not None]
        if with_qa and self.qa_out is not None:
            t.append(self.qa_out)
        return t + [p for p in (self.probabilities_out,) if p is not None]

    @property
    def has_qa(self) -> bool:
        return "qa" in self._ds

    def __enter__(self) -> BlockMapWriter:
        import rasterio

        # named as `_io.atomic_output` names its temporaries: a run killed mid-map leaves
        # what map-many's rerun sweeps (`distributed._remove_stale_temporaries`)
        for t in self._targets(with_qa=True):  # what a map killed mid-write left
            sweep_temporaries(t)
        self._dir = Path(tempfile.mkdtemp(prefix=temp_prefix(self.out), suffix=".tmp",
                                          dir=self.out.parent))
        h, w = self.grid.shape
        crs, tr = self.grid.crs, self.grid.transform
        self._ds["raw"] = rasterio.open(self._dir / "raw.tif", "w", **scratch_profile(
            h, w, 1, "uint8", crs, tr, NODATA_CLASS))
        if self.confidence_out is not None:
            dt = "uint8" if self.confidence_dtype == "uint8" else "float32"
            nd = 255.0 if dt == "uint8" else float("nan")
            self._ds["conf"] = rasterio.open(self._dir / "conf.tif", "w", **scratch_profile(
                h, w, 1, dt, crs, tr, nd))
        if self.probabilities_out is not None:
            self._ds["prob"] = rasterio.open(self._dir / "prob.tif", "w", **scratch_profile(
                h, w, len(CLASS_NAMES) + len(self.member_names), "float32", crs, tr,
                float("nan")))
        return self

    def __exit__(self, *exc: Any) -> None:
        for ds in self._ds.values():
            with contextlib.suppress(Exception):
                ds.close()
        self._ds.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _window(self, r0: int, c0: int, h: int, w: int):
        from rasterio.windows import Window

        return Window(c0, r0, w, h)

    def _open_qa(self) -> None:
        import rasterio

        from glacierfacies.scenes.masks import QA_NODATA

        if self.qa_out.exists() and not self.overwrite:
            raise InputError(self.qa_out, "output exists; pass --overwrite to replace it")
        h, w = self.grid.shape
        self._ds["qa"] = rasterio.open(self._dir / "qa.tif", "w", **scratch_profile(
            h, w, 1, "uint8", self.grid.crs, self.grid.transform, None))
        for r0, c0, bh, bw in self._nodata_windows:  # blocks seen before QA existed
            self._ds["qa"].write(np.full((bh, bw), QA_NODATA, np.uint8), 1,
                                 window=self._window(r0, c0, bh, bw))

    def write(self, r0: int, c0: int, classes: np.ndarray, confidence: np.ndarray | None,
              qa: np.ndarray | None = None, probs: np.ndarray | None = None,
              members: np.ndarray | None = None) -> None:
        """One block's unsmoothed classes, confidence in [0, 1] (NaN nodata), QA, probs and
        the ensemble members' own classes ((k, h, w) uint8, 255 nodata)."""
        from glacierfacies.scenes.masks import QA_NODATA

        bh, bw = classes.shape
        win = self._window(r0, c0, bh, bw)
        self._ds["raw"].write(np.asarray(classes, np.uint8), 1, window=win)
        if "conf" in self._ds:
            conf, _ = confidence_array(confidence, self.confidence_dtype)
            self._ds["conf"].write(conf, 1, window=win)
        if "prob" in self._ds:
            self._ds["prob"].write(np.asarray(probs, np.float32)[: len(CLASS_NAMES)],
                                   list(range(1, len(CLASS_NAMES) + 1)), window=win)
            if self.member_names:
                k = len(self.member_names)
                m = (np.full((k, bh, bw), np.nan, np.float32) if members is None
                     else np.where(members == NODATA_CLASS, np.nan, members).astype(np.float32))
                self._ds["prob"].write(m, list(range(len(CLASS_NAMES) + 1,
                                                     len(CLASS_NAMES) + k + 1)), window=win)
        if qa is not None and self.qa_out is not None and not self.has_qa:
            self._open_qa()
        if self.has_qa:
            q = np.full((bh, bw), QA_NODATA, np.uint8) if qa is None else qa
            self._ds["qa"].write(np.asarray(q, np.uint8), 1, window=win)
        elif qa is None:
            self._nodata_windows.append((r0, c0, bh, bw))

    def write_nodata(self, r0: int, c0: int, h: int, w: int) -> None:
        """A block with nothing to classify: nodata in every output."""
        probs = (np.full((len(CLASS_NAMES), h, w), np.nan, np.float32)
                 if "prob" in self._ds else None)
        self.write(r0, c0, np.full((h, w), NODATA_CLASS, np.uint8),
                   np.full((h, w), np.nan, np.float32), None, probs)

    def _smooth(self, dest: Path) -> np.ndarray:
        """Smoothed class map into `dest` window by window; returns the class counts."""
        import rasterio

        from glacierfacies.smoothing import mode_filter

        raw = self._ds.pop("raw")
        raw.close()
        h, w = self.grid.shape
        counts = np.zeros(len(CLASS_NAMES), np.int64)
        s = SMOOTH_WINDOW_PX
        with rasterio.open(self._dir / "raw.tif") as src, rasterio.open(
                dest, "w", **src.profile) as dst:
            for r0 in range(0, h, s):
                for c0 in range(0, w, s):
                    bh, bw = min(s, h - r0), min(s, w - c0)
                    if self.smoothing:  # a 1 px halo (clipped at the map edge)
                        rs, cs = max(r0 - 1, 0), max(c0 - 1, 0)
                        re_, ce = min(r0 + bh + 1, h), min(c0 + bw + 1, w)
                        block = src.read(1, window=self._window(rs, cs, re_ - rs, ce - cs))
                        block = _mode_filter_classified(block, mode_filter)
                        block = block[r0 - rs : r0 - rs + bh, c0 - cs : c0 - cs + bw]
                    else:
                        block = src.read(1, window=self._window(r0, c0, bh, bw))
                    dst.write(block, 1, window=self._window(r0, c0, bh, bw))
                    counts += np.bincount(block[block != NODATA_CLASS],
                                          minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)]
        return counts

    def finish(self, tags: dict[str, str]) -> tuple[list[Path], np.ndarray]:
        """Smooth, tag and copy every output to its COG; (targets written, class counts)."""
        import rasterio

        from glacierfacies.scenes.masks import QA_FILLED, QA_MASKED, QA_NODATA, QA_SATURATED

        for ds in self._ds.values():
            ds.close()
        classes_tif = self._dir / "classes.tif"
        counts = self._smooth(classes_tif)
        # what each raster is, in its tags (never guessed from a file name): LAYER on every
        # output, and the map names its companions (CONFIDENCE, PROBABILITIES) as it names QA
        companions = {k: v.name for k, v in (("CONFIDENCE", self.confidence_out),
                                             ("PROBABILITIES", self.probabilities_out))
                      if v is not None}
        ds_tags, band_tags = class_tags({**tags, **companions, "LAYER": "facies"})
        scratch = {"map": (classes_tif, "mode", "facies class", ds_tags, band_tags,
                           colour_table())}
        if "conf" in self._ds:
            u8 = self.confidence_dtype == "uint8"
            scratch["conf"] = (self._dir / "conf.tif", "average",
                               "confidence (calibrated probability of the model's class"
                               + (", percent)" if u8 else ")"),
                               {"UNITS": "percent" if u8 else "probability",
                                "PRODUCER": "glacierfacies", **tags, "LAYER": "confidence"},
                               None, None)
        if "qa" in self._ds:
            scratch["qa"] = (self._dir / "qa.tif", "nearest", "product QA bits",
                             {"PRODUCER": "glacierfacies", **tags, "LAYER": "qa",
                              "QA_BITS": f"{QA_MASKED}=masked by the product mask, "
                                         f"{QA_SATURATED}=saturated (kept), "
                                         f"{QA_NODATA}=no valid reflectance, "
                                         f"{QA_FILLED}=gap filled by inpainting (observed)"},
                             None, None)
        if "prob" in self._ds:
            n, k = len(CLASS_NAMES), len(self.member_names)
            member_tags = {"MEMBER_BANDS": ",".join(str(b) for b in range(n + 1, n + k + 1)),
                           "MEMBER_NAMES": ",".join(self.member_names)} if k else {}
            scratch["prob"] = (self._dir / "prob.tif", "average",
                               [f"probability of {name}" for name in CLASS_NAMES]
                               + [f"class of ensemble {m}" for m in self.member_names],
                               {"UNITS": "probability", "CLASS_NAMES": ",".join(CLASS_NAMES),
                                "PRODUCER": "glacierfacies", **tags, "LAYER": "probabilities",
                                **member_tags}, None, None)
        self._ds.clear()
        for path, _, desc, t, bt, cmap in scratch.values():
            with rasterio.open(path, "r+") as dst:
                describe(dst, desc, t, bt, cmap)
        dest = {"map": self.out, "conf": self.confidence_out, "qa": self.qa_out,
                "prob": self.probabilities_out}
        targets = [self.out, self.out.with_suffix(".qml")]
        with contextlib.ExitStack() as stack:
            tmp_map = stack.enter_context(atomic_output(self.out, overwrite=self.overwrite))
            tmp_qml = stack.enter_context(atomic_output(targets[1], overwrite=self.overwrite))
            for key in ("conf", "qa", "prob"):
                if key in scratch:
                    targets.append(dest[key])
                    tmp = stack.enter_context(atomic_output(dest[key], overwrite=self.overwrite))
                    copy_cog(scratch[key][0], tmp, scratch[key][1])
            tmp_qml.write_text(qml_style())
            copy_cog(classes_tif, tmp_map, "mode")
        return targets, counts


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
    qa: np.ndarray | None = None,
    qa_out: PathLike | None = None,
    probabilities: np.ndarray | None = None,
    probabilities_out: PathLike | None = None,
) -> list[Path]:
    """Whole arrays (already smoothed) -> the class COG, its .qml, and the optional
    confidence, QA and probability COGs, atomically: `BlockMapWriter` with one block.

    The class map is renamed last, so its presence means every output is complete.
    Probabilities are (8, H, W) float32 calibrated class probabilities in class order.
    """
    from glacierfacies.scenes.grid import Grid

    if (qa is None) != (qa_out is None):
        raise ValueError("give both qa and qa_out, or neither")
    if probabilities_out is not None and probabilities is None:
        raise ValueError("probabilities_out needs the probabilities")
    classes = np.asarray(classes, np.uint8)
    if confidence is None:
        confidence = np.full(classes.shape, np.nan, np.float32)
    grid = Grid(crs, transform, *classes.shape)
    with BlockMapWriter(grid, out, confidence_out=confidence_out,
                        confidence_dtype=confidence_dtype, qa_out=qa_out,
                        probabilities_out=probabilities_out, overwrite=overwrite,
                        smoothing=False) as writer:
        writer.write(0, 0, classes, confidence, qa,
                     None if probabilities_out is None else probabilities)
        targets, _ = writer.finish(dict(tags or {}))
    return targets
