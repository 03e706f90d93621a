"""The main job's inputs: checked before anything is written, and signed for the stage
fingerprints (so a rerun notices an edited label table, scene, DEM or outline file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glacierfacies._io import check_output_folder
from glacierfacies.errors import InputError
from glacierfacies.model.builtin import BUILTIN_DIR, BUILTIN_MODELS
from glacierfacies.tasks import file_signature
from glacierfacies.workflow.config import Inputs, RunConfig, _resolve_inputs, train_config

__all__ = ["STAGE_INPUTS", "check_run", "input_signatures"]

# the input files each stage reads (beyond the outputs of the stages before it)
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "sample": (),
    "dataset": ("scenes", "dem", "outlines", "labels"),
    "train": ("flipped",),
    "maps": (),
    "products": ("truth",),
    "massbalance": ("wgms",),
    "real": ("builtin_models",),
    "report": (),
}


def input_signatures(inputs: Inputs, out: Path) -> dict[str, list[dict[str, Any]]]:
    """One signature (size, mtime, content hash) per input group of `STAGE_INPUTS`.

    The label table is always hashed, whatever its size; other files under
    `tasks.HASH_BELOW_BYTES`. Paths are relative to OUT where they lie under it, so a moved
    run folder keeps its stages.
    """
    groups: dict[str, list[Path]] = {
        # an item of a STAC ItemCollection (FILE.json#ID) is signed by its file
        "scenes": list(dict.fromkeys(Path(str(s).split(".json#")[0] + ".json")
                                     if ".json#" in str(s) else s for s in inputs.scenes)),
        "dem": [inputs.dem], "outlines": [inputs.outlines],
        "labels": [inputs.labels],
        "flipped": [inputs.flipped] if inputs.flipped and inputs.flipped.is_file() else [],
        "truth": [inputs.truth] if inputs.truth and inputs.truth.is_dir() else [],
        "wgms": [inputs.wgms] if inputs.wgms else [],
        # the demo's real section maps with them: `make models` then remaps it
        "builtin_models": sorted(p for name in BUILTIN_MODELS
                                 for p in (BUILTIN_DIR / name).glob("*") if p.is_file()),
    }
    return {name: file_signature(paths, root=out, always_hash=name == "labels")
            for name, paths in groups.items()}


def check_run(cfg: RunConfig, out: Path, source: Path | None = None) -> Inputs | None:
    """Every check `run` can make before it writes anything (InputError on the first failure).
    `source` (the configuration file) is named when a path it configures does not exist.

    The configuration (training preset and settings, device, map options), the output
    folder, and with user data every input: scene patterns and headers, DEM, outlines,
    labels (columns, classes, scenes) and the WGMS folder. Returns the user inputs (None
    for the built-in sample, which is written by the first stage).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    check_output_folder(out.parent)
    train_config(cfg)
    cfg.map_config.check()
    if cfg.uses_sample:
        return None
    try:
        inputs = _resolve_inputs(cfg, out)
    except InputError as exc:
        if source is not None and exc.path in cfg.scenes:  # the configuration's `scenes`
            raise InputError(source, f"`scenes`: {exc.path}: {exc.problem}") from None
        raise
    _check_user_inputs(inputs, source)
    return inputs


def _check_user_inputs(inputs: Inputs, source: Path | None = None) -> None:
    import rasterio
    from rasterio.warp import transform_bounds

    from glacierfacies.data.build import check_label_glaciers, read_labels
    from glacierfacies.dem import check_dem
    from glacierfacies.outlines import find_id_column, read_outlines
    from glacierfacies.scenes.reader import scene_grid, scene_ids

    grids = [scene_grid(s) for s in inputs.scenes]
    for path, what in ((inputs.dem, "dem"), (inputs.outlines, "outlines"),
                       (inputs.labels, "labels"), (inputs.wgms, "wgms")):
        if path is None or path.exists() and (what == "wgms" or path.is_file()):
            continue
        if source is not None:  # name the configuration and its key
            raise InputError(source, f"`{what}`: {path} does not exist")
        raise InputError(path, f"{what} file not found")
    try:
        with rasterio.open(inputs.dem) as src:
            if src.crs is None:
                raise InputError(inputs.dem, "DEM has no CRS")
            dem_crs, b = src.crs, src.bounds
    except rasterio.errors.RasterioError as exc:
        raise InputError(inputs.dem, f"cannot read DEM ({str(exc).splitlines()[0]})") from None
    check_dem(inputs.dem)  # all nodata, or voids without a nodata tag

    def overlaps(g: Any) -> bool:
        w, s, e, n = transform_bounds(g.crs, dem_crs, *g.bounds)
        return w < b.right and e > b.left and s < b.top and n > b.bottom

    if not any(overlaps(g) for g in grids):
        raise InputError(inputs.dem, "DEM does not overlap any scene")
    touched = 0
    for g in grids:
        try:
            read_outlines(inputs.outlines, grid=g)
            touched += 1
        except InputError as exc:
            if not exc.problem.startswith("no outline intersects"):
                raise
    if not touched:
        raise InputError(inputs.outlines, "no outline intersects any scene")
    find_id_column(read_outlines(inputs.outlines), path=inputs.outlines)  # products' ids
    labels = read_labels(inputs.labels)
    check_label_glaciers(labels, inputs.outlines, inputs.labels)
    unknown = sorted(set(labels["scene_id"].astype(str)) - set(map(str, scene_ids(inputs.scenes))))
    if unknown:
        raise InputError(inputs.labels, f"label(s) of scene(s) that are not configured: "
                                        f"{unknown[:3]}{' ...' if len(unknown) > 3 else ''}")
    if inputs.wgms is not None:
        from glacierfacies.products.wgms import read_wgms

        read_wgms(inputs.wgms)
