"""Figures of a recorded history: latency by outcome, throughput, a violation's timeline.

Times are the history's own (seconds on the run's clock); fault windows are
the nemesis's ``start``/``end`` on the same clock. An unknown operation has
no latency: it is drawn up to the moment its client gave up (``gave_up``),
or, when that is not recorded, as a triangle along the top of the panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leeky_twisted.checker.history import Operation, OpKind, Outcome
from leeky_twisted.checker.linearizability import Violation
from leeky_twisted.plots.figures import FAULT_COLOR, OUTCOME_COLOR, OUTCOME_LABEL, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FaultWindow",
    "latency_figure",
    "offending_operations",
    "shade_faults",
    "throughput_bin",
    "throughput_figure",
    "violation_figure",
]

_BINS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class FaultWindow:
    """One fault as drawn: a number, the nemesis, what it did, and when."""

    number: int
    nemesis: str
    detail: str
    start: float
    end: float | None

    @classmethod
    def from_dicts(cls, faults: Sequence[Mapping[str, Any]]) -> list[FaultWindow]:
        """Number the nemesis's fault records (``ChaosReport.faults``) from 1."""
        return [
            cls(
                i,
                str(f.get("nemesis", "fault")),
                str(f.get("detail", "")),
                float(f["start"]),
                None if f.get("end") is None else float(f["end"]),
            )
            for i, f in enumerate(faults, start=1)
        ]

    @property
    def label(self) -> str:
        """Return the short label drawn on the plots, e.g. ``F2 partition``.

        The kind is the head of the detail (``kill: ...``) when it has one: the
        ``mixed`` nemesis records its own name, the detail the fault it chose.
        """
        head, sep, _ = self.detail.partition(":")
        kind = head.strip() if sep and head.strip() and " " not in head.strip() else self.nemesis
        return f"F{self.number} {kind}"


def _end(ops: Sequence[Operation], faults: Sequence[FaultWindow]) -> float:
    """Return the last instant anything in the history or the faults is known at."""
    times = [op.invoke for op in ops]
    times += [t for op in ops for t in (op.complete, op.gave_up) if t is not None]
    times += [t for f in faults for t in (f.start, f.end) if t is not None]
    return max(times, default=1.0)


def shade_faults(ax: Axes, faults: Sequence[FaultWindow], end: float) -> None:
    """Shade each fault window on ``ax`` (gid ``fault-N``) and label it near the top.

    A fault that never ended (a run cut short) is shaded up to ``end``.
    """
    for f in faults:
        stop = f.end if f.end is not None else end
        ax.axvspan(f.start, stop, color=FAULT_COLOR, alpha=0.25, gid=f"fault-{f.number}")
        ax.text(
            f.start,
            0.99 if f.number % 2 else 0.91,  # neighbours' labels do not overlap
            f.label,
            transform=ax.get_xaxis_transform(),
            va="top",
            ha="left",
            fontsize="x-small",
            bbox={"facecolor": "white", "edgecolor": FAULT_COLOR, "alpha": 0.8, "pad": 1.5},
        )


def _latency(op: Operation) -> float | None:
    if op.complete is not None:
        return op.complete - op.invoke
    if op.gave_up is not None:
        return op.gave_up - op.invoke
    return None


def latency_figure(ops: Sequence[Operation], faults: Sequence[FaultWindow]) -> Figure:
    """Return every operation's latency (ms) at its invoke time, one series per outcome.

    The three series (gids ``ok``, ``failed``, ``unknown``) are always there,
    empty or not, with their counts in the legend; faults are shaded.
    """
    fig = new_figure(11, 4.8)
    ax = fig.add_subplot()
    known = [lat for op in ops if (lat := _latency(op)) is not None]
    ceiling = max(known, default=1.0) * 1.15
    for outcome in Outcome:
        mine = [op for op in ops if op.outcome is outcome]
        xs = [op.invoke for op in mine]
        ys = [(lat if (lat := _latency(op)) is not None else ceiling) * 1000 for op in mine]
        ax.scatter(
            xs,
            ys,
            s=7 if outcome is Outcome.OK else 16,
            marker={"ok": "o", "fail": "x", "unknown": "^"}[outcome.value],
            color=OUTCOME_COLOR[outcome],
            alpha=0.6 if outcome is Outcome.OK else 0.9,
            linewidths=0 if outcome is Outcome.OK else 1,
            label=f"{OUTCOME_LABEL[outcome]} ({len(mine)})",
            gid=OUTCOME_LABEL[outcome],
        )
    shade_faults(ax, faults, _end(ops, faults))
    if known and max(known) > 20 * max(min(known), 1e-4):
        ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency of every operation, by outcome (shaded: faults)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def throughput_bin(duration: float) -> float:
    """Return a round bin width (s) giving at most about 120 bins over ``duration``."""
    return next((b for b in _BINS if duration / b <= 120), _BINS[-1])


