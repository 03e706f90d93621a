"""Figures of the report (PNG): quicklooks, series, counts, confusion, reliability, scatter.

Drawn from numbers the stages computed and wrote (`training.evaluation` writes
RUN_DIR/figure_data.json, `products.regression` the massbalance folder); `training_figures`
and `massbalance_figures` are what the CLI and the main job call after those stages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glacierfacies._io import save_figure
from glacierfacies.classes import CLASSES, NODATA_CLASS
from glacierfacies.layout import get_filepath

__all__ = ["bar_counts_png", "class_colormap", "confusion_png", "hypsometry_png",
           "massbalance_figures",
           "quicklook_png", "reliability_png", "rgb_composite", "scatter_png", "timeseries_png",
           "training_figures"]


def _agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_colormap():
    """A ListedColormap over codes 0..7 with the registry colours."""
    from matplotlib.colors import ListedColormap

    return ListedColormap([np.array(c.colour) / 255.0 for c in CLASSES])


def rgb_composite(reflectance_rgb: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """(3, H, W) red-green-blue reflectance -> (H, W, 3) display image in 0..1 (NaN -> black)."""
    rgb = np.moveaxis(np.asarray(reflectance_rgb, dtype=np.float32), 0, -1)
    finite = np.isfinite(rgb)
    hi = float(np.nanpercentile(rgb, percentile)) if finite.any() else 1.0
    out = np.clip(np.where(finite, rgb, 0.0) / max(hi, 1e-6), 0.0, 1.0)
    return out


def quicklook_png(
    rgb: np.ndarray, class_map: np.ndarray, path: Path, title: str = "",
    elevation: np.ndarray | None = None, glacier_index: np.ndarray | None = None,
    lines: Sequence[tuple[int, float, float]] = (),
) -> Path:
    """RGB scene beside its facies map with a legend of the class colours. With
    `elevation` and `glacier_index` (on the quicklook grid) and `lines` (glacier index,
    snowline altitude, firn-line altitude), each glacier's snowline (solid) and firn line
    (dashed) are drawn on both panels: the DEM contour at that altitude inside its outline."""
    plt = _agg()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    axes[0].imshow(rgb_composite(rgb))
    axes[0].set_title("true colour (B4-B3-B2)")
    masked = np.ma.masked_equal(class_map, NODATA_CLASS)
    axes[1].imshow(rgb_composite(rgb) * 0.35 + 0.65 * 0.0)
    axes[1].imshow(masked, cmap=class_colormap(), vmin=-0.5, vmax=len(CLASSES) - 0.5,
                   interpolation="nearest")
    axes[1].set_title("facies map")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(facecolor=np.array(c.colour) / 255.0, edgecolor="k", label=c.name)
               for c in CLASSES]
    if _draw_lines(axes, elevation, glacier_index, lines):
        handles += [Line2D([], [], color="#e8112d", lw=1.6, label="snowline"),
                    Line2D([], [], color="#ff9f1c", lw=1.6, ls="--", label="firn line")]
    axes[1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=90)


def season_segments(dates, values, gap_days: int = 120) -> tuple[list, list]:
    """(x, y) with a break (NaN) wherever consecutive dates are more than `gap_days` apart:
    a line joins the scenes of one ablation season, never two summers across a winter."""
    import pandas as pd

    dates, values = list(pd.to_datetime(dates)), list(values)
    xs: list = []
    ys: list = []
    for i, (d, v) in enumerate(zip(dates, values, strict=True)):
        if i and (d - dates[i - 1]).days > gap_days:
            xs.append(d - (d - dates[i - 1]) / 2)
            ys.append(np.nan)
        xs.append(d)
        ys.append(v)
    return xs, ys


def _draw_lines(axes, elevation, glacier_index, lines) -> bool:
    """Contours of `elevation` at each glacier's snowline / firn line, inside the glacier."""
    if elevation is None or glacier_index is None or not len(lines):
        return False
    drawn = False
    for gi, snow, firn in lines:
        inside = glacier_index == gi
        if inside.sum() < 4:
            continue
        z = np.where(inside, elevation, np.nan)
        for level, colour, style in ((snow, "#e8112d", "-"), (firn, "#ff9f1c", "--")):
            if level is None or not np.isfinite(level):
                continue
            if not (np.nanmin(z) < level < np.nanmax(z)):
                continue
            for ax in axes:
                ax.contour(z, levels=[level], colors=colour, linewidths=1.4, linestyles=style)
            drawn = True
    return drawn


