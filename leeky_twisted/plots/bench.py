"""``leekyraft bench --plot FILE``: latency over time above a latency histogram."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from leeky_twisted.checker.history import Outcome
from leeky_twisted.plots.figures import OUTCOME_COLOR, new_figure, save

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from leeky_twisted.ops.bench import BenchResult

__all__ = ["PERCENTILES", "bench_figure", "write_bench_plot"]

#: The percentiles marked on both panels.
PERCENTILES = (50, 99)


def bench_figure(result: BenchResult) -> Figure:
    """Return a two-panel figure of one run.

    Top: each operation's latency (ms) at its start time (s), successful ones
    and failed ones (gid ``ok`` / ``failed``), with the p50 and p99 as dashed
    lines. Bottom: the histogram of the successful operations' latencies. With a
    long tail (max over 20 times min) both latency axes are logarithmic.
    """
    fig = new_figure(9, 6.5)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 2))
    ms = [x * 1000 for x in result.latencies]
    top.scatter(
        result.starts,
        ms,
        s=6,
        alpha=0.6,
        color=OUTCOME_COLOR[Outcome.OK],
        label=f"ok ({len(ms)})",
        gid="ok",
        linewidths=0,
    )
    failed_at = [start for start, _ in result.failures]
    failed_ms = [seconds * 1000 for _, seconds in result.failures]
    top.scatter(
        failed_at,
        failed_ms,
        s=18,
        marker="x",
        color=OUTCOME_COLOR[Outcome.FAIL],
        label=f"failed ({len(failed_ms)})",
        gid="failed",
    )
    for p, style in zip(PERCENTILES, ("--", ":"), strict=True):
        value = result.percentile(p) * 1000
        top.axhline(value, color="0.3", linestyle=style, linewidth=1, label=f"p{p} {value:.2f} ms")
        bottom.axvline(value, color="0.3", linestyle=style, linewidth=1, label=f"p{p}")
    top.set_xlabel("time since the start (s)")
    top.set_ylabel("latency (ms)")
    bins: int | list[float] = 60
    if ms and max(ms) > 20 * max(min(ms), 1e-3):  # a long tail: log scales show it
        top.set_yscale("log")
        low, high = math.log10(max(min(ms), 1e-3)), math.log10(max(ms))
        bins = [10 ** (low + (high - low) * i / 60) for i in range(61)]
        bottom.set_xscale("log")
    top.legend(loc="upper right", fontsize="small")
    top.grid(alpha=0.3)
    bottom.hist(ms, bins=bins, color=OUTCOME_COLOR[Outcome.OK], alpha=0.85)
    bottom.set_xlabel("latency (ms)")
    bottom.set_ylabel("operations")
    bottom.legend(loc="upper right", fontsize="small")
    bottom.grid(alpha=0.3)
    rate = result.ops / result.seconds if result.seconds else 0.0
    fig.suptitle(
        f"leekyraft bench: {result.workload}, {result.clients} clients, {result.ops} ops "
        f"({result.errors} errors), {rate:,.0f} ops/s"
    )
    return fig


def write_bench_plot(result: BenchResult, path: str | Path) -> Path:
    """Draw :func:`bench_figure` into ``path`` (``.png`` or ``.svg``) and return it."""
    return save(bench_figure(result), path)
