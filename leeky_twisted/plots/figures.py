"""A matplotlib figure on the Agg canvas (no display, no pyplot), colours and saving."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leeky_twisted.checker.history import Outcome
from leeky_twisted.plots import require_matplotlib

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "OUTCOME_COLOR", "OUTCOME_LABEL", "new_figure", "plot_format", "save"]

#: File formats a plot can be written in, by file name suffix.
FORMATS = {".png": "png", ".svg": "svg"}

OUTCOME_COLOR = {Outcome.OK: "#2a9d8f", Outcome.FAIL: "#e63946", Outcome.UNKNOWN: "#7b2cbf"}
OUTCOME_LABEL = {Outcome.OK: "ok", Outcome.FAIL: "failed", Outcome.UNKNOWN: "unknown"}
FAULT_COLOR = "#f4a261"


def plot_format(path: str | Path) -> str:
    """Return ``png`` or ``svg`` from ``path``'s suffix; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"a plot file must end in .png or .svg, not {str(path)!r}")
    return FORMATS[suffix]


def new_figure(width: float, height: float) -> Figure:
    """Return an empty figure of ``width`` x ``height`` inches, drawn by Agg.

    Raises :class:`~leeky_twisted.plots.PlotsUnavailable` without matplotlib.
    A :class:`~matplotlib.figure.Figure` made directly (not through pyplot)
    needs no display and keeps no global state.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (PNG or SVG by its suffix) and return the path."""
    out = Path(path)
    fig.savefig(out, format=plot_format(out), dpi=110)
    return out
