"""The report folder of ``leekyraft chaos`` and ``leekyraft verify``.

:func:`write_report` draws ``latency.png``, ``throughput.png`` and, for each
key that is not linearizable, ``violation-N.png``, then writes
``index.html`` naming them all with the checker's verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leeky_twisted.checker.history import Operation
from leeky_twisted.checker.linearizability import CheckResult
from leeky_twisted.plots.figures import save
from leeky_twisted.plots.history import (
    FaultWindow,
    latency_figure,
    offending_operations,
    throughput_figure,
    violation_figure,
)
from leeky_twisted.plots.page import Plot, render_index

__all__ = ["write_report"]

#: At most this many violations get a timeline of their own.
MAX_VIOLATION_PLOTS = 5


def write_report(
    folder: str | Path,
    ops: Sequence[Operation],
    result: CheckResult,
    faults: Sequence[Mapping[str, Any]],
    *,
    title: str,
    passed: bool,
    text: str,
) -> Path:
    """Write the plots and ``index.html`` into ``folder`` (made if absent); return the page.

    :param faults: the nemesis's fault records (``ChaosReport.faults``), on the
        history's clock.
    :param passed: whether the run passed (the verdict's colour).
    :param text: the text report, shown at the bottom of the page.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    windows = FaultWindow.from_dicts(faults)
    plots = [
        Plot(
            save(latency_figure(ops, windows), out / "latency.png").name,
            "Latency of every operation over time, by outcome; shaded: fault windows",
        ),
        Plot(
            save(throughput_figure(ops, windows), out / "throughput.png").name,
            "Operations per second over time, by outcome; shaded: fault windows",
        ),
    ]
    for i, v in enumerate(result.violations[:MAX_VIOLATION_PLOTS], start=1):
        name = save(violation_figure(v), out / f"violation-{i}.png").name
        shown = len(offending_operations(v))
        plots.append(
            Plot(
                name,
                f"Not linearizable: key {v.key!r}, {shown} operations around #{v.op.index} "
                "(outlined), one lane per client",
            )
        )
    page = out / "index.html"
    page.write_text(
        render_index(title, result.verdict.value, passed, plots, windows, text), encoding="utf-8"
    )
    return page
