"""Figures of the report (PNG): quicklooks, series, counts, confusion, reliability, scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glacierfacies.classes import CLASSES, NODATA_CLASS


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
    rgb: np.ndarray, class_map: np.ndarray, path: Path, title: str = ""
) -> Path:
    """RGB scene beside its facies map with a legend of the class colours."""
    plt = _agg()
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
    axes[1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def timeseries_png(products, path: Path, min_observed: float = 0.8) -> Path:
    """AAR and snowline altitude through time, one line per glacier; scenes where less than
    `min_observed` of the glacier is seen (cloud) are drawn as open markers, not joined."""
    import pandas as pd

    plt = _agg()
    df = products.copy()
    df["date"] = pd.to_datetime(df["date"])
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    for glacier, g in df.sort_values("date").groupby("glacier"):
        seen = g["observed_fraction"] >= min_observed
        for ax, col in ((axes[0], "aar"), (axes[1], "snowline_m")):
            line, = ax.plot(g.loc[seen, "date"], g.loc[seen, col], marker="o",
                            label=str(glacier))
            ax.plot(g.loc[~seen, "date"], g.loc[~seen, col], marker="o", linestyle="none",
                    markerfacecolor="none", color=line.get_color())
    axes[1].set_xlabel(f"open markers: glacier less than {min_observed:.0%} observed")
    axes[0].set_ylabel("AAR")
    axes[0].set_ylim(0, 1)
    axes[1].set_ylabel("snowline altitude (m)")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].set_title("accumulation-area ratio and snowline altitude per glacier and scene")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def bar_counts_png(counts, path: Path, title: str, xlabel: str = "") -> Path:
    """Horizontal bar chart of a pandas Series of counts."""
    plt = _agg()
    fig, ax = plt.subplots(figsize=(6, 0.35 * max(len(counts), 3) + 1), constrained_layout=True)
    ax.barh([str(i) for i in counts.index], counts.values, color="#4a7fb5")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

