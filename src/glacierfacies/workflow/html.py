"""Self-contained HTML: sections, figures embedded as data URIs, tables, legend."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from glacierfacies.classes import CLASSES


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


def column_digits(name: str) -> int | None:
    """Decimals a report column is shown with, from its name: altitudes and lengths (``_m``,
    ``(m)``) to 1 m, areas (``km2``) to 0.01 km², balances (``mwe``, ``m w.e.``) to 0.01;
    None: the table's default."""
    n = str(name).lower()
    if "km2" in n or "km²" in n:
        return 2
    if "mwe" in n or "m w.e." in n:
        return 2
    if "%" in n or "percent" in n:
        return 1
    if n.endswith("_m") or n.endswith("(m)") or "_m_" in n or n.endswith(" m") or \
            "altitude" in n or "elevation" in n:
        return 0
    return None


def table_html(df, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame as a plain HTML table (numbers formatted by `column_digits`, index
    kept if named), in a box that scrolls sideways rather than run off the page."""
    import pandas as pd

    keep_index = df.index.name is not None or any(n is not None for n in (df.index.names or []))

    def default(v) -> str:
        return (f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1
                else float_format.format(v))

    formatters = {}
    for col in df.columns:
        digits = column_digits(col)
        if digits is not None and pd.api.types.is_float_dtype(df[col]):
            formatters[col] = (lambda v, d=digits: "–" if pd.isna(v) else f"{v:.{d}f}")
    text = df.to_html(classes="tbl", border=0, index=keep_index, na_rep="–",
                      float_format=default, formatters=formatters or None)
    return f'<div class="tblwrap">{text}</div>'


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1150px;color:#1d2733;line-height:1.45;padding:0 1em}
h1{border-bottom:3px solid #4a7fb5;padding-bottom:.3em}
h2{margin-top:2em;border-bottom:1px solid #ccd;padding-bottom:.2em}
.tblwrap{max-width:100%;overflow-x:auto;margin:.8em 0}
table.tbl{border-collapse:collapse;font-size:.8em}
table.tbl td,table.tbl th{border:1px solid #ccd;padding:.2em .45em;text-align:right}
table.tbl td{white-space:nowrap}
table.tbl th{background:#eef2f7;max-width:9em;white-space:normal;word-break:normal}
figure{margin:1em 1em 1em 0;display:inline-table;vertical-align:top}
figure img{max-width:100%;border:1px solid #dde}
figcaption{display:table-caption;caption-side:bottom}
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
        "document.body.setAttribute('data-height',document.documentElement.scrollHeight);"
        "var w=0,t=document.querySelectorAll('.tblwrap');for(var j=0;j<t.length;j++)"
        "{if(t[j].scrollWidth>t[j].clientWidth+1){w++;t[j].setAttribute('data-wide',t[j].scrollWidth+'/'+t[j].clientWidth);}}"
        "document.body.setAttribute('data-wide-tables',w);"
        "document.body.setAttribute('data-broken-images',b);});</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def json_block(obj) -> str:
    return f"<pre>{html.escape(json.dumps(obj, indent=2, default=str))}</pre>"

