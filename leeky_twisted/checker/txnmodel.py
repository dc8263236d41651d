"""The sequential model of a transaction over several keys, for the checker.

A txn operation (:attr:`~leeky_twisted.checker.history.OpKind.TXN`) carries
the JSON document the node takes (``{"compare": [...], "success": [...],
"failure": [...]}``, see :mod:`leeky_twisted.api.coord`) and, when its outcome
is known, the JSON text of what it returned, reduced to what the model can
tell::

    {"succeeded": true, "responses": [null, true, [["k1", "v1"]]]}

one response per operation of the branch taken: null for a put, whether the
key existed for a delete, the ``[key, value]`` pairs of a range (sorted by key).

The model's state is each key's value and version (0: absent); a put bumps the
version, a delete makes the key absent. Compares may test ``value`` and
``version`` with any operator, and ``create``/``mod`` revisions only against 0
(whether the key exists): a history split by key has no global revision
counter, so any other revision compare is refused with ValueError.

This module is pure: no clock, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leeky_twisted.checker.history import Operation, OpKind, Outcome

__all__ = [
    "State",
    "TxnSpec",
    "group_step",
    "parse_txn",
    "txn_keys",
    "txn_result",
]

#: A key's value (None: absent) and version (0: absent).
Cell = tuple[str | None, int]
#: The state of a group of keys: one cell per key, in the group's key order.
State = tuple[Cell, ...]

_ABSENT: Cell = (None, 0)
_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


@dataclass(frozen=True)
class Compare:
    """One compare of a transaction."""

    key: str
    target: str
    op: str
    value: Any


@dataclass(frozen=True)
class TxnOp:
    """A put, delete or range of a branch; a range covers [start, end) (end None: no end)."""

    kind: str
    key: str = ""
    value: str | None = None
    start: str = ""
    end: str | None = None


@dataclass(frozen=True)
class TxnSpec:
    """A parsed transaction document."""

    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...]

    def point_keys(self) -> set[str]:
        """Return the keys named by a compare, a put or a delete."""
        keys = {c.key for c in self.compares}
        for op in self.success + self.failure:
            if op.kind != "range":
                keys.add(op.key)
        return keys

    def ranges(self) -> list[tuple[str, str | None]]:
        """Return the [start, end) of each range operation."""
        return [(op.start, op.end) for op in self.success + self.failure if op.kind == "range"]


def _range(op: Mapping[str, Any]) -> TxnOp:
    if op.get("key") is not None:
        key = str(op["key"])
        return TxnOp("range", start=key, end=key + "\0")
    if op.get("prefix") is not None:
        prefix = str(op["prefix"])
        return TxnOp("range", start=prefix, end=_prefix_end(prefix))
    return TxnOp("range", start=str(op.get("start", "")), end=op.get("end"))


def _prefix_end(prefix: str) -> str | None:
    """Return the first string after every string that starts with ``prefix``."""
    while prefix and prefix[-1] == "\U0010ffff":
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


def _op(op: Any) -> TxnOp:
    if not isinstance(op, Mapping):
        raise ValueError(f"a txn operation is an object, not {op!r:.60}")
    kind = op.get("type")
    if kind == "put":
        return TxnOp("put", key=str(op["key"]), value=str(op["value"]))
    if kind == "delete":
        return TxnOp("delete", key=str(op["key"]))
    if kind == "range":
        if op.get("limit") or op.get("keys_only") or op.get("count_only"):
            raise ValueError("the checker models ranges without limit, keys_only or count_only")
        return _range(op)
    raise ValueError(f"unknown txn operation type {kind!r:.40}")


def _compare(item: Any) -> Compare:
    if not isinstance(item, Mapping):
        raise ValueError(f"a compare is an object, not {item!r:.60}")
    target, op, value = item.get("target"), item.get("op"), item.get("value")
    if op not in _OPS:
        raise ValueError(f"unknown compare operator {op!r:.10}")
    if target in ("create", "mod") and value != 0:
        raise ValueError("the checker models revision compares only against 0 (absent)")
    if target not in ("value", "version", "create", "mod"):
        raise ValueError(f"unknown compare target {target!r:.20}")
    return Compare(str(item["key"]), str(target), str(op), value)


def parse_txn(text: str) -> TxnSpec:
    """Parse an operation's ``txn`` document; ValueError when the model cannot check it."""
    try:
        doc = json.loads(text)
        return TxnSpec(
            tuple(_compare(c) for c in doc.get("compare") or ()),
            tuple(_op(o) for o in doc.get("success") or ()),
            tuple(_op(o) for o in doc.get("failure") or ()),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"txn the checker cannot model: {e}") from None


def txn_result(succeeded: bool, responses: Sequence[Any]) -> str:
    """Return the ``result`` text of a txn from the node's answer (ranges reduced to pairs)."""
    out: list[Any] = []
    for r in responses:
        if isinstance(r, Mapping):
            out.append([[kv["key"], kv.get("value")] for kv in r.get("kvs", ())])
        else:
            out.append(r)
    return json.dumps({"succeeded": succeeded, "responses": out}, separators=(",", ":"))


def txn_keys(spec: TxnSpec, history_keys: Iterable[str]) -> set[str]:
    """Return every key ``spec`` touches: its point keys and the history's keys in its ranges."""
    keys = spec.point_keys()
    for start, end in spec.ranges():
        keys |= {k for k in history_keys if k >= start and (end is None or k < end)}
    return keys


def _holds(c: Compare, cell: Cell) -> bool:
    value, version = cell
    if c.target == "value":
        return value is not None and _OPS[c.op](value, c.value)
    if c.target == "version":
        return _OPS[c.op](version, c.value)
    # create/mod against 0: a present key has a positive revision
    return _OPS[c.op](0 if value is None else 1, 0)


def group_step(
    keys: Sequence[str],
    index: Mapping[str, int],
    state: State,
    op: Operation,
    spec: TxnSpec | None,
    answer: Any,
) -> tuple[bool, State]:
    """Apply ``op`` to the group's ``state``; return whether its result is allowed and the
    state after it. ``spec``/``answer`` are a txn's parsed document and result (None else).
    An operation of unknown outcome allows any result."""
    known = op.outcome is Outcome.OK
    if op.kind is not OpKind.TXN:
        i = index[op.key]
        value, version = state[i]
        if op.kind is OpKind.GET:
            return (not known or op.result == value), state
        if op.kind is OpKind.PUT:
            return True, _set(state, i, (op.value, version + 1))
        swaps = value == op.expected
        if known and op.result != swaps:
            return False, state
        return True, (_set(state, i, (op.new, version + 1)) if swaps else state)
    assert spec is not None
    succeeded = all(_holds(c, state[index[c.key]]) for c in spec.compares)
    if known and answer["succeeded"] != succeeded:
        return False, state
    cells = list(state)
    responses: list[Any] = []
    for item in spec.success if succeeded else spec.failure:
        if item.kind == "put":
            i = index[item.key]
            cells[i] = (item.value, cells[i][1] + 1)
            responses.append(None)
        elif item.kind == "delete":
            i = index[item.key]
            responses.append(cells[i][0] is not None)
            cells[i] = _ABSENT
        else:
            responses.append(
                [
                    [k, cells[index[k]][0]]
                    for k in keys
                    if cells[index[k]][0] is not None
                    and k >= item.start
                    and (item.end is None or k < item.end)
                ]
            )
    if known and answer["responses"] != responses:
        return False, state
    return True, tuple(cells)


def _set(state: State, i: int, cell: Cell) -> State:
    return (*state[:i], cell, *state[i + 1 :])
