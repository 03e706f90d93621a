"""`glacierfacies train`, `evaluate` and `export-onnx`."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import device_option, overwrite_option
from glacierfacies.errors import InputError

__all__ = ["evaluate_cmd", "export_onnx_cmd", "train_cmd"]


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
@click.option("--batch-size", type=int, default=None,
              help="Default 256 (paper) / 64 (sample); paper on CUDA: 1024.")
@click.option("--width", type=int, default=None, help="Conv channels (paper 64).")
@click.option("--lr", type=float, default=None,
              help="Default 1e-3, x sqrt(batch / 256) above batch 256 (paper).")
@click.option("--patience", type=int, default=None, help="Early stopping (epochs).")
@click.option("--features", default=None, help="Subset name or comma list (default: all).")
@click.option("--prune-classes", default=None,
              help="Comma list of classes confident learning may prune (default: facies).")
@device_option(auto=True)
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
    from glacierfacies._testing import batch_hook_from_env
    from glacierfacies.classes import CLASS_NAMES, class_index
    from glacierfacies.features import resolve_features
    from glacierfacies.training.config import TrainConfig
    from glacierfacies.training.evaluation import metrics_summary_lines
    from glacierfacies.training.protocol import train_dataset
    from glacierfacies.workflow.figures import training_figures

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
                            progress=not quiet, on_batch=batch_hook_from_env(),
                            log=None if quiet else (lambda m: click.echo(m, err=True)))
    if stage in ("round2", "all"):  # the run was evaluated: draw its figures
        training_figures(run_dir)
    click.echo(f"{run_dir}: stage {stage} done")
    for line in metrics_summary_lines(metrics):
        click.echo(line)


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="PatchSet folder (default: the one recorded in the run).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Metrics file to write (default: RUN_DIR/metrics.json).")
@overwrite_option(help="Replace OUT if present (default: refuse); needed to update "
                        "RUN_DIR/metrics.json, which `train` writes, in place.")
def evaluate_cmd(run_dir, dataset, out, overwrite) -> None:
    """Recompute RUN_DIR/metrics.json, confusion matrices and reliability diagram.

    The metrics come from the run's stored out-of-fold predictions. `train` has written
    RUN_DIR/metrics.json already: pass --overwrite to replace it, or -o to write the
    recomputed metrics elsewhere. The figures are redrawn in RUN_DIR.
    """
    from glacierfacies.layout import get_filepath
    from glacierfacies.training.evaluation import evaluate_run, metrics_summary_lines
    from glacierfacies.workflow.figures import training_figures

    dest = out if out is not None else get_filepath("metrics", run_dir)
    metrics = evaluate_run(run_dir, dataset, out=dest, overwrite=overwrite)
    training_figures(run_dir)
    click.echo(f"{dest} written")
    for line in metrics_summary_lines(metrics):
        click.echo(line)


@cli.command("export-onnx")
@click.argument("model")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write (builtin:NAME: one OUT_foldK.onnx per fold model).")
@overwrite_option("OUT")
def export_onnx_cmd(model, out, overwrite) -> None:
    """Export a fold model (dense, normalised, calibrated) to ONNX: features -> probabilities.

    MODEL is a fold model file or builtin:NAME (its fold models, one ONNX file each; average
    their probabilities as `map` does).
    """
    from glacierfacies.errors import InputError
    from glacierfacies.model.builtin import is_builtin, resolve_models
    from glacierfacies.model.onnx import export_onnx

    if is_builtin(model):
        files = resolve_models([model])
        outs = [out.with_name(f"{out.stem}_{f.stem}{out.suffix or '.onnx'}") for f in files]
    else:
        if not Path(model).is_file():
            raise InputError(model, "model file does not exist")
        files, outs = [Path(model)], [out]
    for t in outs:  # refuse before writing any of them
        if t.exists() and not overwrite:
            raise InputError(t, "output exists; pass --overwrite to replace it")
    for f, t in zip(files, outs, strict=True):
        export_onnx(f, t, overwrite=overwrite)
        click.echo(f"{t}: input 'features' (B, F, H, W) raw, output 'probabilities' "
                   "(B, 8, H-S+1, W-S+1)")