def hypsometry_png(elevation_m: np.ndarray, classes: np.ndarray, pixel_area_km2: float,
                   path: Path, title: str = "", band_m: float = 50.0) -> Path:
    """Area per `band_m` altitude band of one glacier, stacked by facies class (observed
    pixels; unclassified ones are left out and counted in the caption's title)."""
    plt = _agg()
    ok = np.isfinite(elevation_m) & (classes < len(CLASSES))
    z, c = elevation_m[ok], classes[ok].astype(np.int64)
    fig, ax = plt.subplots(figsize=(5.5, 4.2), constrained_layout=True)
    if z.size:
        lo = np.floor(z.min() / band_m) * band_m
        hi = np.ceil(z.max() / band_m) * band_m + (band_m if z.max() % band_m == 0 else 0)
        edges = np.arange(lo, hi + band_m / 2, band_m)
        band = np.clip(np.digitize(z, edges) - 1, 0, len(edges) - 2)
        area = np.zeros((len(edges) - 1, len(CLASSES)))
        np.add.at(area, (band, c), pixel_area_km2)
        left = np.zeros(len(edges) - 1)
        centres = edges[:-1] + band_m / 2
        for k, cls in enumerate(CLASSES):
            if area[:, k].any():
                ax.barh(centres, area[:, k], height=band_m * 0.9, left=left,
                        color=np.array(cls.colour) / 255.0, edgecolor="#555", linewidth=0.3,
                        label=cls.name)
                left += area[:, k]
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("area per 50 m band (km²)" if band_m == 50 else f"area per {band_m:g} m "
                  "band (km²)")
    ax.set_ylabel("altitude (m)")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path, dpi=90)


def timeseries_png(products, path: Path, min_observed: float = 0.8,
                   gap_days: int = 120) -> Path:
    """AAR and snowline altitude through time, one line per glacier and season (broken
    across winters, `season_segments`); scenes where less than `min_observed` of the glacier
    is seen (cloud) are drawn as open markers, not joined."""
    import pandas as pd

    plt = _agg()
    df = products.copy()
    df["date"] = pd.to_datetime(df["date"])
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    for glacier, g in df.sort_values("date").groupby("glacier"):
        seen = g["observed_fraction"] >= min_observed
        for ax, col in ((axes[0], "aar"), (axes[1], "snowline_m")):
            x, y = season_segments(g.loc[seen, "date"], g.loc[seen, col], gap_days)
            line, = ax.plot(x, y, marker="o", label=str(glacier))
            ax.plot(g.loc[~seen, "date"], g.loc[~seen, col], marker="o", linestyle="none",
                    markerfacecolor="none", color=line.get_color())
    axes[1].set_xlabel(f"open markers: glacier less than {min_observed:.0%} observed; lines "
                       f"join scenes of one season (no line across gaps > {gap_days} days)")
    axes[0].set_ylabel("AAR")
    axes[0].set_ylim(0, 1)
    axes[1].set_ylabel("snowline altitude (m)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].set_title("accumulation-area ratio and snowline altitude per glacier and scene")
    return save_figure(fig, path, dpi=90)


def bar_counts_png(counts, path: Path, title: str, xlabel: str = "") -> Path:
    """Horizontal bar chart of a pandas Series of counts."""
    plt = _agg()
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(len(counts), 3) + 1), constrained_layout=True)
    ax.barh([str(i) for i in counts.index], counts.values, color="#4a7fb5")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    return save_figure(fig, path, dpi=90)


def confusion_png(counts: Any, class_names: Sequence[str], path: Path, *,
                  title: str | None = None) -> Path:
    """The confusion matrix as counts (left) and row-normalised (right); rows = reference."""
    from glacierfacies.training.metrics import row_normalised

    plt = _agg()
    n_classes = len(class_names)
    cm = np.asarray(counts, dtype=np.int64).reshape(n_classes, n_classes)
    norm = row_normalised(cm)
    size = 3.0 + 0.55 * n_classes
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), constrained_layout=True)
    try:
        panels = ((cm, "counts", "d"), (norm, "row-normalised (recall)", ".2f"))
        for ax, (mat, label, fmt) in zip(axes, panels, strict=True):
            shown = mat / max(mat.max(), 1e-12)
            ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0)
            for i in range(n_classes):
                for j in range(n_classes):
                    ax.text(j, i, _cell_text(mat[i, j], fmt), ha="center", va="center",
                            fontsize=11, color="white" if shown[i, j] > 0.5 else "black")
            ax.set_xticks(range(n_classes), class_names, rotation=45, ha="right", fontsize=11)
            ax.set_yticks(range(n_classes), class_names, fontsize=11)
            ax.set_xlabel("predicted", fontsize=12)
            ax.set_ylabel("reference", fontsize=12)
            ax.set_title(label, fontsize=13)
        if title:
            fig.suptitle(title)
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, dpi=120)


