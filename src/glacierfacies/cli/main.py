"""The `glacierfacies` command group and its entry point: one-line errors, non-zero exits.

Command modules register on `cli`; `main()` turns every `GlacierFaciesError` (bad input, a
model that does not fit the data, a run folder of another configuration, an output that
exists without --overwrite) into one line, `error: <path>: <problem>`, and exit status 1.
"""

from __future__ import annotations

import sys

import click

from glacierfacies import __version__
from glacierfacies.errors import GlacierFaciesError

__all__ = ["cli", "main"]


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

    Commands that write refuse to replace an existing output unless given --overwrite;
    `train` and `run` resume the folder they are given instead.
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
    except GlacierFaciesError as exc:  # InputError (also a ValueError) and the rest
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # file system refusals (permissions, full disk, a file as folder)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        text = exc.strerror or str(exc)
        click.echo(f"error: {where}{text}".splitlines()[0], err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)

