"""`glacierfacies models`: the built-in models (list, rebuild)."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import overwrite_option

__all__ = ["models_build_cmd", "models_group"]


@cli.group("models", invoke_without_command=True)
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """List the built-in models (use them as --model builtin:NAME); `models build` rebuilds
    them from the labelled points (`make models`)."""
    if ctx.invoked_subcommand is not None:
        return
    from glacierfacies.errors import InputError
    from glacierfacies.model.builtin import BUILTIN_MODELS, PREFIX, builtin_card

    for name, spec in BUILTIN_MODELS.items():
        click.echo(f"{PREFIX}{name}: {', '.join(spec.sensors)}")
        try:
            card = builtin_card(name)
        except InputError as exc:
            click.echo(f"  not installed: {exc}")
            continue
        logo = card["leave_one_glacier_out"]
        bands = ", ".join(f"{b}={c}" for b, c in card["band_columns"].items())
        click.echo(f"  bands {bands} (patch size 1, spectral); NIR: {card['nir']}")
        click.echo(f"  classes {', '.join(card['classes_trained'])}; "
                   f"{len(card['members'])} fold models (ensemble)")
        src = card["training_data"]
        click.echo(f"  trained on {src['points_used']:,} points of {src['file']} "
                   f"({src['url']}, {src['licence']})")
        click.echo("  leave-one-glacier-out snow F1 (snow + shadow vs rest): "
                   + ", ".join(f"{g} {v['snow_f1']:.3f}" for g, v in logo["per_glacier"].items())
                   + f"; mean {logo['mean_snow_f1']:.3f}")


@models_group.command("build")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("../shared/data/aberle"), show_default=True,
              help="Folder of Aberle et al.'s training CSVs.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write the models here (default: the package's own folder).")
@click.option("--name", "names", multiple=True, help="Only this model (repeatable).")
@overwrite_option("the models in OUT (`make models` passes it)")
def models_build_cmd(data_dir: Path, out_dir: Path | None, names: tuple[str, ...],
                     overwrite: bool) -> None:
    """Retrain the built-in models (seeded, CPU, one thread: the same weights every time)."""
    import time

    from glacierfacies.errors import InputError
    from glacierfacies.model.builtin import BUILTIN_DIR, BUILTIN_MODELS
    from glacierfacies.workflow.builtin_models import build_builtin

    names = names or tuple(BUILTIN_MODELS)
    for name in names:  # before any training
        if name not in BUILTIN_MODELS:
            raise InputError(None, f"unknown built-in model {name!r}; known: "
                                   f"{', '.join(BUILTIN_MODELS)}")
        dest = (out_dir or BUILTIN_DIR) / name
        if not overwrite and (dest / "model.json").exists():
            raise InputError(dest, "built-in model exists; pass --overwrite to rebuild it")
    for name in names:
        t0 = time.perf_counter()
        card = build_builtin(name, data_dir, out_dir)
        logo = card["leave_one_glacier_out"]
        click.echo(f"builtin:{name}: {len(card['members'])} fold models in "
                   f"{time.perf_counter() - t0:.0f} s; leave-one-glacier-out snow F1 "
                   f"mean {logo['mean_snow_f1']:.3f}")


@models_group.command("import-reference")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the imported ensemble (use it as --model DIR).")
@click.option("--feature-set", type=click.IntRange(1, 4), default=None,
              help="1 optical, 2 +elevation/slope, 3 +shadow/hillshade, 4 +proximity "
                   "(default: the set of the files found; a clone's top-level weights/ is 4).")
@click.option("--minmax", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The authors' globalminmax.pickle, if you have it.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="A PatchSet (e.g. from `dataset import-published`): the "
                                 "normalisation is its per-feature min and max.")
@click.option("--mode", type=click.Choice(["exact", "dense"]), default="exact",
              show_default=True,
              help="exact: the paper's per-patch network (zero padding at each patch edge); "
                   "dense: the same weights as one valid pass, ~70x cheaper, not the same "
                   "classes everywhere (agreement in docs/models.md).")
@overwrite_option("OUT")
def models_import_reference_cmd(path: Path, out_dir: Path, feature_set: int | None,
                                minmax: Path | None, dataset: Path | None, mode: str,
                                overwrite: bool) -> None:
    """Import the paper's fold models (Maslov et al. 2026, Keras HDF5, GPL v2) from PATH, a
    clone of the authors' repository or a folder of their .h5 files. The weights stay where
    they are; OUT gets one card per fold and model.json. Without --minmax or --dataset the
    normalisation is the one recovered from the weights (docs/models.md)."""
    from glacierfacies.model.reference_import import import_reference

    card = import_reference(path, out_dir, feature_set=feature_set, minmax=minmax,
                            dataset=dataset, mode=mode, overwrite=overwrite)
    click.echo(f"{out_dir}: {len(card['members'])} fold models of feature set "
               f"{card['feature_set']} ({', '.join(card['features'])}); {mode} network; "
               f"normalisation: "
               f"{card['normalisation']['method']}; licence {card['licence']}")
