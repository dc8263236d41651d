"""The report folder's ``index.html``: the verdict, the plots, the faults, the text report.

Plain HTML with inline CSS, nothing fetched: it opens from the disk offline.
This module does not need matplotlib.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from leeky_twisted.plots.history import FaultWindow

__all__ = ["Plot", "render_index"]


@dataclass(frozen=True)
class Plot:
    """One picture of the report: its file name (in the folder) and caption."""

    file: str
    caption: str


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; }
.verdict { font-size: 1.4em; padding: .4em .8em; border-radius: .3em; display: inline-block; }
.pass { background: #d8f3dc; } .fail { background: #ffccd5; }
figure { margin: 1.5em 0; } img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2em .5em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .85em; }
"""


def render_index(
    title: str,
    verdict: str,
    passed: bool,
    plots: Sequence[Plot],
    faults: Sequence[FaultWindow],
    text: str,
) -> str:
    """Return the page: ``title``, the checker's ``verdict`` (green when ``passed``),
    every plot with its caption, a table of the faults and the text report."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="verdict {"pass" if passed else "fail"}">verdict: <b>{e(verdict)}</b>'
        f" ({'PASS' if passed else 'FAIL'})</p>",
    ]
    for plot in plots:
        parts.append(
            f'<figure><img src="{e(plot.file)}" alt="{e(plot.caption)}">'
            f'<figcaption>{e(plot.caption)} (<a href="{e(plot.file)}">{e(plot.file)}</a>)'
            "</figcaption></figure>"
        )
    parts.append(f"<h2>Faults ({len(faults)})</h2>")
    if faults:
        parts.append("<table><tr><th>fault</th><th>from (s)</th><th>to (s)</th><th>what</th></tr>")
        for f in faults:
            end = "never healed" if f.end is None else f"{f.end:.2f}"
            parts.append(
                f"<tr><td>{e(f.label)}</td><td>{f.start:.2f}</td><td>{end}</td>"
                f"<td>{e(f.detail)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append(f"<h2>Report</h2><pre>{e(text)}</pre></body></html>")
    return "\n".join(parts) + "\n"
