"""`glacierfacies train`, `evaluate` and `export-onnx`."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.errors import InputError


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
@click.option("--batch-size", type=int, default=None,
              help="Default 256 (paper) / 64 (sample); paper on CUDA: 1024.")
@click.option("--width", type=int, default=None, help="Conv channels (paper 64).")
@click.option("--lr", type=float, default=None,
              help="Default 1e-3, x sqrt(batch / 256) above batch 256 (paper).")
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

