"""The `glacierfacies` command line: argument parsing and calls into the stage modules only.

Every command turns bad input (`InputError`, `ValueError` from validation) into one line on
stderr, `error: <file>: <problem>`, and a non-zero exit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from glacierfacies import __version__
from glacierfacies.errors import InputError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="glacierfacies")
def cli() -> None:
    """Map glacier surface facies (ice, snow, firn, debris, refrozen-like, shadow, water,
    cloud) from Sentinel-2 and Landsat scenes, and turn the maps into mass-balance products.

    \b
    Quick start (runs the whole chain on the built-in sample):
      glacierfacies run -o out/
    Stages, one by one:
      sample -> features -> dataset build -> train -> map -> products -> massbalance
    """


def main() -> None:
    """Console-script entry point: one-line errors, non-zero exit, no tracebacks for bad input."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: (
        f"warning: {message}\n")
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code or 2)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)


# ---------------------------------------------------------------- sample (issue 2)
@cli.command("sample")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (>= 0).")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
def sample_cmd(out_dir: Path, seed: int, overwrite: bool) -> None:
    """Write the built-in sample (DEM, outlines, scenes, labels, WGMS-like table) to OUT_DIR."""
    from glacierfacies.sample.generate import write_sample

    if seed < 0:
        raise InputError(None, f"--seed must be >= 0, got {seed}")
    summary = write_sample(out_dir, seed=seed, overwrite=overwrite)
    click.echo(summary)


# ---------------------------------------------------------------- features (issue 3)
@cli.command("features")
@click.argument("scene_path", metavar="SCENE", type=click.Path(path_type=Path))
@click.option("--dem", "dem", required=True, type=click.Path(path_type=Path),
              help="DEM raster (any CRS; reprojected bilinearly onto the scene's 10 m grid).")
@click.option("--outlines", "outlines", required=True, type=click.Path(path_type=Path),
              help="Glacier outlines (GeoPackage/Shapefile; any CRS).")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Output 11-band GeoTIFF.")
@click.option("--band-map", default=None,
              help="Plain GeoTIFF only: blue=1,green=2,red=3,nir=4,swir1=5,swir2=6.")
@click.option("--scale", type=float, default=None, help="Plain GeoTIFF only: DN scale.")
@click.option("--offset", type=float, default=None, help="Plain GeoTIFF only: DN offset.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def features_cmd(scene_path: Path, dem: Path, outlines: Path, output: Path,
                 band_map: str | None, scale: float | None, offset: float | None,
                 overwrite: bool) -> None:
    """Build the 11-feature stack (6 reflectances, elevation, slope, shadow_mask, hillshade,
    proximity) of SCENE (.SAFE, Landsat C2 L2 folder, S2 band folder or GeoTIFF)."""
    from glacierfacies.scenes.generic import parse_band_map
    from glacierfacies.scenes.reader import read_scene
    from glacierfacies.stack import build_feature_stack, write_feature_stack

    if output.exists() and not overwrite:
        raise InputError(output, "output exists; pass --overwrite to replace it")
    if not output.parent.exists():
        raise InputError(output.parent, "output folder does not exist")
    try:
        bmap = parse_band_map(band_map) if band_map else None
    except ValueError as exc:
        raise InputError(None, f"--band-map: {exc}") from None
    scene = read_scene(scene_path, band_map=bmap, scale=scale, offset=offset)
    stack = build_feature_stack(scene, dem, outlines)
    write_feature_stack(stack, output, overwrite=overwrite)
    n_glac = int(len(stack.outlines))
    click.echo(f"{output}: {stack.shape[0]}x{stack.shape[1]} px, 11 bands, "
               f"{stack.valid.mean():.1%} valid, {n_glac} glacier(s), scene {scene.scene_id}")


# ---------------------------------------------------------------- dataset (issue 4)
@cli.group("dataset")
def dataset_group() -> None:
    """Build, import, export and inspect packed patch datasets (PatchSet folders)."""


