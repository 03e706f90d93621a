"""Figures and the self-contained HTML report of a run.

The report embeds every figure as a base64 PNG, so `report.html` opens offline and can be
mailed as one file; each figure is also saved as a PNG beside it for papers and slides.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glacierfacies.classes import CLASS_NAMES, CLASSES, NODATA_CLASS


@dataclass
class Figure:
    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables_html: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


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


def table_html(df, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame as a plain HTML table (numbers formatted, index kept if named)."""
    keep_index = df.index.name is not None or any(n is not None for n in (df.index.names or []))
    return df.to_html(
        classes="tbl", border=0, index=keep_index, na_rep="–",
        float_format=lambda v: f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1
        else float_format.format(v),
    )


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1150px;color:#1d2733;line-height:1.45;padding:0 1em}
h1{border-bottom:3px solid #4a7fb5;padding-bottom:.3em}
h2{margin-top:2em;border-bottom:1px solid #ccd;padding-bottom:.2em}
table.tbl{border-collapse:collapse;margin:.8em 0;font-size:.9em}
table.tbl td,table.tbl th{border:1px solid #ccd;padding:.25em .6em;text-align:right}
table.tbl th{background:#eef2f7}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #dde}
figcaption{font-size:.85em;color:#556}
pre{background:#f5f7fa;padding:1em;overflow-x:auto;font-size:.8em}
.legend span{display:inline-block;width:1em;height:1em;margin:0 .3em 0 1em;border:1px solid #333;
vertical-align:middle}
"""


def legend_html() -> str:
    items = "".join(
        f'<span style="background:rgb{c.colour}"></span>{html.escape(c.name)}' for c in CLASSES
    )
    return f'<p class="legend">{items}</p>'


def render_html(title: str, intro: str, sections: list[Section]) -> str:
    """The whole report as one HTML string with embedded images."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{intro}</p>",
        "<nav><ul>" + "".join(
            f"<li><a href='#s{i}'>{html.escape(s.heading)}</a></li>"
            for i, s in enumerate(sections)) + "</ul></nav>",
    ]
    for i, s in enumerate(sections):
        parts.append(f"<h2 id='s{i}'>{html.escape(s.heading)}</h2>")
        parts.extend(f"<p>{p}</p>" for p in s.paragraphs)
        parts.extend(s.tables_html)
        for fig in s.figures:
            parts.append(
                f"<figure>{_img_tag(fig.path, fig.title)}<figcaption><b>{html.escape(fig.title)}"
                f"</b> {html.escape(fig.caption)}</figcaption></figure>"
            )
    # lets a headless browser check (scripts/check_report.py) that every figure decoded
    parts.append(
        "<script>window.addEventListener('load',function(){var im=document.images,b=0;"
        "for(var i=0;i<im.length;i++){if(!im[i].complete||im[i].naturalWidth===0)b++;}"
        "document.body.setAttribute('data-images',im.length);"
        "document.body.setAttribute('data-broken-images',b);});</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def json_block(obj) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2, default=str))}</pre>"


__all__ = [
    "CLASS_NAMES", "Figure", "Section", "bar_counts_png", "json_block", "legend_html",
    "quicklook_png", "render_html", "rgb_composite", "table_html", "timeseries_png",
]
