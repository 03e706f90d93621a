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
    from glacierfacies.sample import write_sample

    if seed < 0:
        raise InputError(None, f"--seed must be >= 0, got {seed}")
    summary = write_sample(out_dir, seed=seed, overwrite=overwrite)
    click.echo(summary)


# ---------------------------------------------------------------- features (issue 3)

# ---------------------------------------------------------------- dataset (issue 4)

# ---------------------------------------------------------------- train / evaluate (issue 5)

# ---------------------------------------------------------------- map / map-many (issue 6)

# ---------------------------------------------------------------- products / massbalance (issue 7)

# ---------------------------------------------------------------- run (issue 8)


if __name__ == "__main__":
    main()