def _dataset_scene_paths(scenes: tuple[Path, ...]) -> list[Path]:
    from glacierfacies.scenes.reader import find_scenes

    paths: list[Path] = []
    for p in scenes:  # a folder of scenes, or a scene folder itself (find_scenes keeps it)
        paths.extend(find_scenes(p) if p.is_dir() else [p])
    if not paths:
        raise InputError(scenes[0] if scenes else None, "no scenes found")
    return paths


@dataset_group.command("build")
@click.option("--scenes", "scenes", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="Scene folder(s)/file(s), or a folder of scenes (repeatable).")
@click.option("--dem", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--outlines", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--labels", required=True, type=click.Path(exists=True, path_type=Path),
              help="Points: class, glacier, scene_id (+ date, sensor, region, point_id).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--patch-size", default=33, show_default=True, help="Odd, 1..65.")
@click.option("--features", default="all", show_default=True,
              help="Subset name (optical, optical+elevation, ...) or comma list.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True)
@click.option("--folds", "k_folds", default=6, show_default=True, help="Folds by glacier.")
@click.option("--fold-column", default=None, help="Use this labels column as the folds.")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
def dataset_build_cmd(scenes, dem, outlines, labels, out_dir, patch_size, features, dtype,
                      k_folds, fold_column, seed, overwrite) -> None:
    """Sample patches of the feature stack at labelled points into a PatchSet folder."""
    from glacierfacies.data.build import build_patchset

    ps = build_patchset(_dataset_scene_paths(scenes), dem, outlines, labels,
                        patch_size=patch_size, features=features, dtype=dtype,
                        k_folds=k_folds, fold_column=fold_column, seed=seed, out_dir=out_dir,
                        overwrite=overwrite)
    s = ps.provenance["summary"]
    click.echo(f"{out_dir}: kept {s['kept']} of {s['labels']} points; skipped "
               f"{s['skipped_edge']} near a scene edge, {s['skipped_invalid']} with invalid "
               "pixels")
    click.echo(ps.summary())


@dataset_group.command("import-published")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True)
@click.option("--workers", default=4, show_default=True, help="Reader threads.")
@click.option("--overwrite", is_flag=True)
def dataset_import_published_cmd(folder, out_dir, dtype, workers, overwrite) -> None:
    """Pack a folder of per-patch GeoTIFFs ({fold}_{glacier}_{date}_..._{class}.tif)."""
    from glacierfacies.data.published import import_published

    ps = import_published(folder, out_dir=out_dir, dtype=dtype, workers=workers,
                          overwrite=overwrite)
    click.echo(f"{out_dir}:")
    click.echo(ps.summary())


@dataset_group.command("export-published")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "folder", required=True, type=click.Path(path_type=Path))
@click.option("--workers", default=4, show_default=True, help="Writer threads.")
@click.option("--overwrite", is_flag=True)
def dataset_export_published_cmd(dataset_dir, folder, workers, overwrite) -> None:
    """Write a PatchSet (all 11 features) as one GeoTIFF per patch, the published layout."""
    from glacierfacies.data.published import export_published

    export_published(dataset_dir, folder, workers=workers, overwrite=overwrite)
    click.echo(f"{folder}: {sum(1 for _ in folder.glob('*.tif'))} patches written")


@dataset_group.command("import-points")
@click.argument("table", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--bands", default=None,
              help="sentinel2 | landsat89 | blue=COL,green=COL,... (default: columns named "
                   "blue..swir2).")
@click.option("--class-column", default="class", show_default=True)
@click.option("--class-map", default=None,
              help="CODE=class,... or a JSON/YAML file; unmapped classes are dropped.")
