"""The checker on transactions and multi-key histories: hand-made histories."""

from __future__ import annotations

import json

import pytest

from leeky_twisted.checker.history import (
    Operation,
    OpKind,
    Outcome,
    dumps_history,
    loads_history,
)
from leeky_twisted.checker.linearizability import Verdict, check_group, check_history
from leeky_twisted.checker.txnmodel import parse_txn, txn_result

LIN = Verdict.LINEARIZABLE
NOT = Verdict.NOT_LINEARIZABLE


def reg(
    index: int, kind: str, key: str, start: float, end: float | None, **kw: object
) -> Operation:
    outcome = Outcome.UNKNOWN if end is None else Outcome.OK
    return Operation(index, index, key, OpKind(kind), start, end, outcome, **kw)  # type: ignore[arg-type]


def txn(
    index: int,
    start: float,
    end: float | None,
    compare: list[dict[str, object]] = (),  # type: ignore[assignment]
    success: list[dict[str, object]] = (),  # type: ignore[assignment]
    failure: list[dict[str, object]] = (),  # type: ignore[assignment]
    succeeded: bool = True,
    responses: list[object] | None = None,
) -> Operation:
    doc = {"compare": list(compare), "success": list(success), "failure": list(failure)}
    keys = sorted(
        {c["key"] for c in compare} | {o.get("key") or o["prefix"] for o in [*success, *failure]}
    )
    outcome = Outcome.UNKNOWN if end is None else Outcome.OK
    branch = success if succeeded else failure
    result = None
    if outcome is Outcome.OK:
        result = txn_result(succeeded, responses if responses is not None else [None] * len(branch))
    return Operation(
        index, index, str(keys[0]), OpKind.TXN, start, end, outcome,
        result=result, txn=json.dumps(doc),
    )  # fmt: skip


def put(key: str, value: str) -> dict[str, object]:
    return {"type": "put", "key": key, "value": value}


def absent(key: str) -> dict[str, object]:
    return {"key": key, "target": "version", "op": "==", "value": 0}


def test_atomic_two_key_txn_then_reads_is_linearizable():
    """A txn putting two keys, then reads of both new values: linearizable."""
    h = [
        txn(0, 0, 1, [absent("a")], [put("a", "1"), put("b", "1")]),
        reg(1, "get", "a", 2, 3, result="1"),
        reg(2, "get", "b", 2, 3, result="1"),
    ]
    result = check_history(h)
    assert result.verdict is LIN
    assert [k.key for k in result.keys] == ["a+b"]


def test_half_applied_txn_is_caught():
    """One key shows the txn's write, the other, read later, does not: not atomic."""
    h = [
        txn(0, 0, 1, [], [put("a", "1"), put("b", "1")]),
        reg(1, "get", "a", 2, 3, result="1"),
        reg(2, "get", "b", 4, 5, result=None),
    ]
    assert check_history(h).verdict is NOT


def test_half_applied_concurrent_txn_is_caught():
    """Reads concurrent with an unknown txn: seeing a's new value then b's old one is not
    atomic (each read alone would be fine)."""
    h = [
        txn(0, 0, None, [], [put("a", "1"), put("b", "1")]),
        reg(1, "get", "a", 1, 2, result="1"),
        reg(2, "get", "b", 3, 4, result=None),
    ]
    assert check_history(h).verdict is NOT


def test_txn_result_contradicting_a_later_read_is_caught():
    """A txn says its compare failed (a absent?) though a completed put set a before it."""
    h = [
        reg(0, "put", "a", 0, 1, value="x"),
        txn(1, 2, 3, [absent("a")], [put("b", "won")], [], succeeded=True),
        reg(2, "get", "b", 4, 5, result="won"),
    ]
    assert check_history(h).verdict is NOT


def test_txn_success_contradicted_by_later_read():
    """A txn acknowledged as having put b, then b reads absent: its effect is lost."""
    h = [
        txn(0, 0, 1, [absent("a")], [put("b", "won")]),
        reg(1, "get", "b", 2, 3, result=None),
    ]
    assert check_history(h).verdict is NOT