def throughput_figure(ops: Sequence[Operation], faults: Sequence[FaultWindow]) -> Figure:
    """Return operations per second over time, one step line per outcome (gids as above).

    An operation counts when it completed (unknown ones: when the client gave
    up, else when invoked); faults are shaded.
    """
    fig = new_figure(11, 3.8)
    ax = fig.add_subplot()
    end = _end(ops, faults)
    width = throughput_bin(end)
    bins = max(1, math.ceil(end / width))
    edges = [i * width for i in range(bins + 1)]
    for outcome in Outcome:
        counts = [0.0] * bins
        for op in ops:
            if op.outcome is outcome:
                at = op.complete if op.complete is not None else (op.gave_up or op.invoke)
                counts[min(bins - 1, max(0, int(at / width)))] += 1 / width
        ax.stairs(
            counts,
            edges,
            color=OUTCOME_COLOR[outcome],
            linewidth=1.5,
            label=OUTCOME_LABEL[outcome],
            gid=OUTCOME_LABEL[outcome],
        )
    shade_faults(ax, faults, end)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"operations/s ({width:g} s bins)")
    ax.set_title("throughput by outcome (shaded: faults)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def offending_operations(violation: Violation) -> list[Operation]:
    """Return the slice of the key's history the checker names for a violation.

    The checker gives no minimal sub-history; this is the smallest slice it
    names: the operation no linearization gets past, the operations
    overlapping it, and the end of a longest partial linearization (the writes
    that set the register's possible values), each once, in invoke order.
    """
    ops = {op.index: op for op in (*violation.linearized, violation.op, *violation.concurrent)}
    return sorted(ops.values(), key=lambda op: (op.invoke, op.index))


def _short(op: Operation) -> str:
    if op.kind is OpKind.PUT:
        call = f"put {op.value}"
    elif op.kind is OpKind.GET:
        call = "get"
    elif op.kind is OpKind.TXN:
        call = "txn"
    else:
        call = f"cas {op.expected}→{op.new}"
    if op.outcome is Outcome.OK and op.kind is not OpKind.PUT:
        call += f" = {op.result}"
    where = f" @{op.node}" if op.node is not None else ""
    return f"#{op.index} {call}{where}"


def violation_figure(violation: Violation) -> Figure:
    """Return the violation's slice as a timeline, one lane per client.

    Each operation is a bar from invoke to completion coloured by outcome
    (gid ``op-INDEX``) in the lower half of its client's lane; an unknown one
    runs to the right edge, hatched, in the upper half (a client moves on
    while it may still take effect). The operation no linearization gets
    past is outlined (gid ``culprit``).
    """
    ops = offending_operations(violation)
    clients = sorted({op.client for op in ops})
    lane = {c: i for i, c in enumerate(clients)}
    known_end = max((op.complete for op in ops if op.complete is not None), default=0.0)
    first = min(op.invoke for op in ops)
    right = known_end + max(0.1 * (known_end - first), 1e-3)
    fig = new_figure(11, 1.4 + 0.55 * len(clients))
    ax = fig.add_subplot()
    crowded = 0.12 * (right - first)  # labels closer than this would overlap
    last_label: dict[int, tuple[float, bool]] = {}
    for op in ops:
        row = lane[op.client]
        stop = op.complete if op.complete is not None else right
        culprit = op.index == violation.op.index
        y = row - 0.4 if op.outcome is Outcome.UNKNOWN else row
        ax.broken_barh(
            [(op.invoke, max(stop - op.invoke, 1e-6))],
            (y, 0.36),
            facecolors=OUTCOME_COLOR[op.outcome],
            alpha=0.75,
            hatch="//" if op.outcome is Outcome.UNKNOWN else None,
            edgecolor="black" if culprit else "none",
            linewidth=2.5 if culprit else 0,
            gid="culprit" if culprit else f"op-{op.index}",
        )
        previous = last_label.get(row)
        shifted = previous is not None and op.invoke - previous[0] < crowded and not previous[1]
        last_label[row] = (op.invoke, shifted)
        ax.text(
            op.invoke,
            y + (0.5 if shifted else 0.18),  # a crowded label goes just below its bar
            f" {_short(op)}",
            va="center",
            ha="left",
            fontsize="x-small",
            fontweight="bold" if culprit else "normal",
            clip_on=True,
        )
    ax.set_yticks(range(len(clients)), [f"client {c}" for c in clients])
    ax.set_ylim(-0.55, len(clients) - 0.5)
    ax.set_xlim(first - 0.02 * (right - first), right)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    values = ", ".join(repr(v) for v in violation.possible_values)
    ax.set_title(
        f"key {violation.key!r}: no linearization gets past #{violation.op.index} "
        f"(outlined); the register could only hold {values}",
        fontsize="small",
    )
    ax.grid(axis="x", alpha=0.3)
    return fig
