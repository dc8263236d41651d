"""The figures of a recorded history: latency, throughput, fault windows, a violation."""

from __future__ import annotations

from pathlib import Path

import pytest
from figure_checks import assert_png, by_gid, one
from synthetic_history import FAILED, FAULTS, UNKNOWN, bad_history, history

from leeky_twisted.checker import Outcome, check_history
from leeky_twisted.plots.figures import save
from leeky_twisted.plots.history import (
    FaultWindow,
    latency_figure,
    offending_operations,
    throughput_bin,
    throughput_figure,
    violation_figure,
)

pytest.importorskip("matplotlib")  # the plots extra (CI installs it with test)

WINDOWS = FaultWindow.from_dicts(FAULTS)


def _spans(fig) -> list[tuple[float, float]]:
    spans = [one(fig, f"fault-{f.number}") for f in WINDOWS]
    return [(s.get_x(), s.get_x() + s.get_width()) for s in spans]


def test_latency_figure_has_one_series_per_outcome_at_each_invoke():
    """Three series (ok, failed, unknown) hold exactly their operations, at invoke x."""
    ops = history()
    fig = latency_figure(ops, WINDOWS)
    expected = {
        "ok": [op for op in ops if op.outcome is Outcome.OK],
        "failed": [op for op in ops if op.index in FAILED],
        "unknown": [op for op in ops if op.index in UNKNOWN],
    }
    assert [len(v) for v in expected.values()] == [24, 4, 2]
    for gid, mine in expected.items():
        series = one(fig, gid)
        xs = [float(x) for x, _ in series.get_offsets()]
        assert xs == [op.invoke for op in mine]
        assert series.get_label() == f"{gid} ({len(mine)})"
    ok_ms = [round(float(y)) for _, y in one(fig, "ok").get_offsets()]
    assert set(ok_ms) == {50}
    assert [round(float(y)) for _, y in one(fig, "failed").get_offsets()] == [500] * 4
    put, get = (ops[i] for i in UNKNOWN)
    ys = [float(y) for _, y in one(fig, "unknown").get_offsets()]
    assert ys[0] == pytest.approx(4500)  # the unknown put: until its client gave up
    assert ys[1] == pytest.approx(4500 * 1.15)  # the unknown get: along the top
    assert (put.gave_up, get.gave_up) == (put.invoke + 4.5, None)
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("time (s)", "latency (ms)")


def test_fault_windows_are_shaded_exactly_and_labelled():
    """Each fault is one span from its start to its end, labelled with number and nemesis."""
    for fig in (latency_figure(history(), WINDOWS), throughput_figure(history(), WINDOWS)):
        assert _spans(fig) == [(2.0, 3.5), (6.0, 7.25)]
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert {"F1 partition", "F2 kill"} <= texts


def test_a_fault_that_never_healed_is_shaded_to_the_end_of_the_run():
    """A fault without an end (run cut short) runs to the last recorded instant."""
    cut = FaultWindow.from_dicts([{"nemesis": "pause", "detail": "x", "start": 5.0, "end": None}])
    span = one(latency_figure(history(), cut), "fault-1")
    last = max(op.gave_up or op.complete or op.invoke for op in history())
    assert (span.get_x(), span.get_x() + span.get_width()) == (5.0, last)


def test_a_fault_is_labelled_with_the_kind_its_detail_names():
    """The mixed nemesis records itself; the label shows the fault it chose."""
    faults = FaultWindow.from_dicts(
        [
            {"nemesis": "mixed", "detail": "kill: kill -9 majority ['1', '3']", "start": 1},
            {"nemesis": "pause", "detail": "SIGSTOP node 2", "start": 2},
            {"nemesis": "netem", "detail": "", "start": 3},
        ]
    )
    assert [f.label for f in faults] == ["F1 kill", "F2 pause", "F3 netem"]


def test_throughput_counts_every_operation_once_per_outcome():
    """The step lines integrate to the operations of each outcome; the bins are round."""
    ops = history()
    fig = throughput_figure(ops, WINDOWS)
    width = throughput_bin(max(op.gave_up or op.complete or op.invoke for op in ops))
    for gid, count in (("ok", 24), ("failed", 4), ("unknown", 2)):
        data = one(fig, gid).get_data()
        values, edges = data.values, data.edges
        assert round(sum(values) * width) == count
        assert edges[1] - edges[0] == pytest.approx(width)
    assert fig.axes[0].get_ylabel() == f"operations/s ({width:g} s bins)"
    assert [throughput_bin(d) for d in (5, 60, 600, 10_000)] == [0.1, 0.5, 5.0, 60.0]


def test_violation_timeline_draws_the_named_slice_one_lane_per_client():
    """One bar per operation of the slice, the culprit outlined, one lane per client."""
    result = check_history(bad_history())
    (violation,) = result.violations
    ops = offending_operations(violation)
    assert violation.op in ops and set(violation.linearized) <= set(ops)
    assert len({op.index for op in ops}) == len(ops)
    assert [op.invoke for op in ops] == sorted(op.invoke for op in ops)
    fig = violation_figure(violation)
    culprit = one(fig, "culprit")
    assert culprit.get_linewidth()[0] == 2.5
    others = [g for op in ops if op is not violation.op for g in by_gid(fig, f"op-{op.index}")]
    assert len(others) == len(ops) - 1
    (ax,) = fig.axes
    lanes = [t.get_text() for t in ax.get_yticklabels()]
    assert lanes == [f"client {c}" for c in sorted({op.client for op in ops})]
    assert "client 4" in lanes  # the reader of the value nobody wrote
    assert f"#{violation.op.index}" in ax.get_title() and "'k'" in ax.get_title()


def test_a_figure_saves_as_a_real_png(tmp_path: Path):
    """save writes a PNG of non-trivial size, and refuses other suffixes."""
    assert_png(save(latency_figure(history(), WINDOWS), tmp_path / "latency.png"))
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        save(latency_figure(history(), WINDOWS), tmp_path / "latency.pdf")