def test_failure_branch_and_range_response_checked():
    """A failed compare runs the failure branch; its range answer must hold the values."""
    good = [
        reg(0, "put", "k/1", 0, 1, value="v1"),
        txn(
            1, 2, 3, [absent("k/1")], [put("k/1", "mine")], [{"type": "range", "prefix": "k/"}],
            succeeded=False, responses=[[["k/1", "v1"]]],
        ),
    ]  # fmt: skip
    assert check_history(good).verdict is LIN
    bad = [
        good[0],
        txn(
            1, 2, 3, [absent("k/1")], [put("k/1", "mine")], [{"type": "range", "prefix": "k/"}],
            succeeded=False, responses=[[]],
        ),
    ]  # fmt: skip
    assert check_history(bad).verdict is NOT


def test_range_couples_history_keys_in_it():
    """A prefix range merges the keys under it into the txn's group."""
    h = [
        reg(0, "put", "k/1", 0, 1, value="v1"),
        reg(1, "put", "k/2", 0, 1, value="v2"),
        reg(2, "put", "other", 0, 1, value="o"),
        txn(3, 2, 3, [], [{"type": "range", "prefix": "k/"}],
            responses=[[["k/1", "v1"], ["k/2", "v2"]]]),
    ]  # fmt: skip
    result = check_history(h)
    assert result.verdict is LIN
    assert sorted(k.key for k in result.keys) == ["k/1+k/2", "other"]


def test_concurrent_txns_one_wins():
    """Two concurrent create-if-absent txns: exactly one may succeed; both succeeding is not."""
    one = [
        txn(0, 0, 2, [absent("lock")], [put("lock", "a")], [], succeeded=True),
        txn(1, 1, 3, [absent("lock")], [put("lock", "b")], [], succeeded=False, responses=[]),
        reg(2, "get", "lock", 4, 5, result="a"),
    ]
    assert check_history(one).verdict is LIN
    both = [
        txn(0, 0, 2, [absent("lock")], [put("lock", "a")], [], succeeded=True),
        txn(1, 1, 3, [absent("lock")], [put("lock", "b")], [], succeeded=True),
    ]
    assert check_history(both).verdict is NOT


def test_delete_and_version_compare():
    """Versions count puts since creation; a delete resets; delete answers 'existed'."""
    h = [
        reg(0, "put", "a", 0, 1, value="1"),
        reg(1, "put", "a", 2, 3, value="2"),
        txn(2, 4, 5, [{"key": "a", "target": "version", "op": "==", "value": 2}],
            [{"type": "delete", "key": "a"}], responses=[True]),
        txn(3, 6, 7, [{"key": "a", "target": "version", "op": "==", "value": 2}],
            [put("a", "x")], [{"type": "delete", "key": "a"}], succeeded=False, responses=[False]),
    ]  # fmt: skip
    assert check_history(h).verdict is LIN


def test_unknown_txn_may_not_have_happened():
    """A txn of unknown outcome whose write nobody sees is fine."""
    h = [
        txn(0, 0, None, [], [put("a", "1"), put("b", "1")]),
        reg(1, "get", "a", 1, 2, result=None),
        reg(2, "get", "b", 3, 4, result=None),
    ]
    assert check_history(h).verdict is LIN


def test_single_key_histories_keep_the_single_key_search():
    """Without txns, results are per key, as before."""
    h = [reg(0, "put", "a", 0, 1, value="1"), reg(1, "get", "b", 0, 1, result=None)]
    assert [k.key for k in check_history(h).keys] == ["a", "b"]


def test_violation_renders_group_state():
    h = [
        txn(0, 0, 1, [], [put("a", "1"), put("b", "1")]),
        reg(1, "get", "b", 2, 3, result=None),
    ]
    result = check_history(h)
    text = result.render()
    assert "a+b" in text and "txn(" in text


def test_revision_compare_other_than_zero_is_refused():
    with pytest.raises(ValueError, match="revision"):
        parse_txn(json.dumps({"compare": [{"key": "a", "target": "mod", "op": "==", "value": 5}]}))


def test_txn_history_round_trips_json_lines():
    h = [txn(0, 0, 1, [absent("a")], [put("a", "1")])]
    assert loads_history(dumps_history(h)) == h


def test_check_group_direct():
    h = [reg(0, "put", "a", 0, 1, value="1"), reg(1, "get", "a", 2, 3, result="1")]
    assert check_group(["a"], h).verdict is LIN
