"""Pictures of results: bench plots and the chaos/verify report folder.

Plotting needs matplotlib, an optional extra (``pip install 'leeky-twisted[plots]'``).
Nothing here imports it at module level, and the node never imports this
package: :func:`require_matplotlib` is the one place that checks for it, so a
command that was asked for plots can fail early with one clear line.

* :mod:`leeky_twisted.plots.figures`: a figure on the Agg canvas, colours, saving;
* :mod:`leeky_twisted.plots.bench`: ``leekyraft bench --plot``;
* :mod:`leeky_twisted.plots.history`: latency, throughput, fault windows, a violation;
* :mod:`leeky_twisted.plots.page`: the report's ``index.html`` (no matplotlib);
* :mod:`leeky_twisted.plots.report`: the report folder of ``chaos`` and ``verify``.
"""

from __future__ import annotations

import importlib

__all__ = ["MISSING", "PlotsUnavailable", "require_matplotlib"]

#: The one line a command prints when it was asked for plots without matplotlib.
MISSING = "plots need matplotlib: pip install 'leeky-twisted[plots]'"


class PlotsUnavailable(Exception):
    """Plots were asked for but matplotlib cannot be imported."""


def require_matplotlib() -> None:
    """Raise :class:`PlotsUnavailable` (with :data:`MISSING`) unless matplotlib imports."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        raise PlotsUnavailable(MISSING) from None
