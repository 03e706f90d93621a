"""`glacierfacies sample`: write the built-in sample."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import overwrite_option
from glacierfacies.errors import InputError

__all__ = ["sample_cmd"]


@cli.command("sample")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (>= 0).")
@overwrite_option("OUT_DIR")
def sample_cmd(out_dir: Path, seed: int, overwrite: bool) -> None:
    """Write the built-in sample (DEM, outlines, scenes, labels, WGMS-like table) to OUT_DIR."""
    from glacierfacies.sample.generate import write_sample

    if seed < 0:
        raise InputError(None, f"--seed must be >= 0, got {seed}")
    summary = write_sample(out_dir, seed=seed, overwrite=overwrite)
    click.echo(summary)

