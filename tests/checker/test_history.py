"""Operations of a history: validation, JSON lines, summaries."""

from __future__ import annotations

import pytest
from checker_gen import generate, op

from leeky_twisted.checker.history import (
    Outcome,
    dumps_history,
    loads_history,
    operation_from_dict,
    operation_to_dict,
    summarize,
)


def test_history_survives_a_round_trip_through_json_lines():
    """dumps_history and loads_history are inverses, None values and unknowns included."""
    history = generate(5, ops=80, unknown=0.2, fail=0.1)
    history.append(op(999, "cas", 1.0, 2.0, expected=None, new="x", result=True))
    assert loads_history(dumps_history(history)) == history


def test_unknown_operations_have_no_completion_and_known_ones_do():
    """complete is None exactly when the outcome is unknown."""
    with pytest.raises(ValueError, match="complete must be None"):
        op(0, "put", 0, None, value="a", outcome="ok")
    with pytest.raises(ValueError, match="complete must be None"):
        op(0, "put", 0, 1, value="a", outcome="unknown")


def test_malformed_operations_are_refused():
    """Inverted intervals, a put without value, an ok cas without a bool are errors."""
    with pytest.raises(ValueError, match="before it is invoked"):
        op(0, "get", 2, 1, result=None)
    with pytest.raises(ValueError, match="needs a value"):
        op(0, "put", 0, 1)
    with pytest.raises(ValueError, match="bool result"):
        op(0, "cas", 0, 1, expected="a", new="b", result="yes")
    with pytest.raises(ValueError, match="malformed"):
        operation_from_dict({"index": 1})


def test_give_up_time_is_kept_and_only_for_unknown_operations():
    """gave_up (when the client stopped waiting) survives JSON lines; only unknowns have one."""
    unknown = op(0, "put", 1.0, None, value="a", outcome="unknown")
    timed_out = operation_from_dict({**operation_to_dict(unknown), "gave_up": 5.5})
    assert timed_out.gave_up == 5.5
    assert loads_history(dumps_history([timed_out])) == [timed_out]
    assert "gave_up" not in operation_to_dict(unknown)
    with pytest.raises(ValueError, match="give-up time"):
        operation_from_dict({**operation_to_dict(op(1, "get", 0, 1, result=None)), "gave_up": 2})
    assert timed_out.with_outcome(Outcome.OK, 2.0).gave_up is None


def test_summary_counts_outcomes_and_kinds():
    """summarize counts operations by outcome and by kind."""
    history = [
        op(0, "put", 0, 1, value="a"),
        op(1, "get", 1, None),
        op(2, "cas", 2, 3, expected="a", new="b", outcome="fail"),
    ]
    summary = summarize(history)
    assert summary["operations"] == 3
    assert (summary["ok"], summary["fail"], summary["unknown"]) == (1, 1, 1)
    assert summary["by_kind"] == {"cas:fail": 1, "get:unknown": 1, "put:ok": 1}
    assert summary["keys"] == ["k"]


def test_describe_shows_call_result_and_interval():
    """An operation's one-line description names its call, result and interval."""
    assert op(3, "get", 1, 2, result="a", client=4).describe() == (
        "#3 c4 get(k) -> 'a' [1.000, 2.000]"
    )
    assert "unknown [0.500, inf)" in op(4, "put", 0.5, None, value="v").describe()
    assert (
        op(5, "put", 0, 1, value="v")
        .with_outcome(Outcome.FAIL, 1)
        .describe()
        .endswith("failed [0.000, 1.000]")
    )