def _cell_text(value: Any, fmt: str) -> str:
    """A confusion cell: counts compact (1.2k), empty cells blank, recall to 2 decimals."""
    if fmt == "d":
        v = int(value)
        return "" if v == 0 else (f"{v / 1000:.1f}k" if v >= 10_000 else str(v))
    return "" if value == 0 else format(value, fmt)


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)  # None (JSON null of an empty bin) -> NaN


def reliability_png(reliability: dict[str, Any], path: Path) -> Path:
    """Reliability diagram, one column per panel of `calibration.reliability` (before |
    after): accuracy per confidence bin against the diagonal, points per bin below."""
    plt = _agg()
    panels = reliability["panels"]
    n_bins, ece_bins = int(reliability["n_bins"]), int(reliability["ece_bins"])
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 5.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True,
                             constrained_layout=True)
    try:
        for col, panel in enumerate(panels):
            edges, count = _floats(panel["edges"]), np.asarray(panel["count"], dtype=np.int64)
            accuracy, confidence = _floats(panel["accuracy"]), _floats(panel["confidence"])
            width = 1.0 / n_bins
            centres = edges[:-1] + width / 2
            used = count > 0
            ax = axes[0, col]
            ax.bar(centres[used], accuracy[used], width=width, color="#4c78a8",
                   edgecolor="white", label="accuracy")
            ax.bar(centres[used], confidence[used] - accuracy[used], bottom=accuracy[used],
                   width=width, color="#e45756", alpha=0.45, edgecolor="white",
                   label="gap to confidence")
            ax.plot([0, 1], [0, 1], "k--", lw=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy")
            ax.set_title(f"{panel['label']}\nECE ({ece_bins} bins) = {100 * panel['ece']:.2f}%")
            ax.legend(loc="upper left", fontsize=8)
            hist = axes[1, col]
            hist.bar(centres, count, width=width, color="grey")
            hist.set_yscale("log" if count.max() > 100 else "linear")
            hist.set_xlabel("confidence (top-label probability)")
            hist.set_ylabel("points")
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, dpi=120)


def scatter_png(predicted: Any, observed: Any, title: str, path: Path) -> Path:
    """Held-out predicted vs observed balance, with the 1:1 line."""
    plt = _agg()
    predicted, observed = _floats(predicted), _floats(observed)
    ok = np.isfinite(predicted) & np.isfinite(observed)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(observed[ok], predicted[ok], s=6, alpha=0.5, edgecolors="none")
    if ok.any():
        lo = float(min(observed[ok].min(), predicted[ok].min()))
        hi = float(max(observed[ok].max(), predicted[ok].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
        ax.legend(loc="upper left")
    ax.set_xlabel("observed annual balance (m w.e.)")
    ax.set_ylabel("predicted, held out (m w.e.)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def training_figures(run_dir: Path) -> list[Path]:
    """RUN_DIR/confusion_cleaned.png, confusion_unpruned.png and reliability.png from the
    evaluation's figure_data.json (none when the run has not been evaluated yet)."""
    data_path = get_filepath("figure_data", run_dir)
    if not data_path.is_file():
        return []
    data = json.loads(data_path.read_text())
    paths = [confusion_png(data["confusion"][name]["counts"], data["classes"],
                           get_filepath(f"confusion_{name}", run_dir),
                           title=data["confusion"][name]["title"])
             for name in ("cleaned", "unpruned")]
    paths.append(reliability_png(data["reliability"], get_filepath("reliability", run_dir)))
    return paths


def massbalance_figures(out_dir: Path) -> list[Path]:
    """OUT_DIR/scatter_<product>_<global|glacier>.png of a finished `run_massbalance`."""
    from glacierfacies.products.regression import scatter_panels

    return [scatter_png(p["predicted"], p["observed"], p["title"], Path(out_dir) / f"{p['name']}.png")
            for p in scatter_panels(out_dir)]

