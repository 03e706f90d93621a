"""`glacierfacies dataset ...`: build, import, export and describe PatchSets."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies._io import check_output
from glacierfacies.cli.main import cli
from glacierfacies.cli.options import (
    dem_option,
    device_option,
    fold_options,
    outlines_option,
    overwrite_option,
    patch_dtype_option,
    point_table_options,
    read_options,
    read_options_decorator,
)
from glacierfacies.errors import InputError

__all__ = [
    "dataset_build_cmd",
    "dataset_export_published_cmd",
    "dataset_group",
    "dataset_import_points_cmd",
    "dataset_import_published_cmd",
    "dataset_info_cmd",
]


@cli.group("dataset")
def dataset_group() -> None:
    """Build, import, export and inspect packed patch datasets (PatchSet folders)."""


def _dataset_scene_paths(scenes: tuple[Path, ...]) -> list[Path]:
    from glacierfacies.scenes.reader import _stac_expanded, find_scenes

    paths: list[Path] = []
    for p in scenes:  # a folder of scenes, or a scene folder itself (find_scenes keeps it)
        # a STAC ItemCollection / catalog gives its items
        paths.extend(find_scenes(p) if p.is_dir() else map(Path, _stac_expanded([str(p)])))
    if not paths:
        raise InputError(scenes[0] if scenes else None, "no scenes found")
    return paths


@dataset_group.command("build")
@click.option("--scenes", "scenes", multiple=True, required=True,
              type=click.Path(exists=True, path_type=Path),
              help="Scene folder(s)/file(s), or a folder of scenes (repeatable).")
@dem_option(must_exist=True)
@outlines_option(must_exist=True)
@click.option("--labels", required=True, type=click.Path(exists=True, path_type=Path),
              help="Points: class, glacier, scene_id (+ date, sensor, region, point_id).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="PatchSet folder to write.")
@click.option("--patch-size", default=33, show_default=True,
              help="A size the CNN takes: 1 or 2*3 + 3*P with P odd >= 7 (27, 33, 39, ...).")
@click.option("--any-patch-size", is_flag=True,
              help="Accept any odd size 1..65 (for training with other --set fine_depth / "
                   "coarse_depth, or other tools).")
@click.option("--features", default="all", show_default=True,
              help="Subset name (optical, optical+elevation, ...) or comma list.")
@patch_dtype_option
@fold_options
@device_option()
@read_options_decorator
@overwrite_option("OUT")
def dataset_build_cmd(scenes, dem, outlines, labels, out_dir, patch_size, any_patch_size,
                      features, dtype, k_folds, fold_column, seed, device, overwrite,
                      **read_kw) -> None:
    """Sample patches of the feature stack at labelled points into a PatchSet folder."""
    from glacierfacies.data.build import build_patchset
    from glacierfacies.data.patchset import check_patch_size
    from glacierfacies.mapping.config import check_device
    from glacierfacies.mapping.inference import auto_device
    from glacierfacies.model.network import pooled_grid_size

    check_patch_size(patch_size)
    if not any_patch_size:
        try:  # `train` with its default depths must take what this builds
            pooled_grid_size(patch_size)
        except ValueError as exc:
            raise InputError(None, f"--patch-size: {exc} (or pass --any-patch-size)") from None
    device = check_device(auto_device(device))  # terrain features on CUDA when present
    check_output(out_dir, overwrite=overwrite)  # before sampling any scene
    options = read_options(read_kw)
    ps = build_patchset(_dataset_scene_paths(scenes), dem, outlines, labels,
                        patch_size=patch_size, features=features, dtype=dtype,
                        k_folds=k_folds, fold_column=fold_column, seed=seed, out_dir=out_dir,
                        overwrite=overwrite, read_options=options, device=device)
    s = ps.provenance["summary"]
    click.echo(f"{out_dir}: kept {s['kept']} of {s['labels']} points; skipped "
               f"{s['skipped_edge']} near a scene edge, {s['skipped_invalid']} with invalid "
               "pixels")
    click.echo(ps.summary())


@dataset_group.command("import-published")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="PatchSet folder to write.")
@patch_dtype_option
@click.option("--workers", default=4, show_default=True, help="Reader threads.")
@overwrite_option("OUT")
def dataset_import_published_cmd(folder, out_dir, dtype, workers, overwrite) -> None:
    """Pack a folder of per-patch GeoTIFFs ({fold}_{glacier}_{date}_..._{class}.tif)."""
    from glacierfacies.data.published import import_published

    check_output(out_dir, overwrite=overwrite)  # before reading any patch
    ps = import_published(folder, out_dir=out_dir, dtype=dtype, workers=workers,
                          overwrite=overwrite)
    click.echo(f"{out_dir}:")
    click.echo(ps.summary())


@dataset_group.command("export-published")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "folder", required=True, type=click.Path(path_type=Path),
              help="Folder of per-patch GeoTIFFs to write.")
@click.option("--workers", default=4, show_default=True, help="Writer threads.")
@overwrite_option("OUT")
def dataset_export_published_cmd(dataset_dir, folder, workers, overwrite) -> None:
    """Write a PatchSet (all 11 features) as one GeoTIFF per patch, the published layout."""
    from glacierfacies.data.published import export_published

    check_output(folder, overwrite=overwrite)  # before reading the set
    export_published(dataset_dir, folder, workers=workers, overwrite=overwrite)
    click.echo(f"{folder}: {sum(1 for _ in folder.glob('*.tif'))} patches written")


@dataset_group.command("import-points")
@click.argument("table", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="PatchSet folder to write.")
@point_table_options
@click.option("--class-column", default="class", show_default=True)
@click.option("--glacier-column", default="glacier", show_default=True)
@click.option("--strict", is_flag=True, help="Unmapped classes are an error, not dropped.")
@fold_options
@overwrite_option("OUT")
def dataset_import_points_cmd(table, out_dir, bands, class_column, class_map, glacier_column,
                              scale, offset, strict, fold_column, k_folds, seed, layer,
                              overwrite) -> None:
    """A table of sampled band values (CSV/GeoPackage) -> spectral-only PatchSet (1x1)."""
    from glacierfacies.data.points import import_points

    check_output(out_dir, overwrite=overwrite)  # before reading the table
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

