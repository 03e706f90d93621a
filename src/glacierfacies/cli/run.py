"""`glacierfacies run`: the main job."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli

__all__ = ["run_cmd"]


@cli.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("glacierfacies_run"), show_default=True,
              help="Output folder; a rerun skips the stages already finished there.")
@click.option("--check", is_flag=True,
              help="Only check the configuration and every input (as a run does before it "
                   "writes anything), write nothing, and exit.")
def run_cmd(config: Path | None, out: Path, check: bool) -> None:
    """Run the whole chain: features -> patches -> 6-fold training with confident learning ->
    maps of every scene -> glacier products -> mass balance -> report.html.

    Without CONFIG it runs on the built-in sample. CONFIG (YAML or TOML) points at your own
    data: scenes (paths or globs), dem, outlines, labels and optionally wgms; see README.
    """
    from glacierfacies.workflow.pipeline import run_pipeline

    if check:
        from glacierfacies.workflow.config import load_config
        from glacierfacies.workflow.inputs import check_run

        cfg, _ = load_config(config)
        check_run(cfg, out.resolve(), config)
        click.echo(f"{config or 'built-in sample'}: configuration and inputs OK")
        return
    report = run_pipeline(config, out, log=lambda m: click.echo(m, err=True))
    click.echo(f"outputs: {report.parent}")
    click.echo(f"report:  {report}")

