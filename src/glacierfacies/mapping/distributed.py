"""Map many scenes on a Dask cluster; a rerun maps only the missing scenes."""

from __future__ import annotations

import contextlib
import glob
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glacierfacies._io import check_output_folder
from glacierfacies.errors import InputError
from glacierfacies.mapping.config import MapConfig, PathLike
from glacierfacies.mapping.scene_map import map_scene, output_paths, scene_stem
from glacierfacies.model.builtin import resolve_models
from glacierfacies.model.card import load_members


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


def map_many(
    scenes: Sequence[PathLike],
    dem: PathLike,
    outlines: PathLike,
    models: Sequence[PathLike],
    out_dir: PathLike,
    *,
    config: MapConfig | None = None,
    scheduler: str = "local",
    workers: int = 2,
    confidence: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ManyResult:
    """Map scenes on Dask distributed: a LocalCluster ('local') or a scheduler ADDRESS.

    Scenes whose map already exists are skipped (atomic writes: exists == finished), so a
    rerun after an interruption maps only the missing ones. A scene that raises is retried
    once by Dask and then reported as failed; bad input is reported without a retry. A
    worker lost mid-scene (killed, pre-empted) is replaced by the scheduler: its scenes run
    again on the workers left, and its half-written temporary files are removed at the end.
    See docs/dask.md for running on an existing cluster (SSH, Kubernetes, HPC queues).
    """
    from dask.distributed import Client, LocalCluster, as_completed

    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    if workers < 1:
        raise InputError(None, f"--workers must be >= 1, got {workers}")
    config = (config or MapConfig()).check()
    for p, what in ((dem, "DEM"), (outlines, "outlines")):
        if not Path(p).exists():
            raise InputError(p, f"{what} does not exist")
    models = resolve_models(models)  # builtin:NAME -> its fold model files
    for m in models:
        if not Path(m).exists():
            raise InputError(m, "model file does not exist")
    load_members(models)  # a bad or mismatched model fails once here, not once per scene
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
                         overwrite=True, config=config))
    if not jobs:
        _write_catalog(scenes, out_dir, confidence)
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
            from glacierfacies.progress import tqdm

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
    _remove_stale_temporaries(jobs, out_dir)
    _write_catalog(scenes, out_dir, confidence)
    return ManyResult(records)


def _write_catalog(scenes: Sequence[PathLike], out_dir: Path, confidence: bool) -> Path | None:
    """OUT_DIR/catalog.json: a static STAC catalog of the maps of `scenes` that exist."""
    from glacierfacies.stac import map_item_path, write_catalog

    items = []
    for scene in scenes:
        out, _ = output_paths(scene, out_dir, confidence)
        if out.exists() and map_item_path(out).exists():
            items.append(map_item_path(out))
    return write_catalog(out_dir, items) if items else None


def _remove_stale_temporaries(jobs: Sequence[dict], out_dir: Path) -> None:
    """Temporary files (`_io.atomic_output`) left by a worker that was killed mid-write."""
    import shutil

    for job in jobs:
        for target in (job["out"], job["confidence_out"]):
            if target is None:
                continue
            from glacierfacies.stac import map_item_path

            for name in (Path(target).name, Path(target).with_suffix(".qml").name,
                         map_item_path(target).name):
                for tmp in out_dir.glob(f".{glob.escape(name)}.*.tmp"):
                    if tmp.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                    else:
                        tmp.unlink(missing_ok=True)

