"""`glacierfacies predict`: models applied to a point table or a PatchSet folder."""

from __future__ import annotations

from pathlib import Path

import click

from glacierfacies.cli.main import cli
from glacierfacies.cli.options import models_option, overwrite_option, point_table_options

__all__ = ["predict_cmd"]


def _split(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@cli.command("predict")
@click.argument("source", metavar="TABLE", type=click.Path(path_type=Path))
@models_option
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Predictions CSV (one row per point); scores go to OUT_scores.json.")
@point_table_options
@click.option("--class-column", default="class", show_default=True,
              help="Labels to score against (skipped when the table has no such column).")
@click.option("--positive", default=None,
              help="Classes of a group to score as one (e.g. snow,firn,shadow): binary F1.")
@click.option("--positive-labels", default=None,
              help="Values of the label column that are the group (e.g. 1 for a snow/no-snow "
                   "table); without --class-map the labels are taken as binary and only the "
                   "binary F1 is scored. Default: labels that map to --positive classes.")
@overwrite_option("OUT and its scores")
def predict_cmd(source, models, out, bands, scale, offset, class_column, class_map, layer,
                positive, positive_labels, overwrite) -> None:
    """Predict the class of every point of TABLE (CSV/GeoPackage of per-point band values, or
    a PatchSet folder): pred_class, confidence and p_<class> (ensemble mean of calibrated
    probabilities). With a label column, print and write the scores."""
    from glacierfacies.workflow.predict import predict_points, scores_lines

    res = predict_points(source, models, out, bands=bands, scale=scale, offset=offset,
                         class_column=class_column, class_map=class_map, layer=layer,
                         positive=_split(positive), positive_labels=_split(positive_labels),
                         overwrite=overwrite)
    shares = ", ".join(f"{k} {v / max(res.n_predicted, 1):.0%}"
                       for k, v in res.class_counts.items())
    click.echo(f"{out}: {res.n_predicted} of {res.n_points} points predicted ({shares})")
    if res.scores is None:
        for band, sub in res.band_substitutions.items():
            click.echo(f"band substitution: {band} read from column {sub['column']} "
                       f"(that of {sub['column_of']})")
    else:
        for line in scores_lines(res.scores):
            click.echo(line)
        click.echo(f"scores: {res.scores_path}")