@click.option("--glacier-column", default="glacier", show_default=True)
@click.option("--scale", type=float, default=None, help="value * scale + offset.")
@click.option("--offset", type=float, default=None)
@click.option("--strict", is_flag=True, help="Unmapped classes are an error, not dropped.")
@click.option("--fold-column", default=None)
@click.option("--folds", "k_folds", default=6, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--layer", default=None, help="GeoPackage layer.")
@click.option("--overwrite", is_flag=True)
def dataset_import_points_cmd(table, out_dir, bands, class_column, class_map, glacier_column,
                              scale, offset, strict, fold_column, k_folds, seed, layer,
                              overwrite) -> None:
    """A table of sampled band values (CSV/GeoPackage) -> spectral-only PatchSet (1x1)."""
    from glacierfacies.data.points import import_points

    ps = import_points(table, band_columns=bands, class_column=class_column,
                       class_map=class_map, glacier_column=glacier_column, scale=scale,
                       offset=offset, strict=strict, fold_column=fold_column,
                       k_folds=k_folds, seed=seed, layer=layer)
    ps.save(out_dir, overwrite=overwrite)
    click.echo(f"{out_dir}: dropped {ps.provenance['dropped_unmapped']} unmapped, "
               f"{ps.provenance['dropped_missing']} with missing values")
    click.echo(ps.summary())


@dataset_group.command("info")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def dataset_info_cmd(dataset_dir) -> None:
    """Print size, features, class counts, folds and provenance of a PatchSet folder."""
    from glacierfacies.data.patchset import PatchSet

    ps = PatchSet.load(dataset_dir)
    click.echo(f"{dataset_dir}:")
    click.echo(ps.summary())
    click.echo(f"source: {ps.provenance.get('source', '?')}")


# ---------------------------------------------------------------- train / evaluate (issue 5)
@cli.command("train")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "run_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Run folder (resumable).")
@click.option("--stage", type=click.Choice(["round1", "clean", "round2", "all"]), default="all",
              show_default=True, help="Whole protocol or one stage.")
@click.option("--preset", type=click.Choice(["paper", "sample"]), default="paper",
              show_default=True,
              help="paper: width 64, 100 epochs; sample: width 16, 10 epochs (CPU-friendly).")
@click.option("--epochs", type=int, default=None, help="Override the preset.")
@click.option("--batch-size", type=int, default=None)
@click.option("--width", type=int, default=None, help="Conv channels (paper 64).")
@click.option("--lr", type=float, default=None)
@click.option("--patience", type=int, default=None, help="Early stopping (epochs).")
@click.option("--features", default=None, help="Subset name or comma list (default: all).")
@click.option("--prune-classes", default=None,
              help="Comma list of classes confident learning may prune (default: facies).")
@click.option("--device", default=None, help="auto (default), cpu, cuda, cuda:N.")
@click.option("--seed", type=int, default=None)
@click.option("--checkpoint-every", type=int, default=None, help="Batches between checkpoints.")
@click.option("--threads", type=int, default=None, help="CPU threads (default 2).")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile (CUDA).")
@click.option("--flipped-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Known wrong labels (point_id) to score cleaning against; "
                                 "default: flipped_labels.csv beside the labels, if any.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(dataset, run_dir, stage, preset, epochs, batch_size, width, lr, patience,
              features, prune_classes, device, seed, checkpoint_every, threads, compile_,
              flipped_labels, quiet) -> None:
    """Cross-validated training: round 1, confident learning, round 2, evaluation, calibration.

    Rerun the same command after an interrupt: it resumes from the last checkpoint.
    """
    from glacierfacies.classes import CLASS_NAMES, class_index
    from glacierfacies.features import resolve_features
    from glacierfacies.training.config import TrainConfig
    from glacierfacies.training.evaluation import summary_lines
    from glacierfacies.training.protocol import train_dataset

    overrides = dict(epochs=epochs, batch_size=batch_size, width=width, lr=lr,
                     patience=patience, device=device, seed=seed,
                     checkpoint_every=checkpoint_every, threads=threads, compile=compile_)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        if features:
            overrides["features"] = resolve_features(features)
        if prune_classes:
            overrides["prune_classes"] = tuple(
                CLASS_NAMES[class_index(c)] for c in prune_classes.split(",") if c.strip())
        cfg = (TrainConfig.sample if preset == "sample" else TrainConfig.paper)(**overrides)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    metrics = train_dataset(dataset, run_dir, cfg, stage, flipped_csv=flipped_labels,
                            progress=not quiet)
    click.echo(f"{run_dir}: stage {stage} done")
    for line in summary_lines(metrics):
        click.echo(line)


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="PatchSet folder (default: the one recorded in the run).")
def evaluate_cmd(run_dir, dataset) -> None:
    """Recompute RUN_DIR/metrics.json, confusion matrices and reliability diagram."""
    from glacierfacies.training.evaluation import evaluate_run, summary_lines

    metrics = evaluate_run(run_dir, dataset)
    click.echo(f"{run_dir / 'metrics.json'} written")
    for line in summary_lines(metrics):
        click.echo(line)


@cli.command("export-onnx")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_onnx_cmd(model, out) -> None:
    """Export a fold model (dense, normalised, calibrated) to ONNX: features -> probabilities."""
    from glacierfacies.model.onnx import export_onnx

    export_onnx(model, out)
    click.echo(f"{out}: input 'features' (B, F, H, W) raw, output 'probabilities' "
               "(B, 8, H-S+1, W-S+1)")


# ---------------------------------------------------------------- map / map-many (issue 6)
def _map_options(f):
    """Options shared by `map` and `map-many`."""
    opts = [
        click.option("--dem", required=True, type=click.Path(path_type=Path),
                     help="DEM raster (any CRS; resampled to the scene grid)."),
        click.option("--outlines", required=True, type=click.Path(path_type=Path),
                     help="Glacier outlines (GeoPackage/Shapefile, any CRS)."),
        click.option("--model", "models", required=True, multiple=True,
                     type=click.Path(path_type=Path),
                     help="Model file (foldK.pt); repeat for an ensemble (mean probabilities)."),
        click.option("--buffer", default="0m", show_default=True,
                     help="Also classify pixels within this distance of the outlines (e.g. 50m)."),
        click.option("--no-smoothing", is_flag=True, help="Skip the 3x3 mode smoothing."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--tile-size", type=int, default=1024, show_default=True,
                     help="Output tile side in pixels (results do not depend on it)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
                     show_default=True, help="bf16: faster on GPUs, not bit-exact."),
        click.option("--confidence-dtype", type=click.Choice(["uint8", "float32"]),
                     default="uint8", show_default=True,
                     help="Confidence as percent (uint8, 255 nodata) or probability (float32)."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@cli.command("map")
@click.argument("scene", type=click.Path(path_type=Path))
@_map_options
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Facies map (Cloud-Optimised GeoTIFF); a .qml style is written beside it.")
@click.option("--confidence", "confidence_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the calibrated confidence COG here.")
def map_cmd(scene: Path, dem: Path, outlines: Path, models: tuple[Path, ...], buffer: str,
            no_smoothing: bool, device: str, tile_size: int, precision: str,
            confidence_dtype: str, overwrite: bool, out: Path, confidence_out: Path | None
            ) -> None:
    """Map the facies of one SCENE (Sentinel-2 .SAFE, Landsat folder or GeoTIFF stack)."""
    from glacierfacies.mapping.scene_map import map_scene

    res = map_scene(scene, dem, outlines, list(models), out, confidence_out=confidence_out,
                    buffer=buffer, smoothing=not no_smoothing, device=device,
                    tile_size=tile_size, overwrite=overwrite,
                    confidence_dtype=confidence_dtype, precision=precision)
    shares = ", ".join(f"{k} {v / max(res.n_classified, 1):.0%}"
                       for k, v in res.class_counts.items() if v)
    click.echo(f"{out}: {res.n_classified} pixels classified in {res.seconds:.1f} s ({shares})")


@cli.command("map-many")
@click.argument("scenes_glob")
@_map_options
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Existing folder for <scene>_facies.tif (+ _confidence.tif).")
@click.option("--confidence", is_flag=True, help="Also write <scene>_confidence.tif.")
@click.option("--scheduler", default="local", show_default=True,
              help="'local' (a LocalCluster) or a Dask scheduler address (tcp://host:8786).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Workers of the LocalCluster (ignored with an address).")
def map_many_cmd(scenes_glob: str, dem: Path, outlines: Path, models: tuple[Path, ...],
                 buffer: str, no_smoothing: bool, device: str, tile_size: int, precision: str,
                 confidence_dtype: str, overwrite: bool, out_dir: Path, confidence: bool,
                 scheduler: str, workers: int) -> None:
    """Map every scene matching SCENES_GLOB on Dask; finished scenes are skipped on rerun."""
    from glacierfacies.mapping.distributed import expand_scenes, map_many

    res = map_many(expand_scenes(scenes_glob), dem, outlines, list(models), out_dir,
                   scheduler=scheduler, workers=workers, confidence=confidence,
                   overwrite=overwrite, buffer=buffer, smoothing=not no_smoothing,
                   device=device, tile_size=tile_size, confidence_dtype=confidence_dtype,
                   precision=precision)
    click.echo(res.summary())
    if res.count("failed") or res.count("bad input"):
        sys.exit(1)


# ---------------------------------------------------------------- products / massbalance (issue 7)
@cli.command("products")
@click.argument("maps", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--outlines", required=True, type=click.Path(path_type=Path),
              help="Glacier outlines (GeoPackage/shapefile).")
@click.option("--dem", type=click.Path(path_type=Path), help="DEM for snowline altitude.")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="products.gpkg (with outline geometry) or products.csv")
@click.option("--id-column", help="Outline column naming glaciers (default: first of "
              "glacier, rgi_id, RGIId, name, Name, wgms_id).")
@click.option("--confidence", "confidence", multiple=True, type=click.Path(path_type=Path),
              help="Confidence map per MAP, in order (default: band/sibling named *confidence*).")
@click.option("--probabilities", multiple=True, type=click.Path(path_type=Path),
              help="8-band class-probability raster per MAP, in order (resolves shadow).")
@click.option("--shadow", type=click.Choice(["snowline", "exclude", "probabilities"]),
              default="snowline", show_default=True,
              help="Shadowed glacier pixels: side of the snowline they lie on (needs --dem), "
              "unobserved, or their most likely facies (needs --probabilities).")
@click.option("--refrozen-accumulation", is_flag=True,
              help="Count refrozen-like as accumulation in the AAR.")
@click.option("--scene-id", help="Scene id (single MAP; default: map tags, else file name).")
@click.option("--date", "date_", help="Acquisition date YYYY-MM-DD (single MAP).")
@click.option("--sensor", help="Sensor (single MAP).")
def products_cmd(maps, outlines, dem, output, id_column, confidence, probabilities, shadow,
                 refrozen_accumulation, scene_id, date_, sensor) -> None:
    """Per-glacier products (class areas, observed fraction, AAR, snowline) of facies MAPS."""
    from glacierfacies.products.massbalance import ProductConfig
    from glacierfacies.products.table import compute_products, write_products

    for name, opt in (("--confidence", confidence), ("--probabilities", probabilities)):
        if opt and len(opt) != len(maps):
            raise InputError(None, f"{name} given {len(opt)} times for {len(maps)} maps")
    if output.suffix.lower() not in (".gpkg", ".csv"):
        raise InputError(output, "output must end in .gpkg or .csv")
    config = ProductConfig(refrozen_is_accumulation=refrozen_accumulation, shadow=shadow)
    table = compute_products(list(maps), outlines, dem, config, list(confidence) or None,
                             list(probabilities) or None, id_column,
                             {"scene_id": scene_id, "date": date_, "sensor": sensor})
    if table.empty:
        raise InputError(outlines, "no glacier outline overlaps the map(s)")
    write_products(table, output, config, {"maps": [str(m) for m in maps],
                                           "outlines": str(outlines), "dem": str(dem)})
    click.echo(f"{len(table)} glacier-scene rows ({table['glacier'].nunique()} glaciers, "
               f"{table['scene_id'].nunique()} scenes) -> {output}")


def _month_list(text: str) -> tuple[int, ...]:
    try:
        months = tuple(int(m) for m in text.split(",") if m.strip())
    except ValueError:
        months = ()
    if not months or not all(1 <= m <= 12 for m in months):
        raise InputError(None, f"--season-months must be months 1-12 separated by commas or "
                               f"'any', got {text!r}")
    return months


@cli.command("massbalance")
@click.argument("products", required=False, type=click.Path(path_type=Path))
@click.option("--wgms", "wgms_dir", type=click.Path(path_type=Path),
              help="WGMS FoG folder (overview CSV + mbdata/).")
@click.option("--glamos", type=click.Path(path_type=Path),
              help="GLAMOS massbalance_observation CSV (instead of --wgms).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (stats.json, per_glacier.csv, glacier_years.csv, plots).")
@click.option("--min-years", type=int, default=8, show_default=True,
              help="Years a glacier needs for its own regression.")
@click.option("--min-observed", type=float, default=0.8, show_default=True,
              help="Observed fraction a scene needs to be an end-of-season candidate.")
@click.option("--hydro-year-start", type=int, default=10, show_default=True,
              help="First month of the hydrological year (10 north, 4 south, 1 calendar).")
@click.option("--season-months", default="8,9,10", show_default=True,
              help="Months whose scenes may stand for the end of the ablation season "
                   "(comma list; 'any' for every month; southern hemisphere e.g. 2,3,4).")
@click.option("--no-guards", is_flag=True, help="Fit every glacier with >= --min-years alone.")
@click.option("--records-aar", is_flag=True,
              help="Use the records' own AAR/ELA as the product (the ceiling); no PRODUCTS.")
def massbalance_cmd(products, wgms_dir, glamos, out_dir, min_years, min_observed,
                    hydro_year_start, season_months, no_guards, records_aar) -> None:
    """Regress annual mass balance on AAR and snowline altitude of end-of-season PRODUCTS."""
    from glacierfacies.products.glamos import read_glamos
    from glacierfacies.products.regression import run_massbalance, summary_lines
    from glacierfacies.products.table import read_products
    from glacierfacies.products.wgms import read_wgms

    if (wgms_dir is None) == (glamos is None):
        raise InputError(None, "give exactly one of --wgms DIR or --glamos FILE")
    if (products is None) != records_aar:
        raise InputError(None, "give PRODUCTS, or --records-aar without PRODUCTS")
    if min_years < 3:
        raise InputError(None, f"--min-years must be >= 3, got {min_years}")
    if not 0 <= min_observed <= 1:
        raise InputError(None, f"--min-observed must be in [0, 1], got {min_observed}")
    months = None if season_months.strip().lower() == "any" else _month_list(season_months)
    source = Path(wgms_dir or glamos)
    records = read_wgms(wgms_dir) if wgms_dir else read_glamos(glamos)
    table = read_products(products) if products is not None else None
    stats = run_massbalance(table, records, out_dir, products or source, min_years,
                            min_observed, hydro_year_start, guards=not no_guards,
                            season_months=months)
    for line in summary_lines(stats):
        click.echo(line)
    click.echo(f"-> {out_dir}")


# ---------------------------------------------------------------- run (issue 8)
@cli.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("glacierfacies_run"), show_default=True,
              help="Output folder; a rerun skips the stages already finished there.")
def run_cmd(config: Path | None, out: Path) -> None:
    """Run the whole chain: features -> patches -> 6-fold training with confident learning ->
    maps of every scene -> glacier products -> mass balance -> report.html.

    Without CONFIG it runs on the built-in sample. CONFIG (YAML or TOML) points at your own
    data: scenes (paths or globs), dem, outlines, labels and optionally wgms; see README.
    """
    from glacierfacies.workflow.pipeline import run_pipeline

    report = run_pipeline(config, out, log=lambda m: click.echo(m, err=True))
    click.echo(f"outputs: {report.parent}")
    click.echo(f"report:  {report}")


if __name__ == "__main__":
    main()
