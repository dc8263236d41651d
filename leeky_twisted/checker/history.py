"""Operations of a recorded client history, and their JSON-lines form.

A history is a list of :class:`Operation`: one per client request, with the
time it was invoked, the time it completed and what came of it. Times are
seconds on one monotonic clock; only their order matters.

Outcomes follow Jepsen's ``:ok`` / ``:fail`` / ``:info``:

* ``ok``: the request took effect, once, at some instant between its invoke and
  its completion, and returned ``result``.
* ``fail``: the request certainly did not take effect (it was refused before it
  reached the log). The checker ignores it.
* ``unknown``: nobody knows (a timeout, a lost connection). It may have taken
  effect at any instant after its invoke, or never; its completion is treated
  as +infinity and ``complete`` is None. ``gave_up`` says when the client
  stopped waiting (for plots; the checker ignores it).

This module is pure data: it does no I/O.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "OpKind",
    "Operation",
    "Outcome",
    "dumps_history",
    "loads_history",
    "operation_from_dict",
    "operation_to_dict",
    "summarize",
]


class OpKind(enum.StrEnum):
    """What a register operation does."""

    GET = "get"  #: read the key; ``result`` is the value or None (absent)
    PUT = "put"  #: set the key to ``value``
    CAS = "cas"  #: set the key to ``new`` if it holds ``expected`` (None: absent); ``result`` bool
    #: a transaction over several keys: ``txn`` is its JSON document, ``result``
    #: the JSON text of ``{"succeeded": bool, "responses": [...]}`` (see
    #: :mod:`leeky_twisted.checker.txnmodel`); ``key`` is one of its keys
    TXN = "txn"


class Outcome(enum.StrEnum):
    """What the client learned about an operation."""

    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client request on one key.

    ``value`` is a put's value; ``expected``/``new`` are a cas's arguments;
    ``result`` is a get's value or a cas's ``swapped``, meaningful only when
    ``outcome`` is ok. ``complete`` is None exactly when the outcome is unknown;
    ``gave_up`` (optional, unknown outcomes only) is when the client stopped
    waiting, which only plots use.
    """

    index: int
    client: int
    key: str
    kind: OpKind
    invoke: float
    complete: float | None
    outcome: Outcome
    value: str | None = None
    expected: str | None = None
    new: str | None = None
    result: str | bool | None = None
    node: str | None = None
    error: str | None = None
    gave_up: float | None = None
    txn: str | None = None

    def __post_init__(self) -> None:
        if (self.complete is None) != (self.outcome is Outcome.UNKNOWN):
            raise ValueError(f"op {self.index}: complete must be None exactly when unknown")
        if self.complete is not None and self.complete < self.invoke:
            raise ValueError(f"op {self.index}: completes before it is invoked")
        if self.gave_up is not None and self.outcome is not Outcome.UNKNOWN:
            raise ValueError(f"op {self.index}: only an unknown outcome has a give-up time")
        if self.kind is OpKind.PUT and self.value is None:
            raise ValueError(f"op {self.index}: a put needs a value")
        if self.kind is OpKind.CAS and self.new is None:
            raise ValueError(f"op {self.index}: a cas needs a new value")
        if self.kind is OpKind.TXN and self.txn is None:
            raise ValueError(f"op {self.index}: a txn needs its document")
        ok_cas = self.outcome is Outcome.OK and self.kind is OpKind.CAS
        if ok_cas and not isinstance(self.result, bool):
            raise ValueError(f"op {self.index}: an ok cas needs a bool result")

    def with_outcome(
        self, outcome: Outcome, complete: float | None, result: str | bool | None = None
    ) -> Operation:
        """Return a copy with another outcome (used to build and mutate histories)."""
        return replace(self, outcome=outcome, complete=complete, result=result, gave_up=None)

    def describe(self) -> str:
        """Return a one-line, human-readable form such as ``#12 c3 put(k1, '3.7') ok``."""
        if self.kind is OpKind.GET:
            call = f"get({self.key})"
        elif self.kind is OpKind.PUT:
            call = f"put({self.key}, {self.value!r})"
        elif self.kind is OpKind.TXN:
            call = f"txn({self.txn})"
        else:
            call = f"cas({self.key}, {self.expected!r}, {self.new!r})"
        if self.outcome is Outcome.OK:
            end = f"-> {self.result!r}" if self.kind is not OpKind.PUT else "-> ok"
            span = f"[{self.invoke:.3f}, {self.complete:.3f}]"
        elif self.outcome is Outcome.FAIL:
            end = "failed"
            span = f"[{self.invoke:.3f}, {self.complete:.3f}]"
        else:
            end = "unknown"
            span = f"[{self.invoke:.3f}, inf)"
        where = f" @{self.node}" if self.node is not None else ""
        return f"#{self.index} c{self.client}{where} {call} {end} {span}"


def operation_to_dict(op: Operation) -> dict[str, Any]:
    """Return ``op`` as a JSON-able dict (fields that are None are left out)."""
    out: dict[str, Any] = {
        "index": op.index,
        "client": op.client,
        "key": op.key,
        "kind": op.kind.value,
        "invoke": op.invoke,
        "complete": op.complete,
        "outcome": op.outcome.value,
    }
    for name in ("value", "expected", "new", "result", "node", "error", "gave_up", "txn"):
        v = getattr(op, name)
        if v is not None:
            out[name] = v
    if op.kind is OpKind.CAS:
        out["expected"] = op.expected  # None is meaningful here: "absent"
    return out


def operation_from_dict(data: Mapping[str, Any]) -> Operation:
    """Rebuild an operation from :func:`operation_to_dict`'s form; ValueError if malformed."""
    try:
        return Operation(
            index=int(data["index"]),
            client=int(data["client"]),
            key=str(data["key"]),
            kind=OpKind(data["kind"]),
            invoke=float(data["invoke"]),
            complete=None if data.get("complete") is None else float(data["complete"]),
            outcome=Outcome(data["outcome"]),
            value=data.get("value"),
            expected=data.get("expected"),
            new=data.get("new"),
            result=data.get("result"),
            node=data.get("node"),
            error=data.get("error"),
            gave_up=None if data.get("gave_up") is None else float(data["gave_up"]),
            txn=data.get("txn"),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed operation {data!r}: {e}") from None


def dumps_history(ops: Iterable[Operation]) -> str:
    """Return the history as JSON lines, one operation a line."""
    return "".join(json.dumps(operation_to_dict(op), sort_keys=True) + "\n" for op in ops)


def loads_history(text: str) -> list[Operation]:
    """Parse JSON lines written by :func:`dumps_history` (blank lines are skipped)."""
    return [operation_from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]


def summarize(ops: Iterable[Operation]) -> dict[str, Any]:
    """Count operations by outcome and by kind/outcome, and list the keys."""
    by_outcome: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    keys: set[str] = set()
    total = 0
    for op in ops:
        total += 1
        by_outcome[op.outcome.value] += 1
        by_kind[f"{op.kind.value}:{op.outcome.value}"] += 1
        keys.add(op.key)
    return {
        "operations": total,
        "ok": by_outcome["ok"],
        "fail": by_outcome["fail"],
        "unknown": by_outcome["unknown"],
        "by_kind": dict(sorted(by_kind.items())),
        "keys": sorted(keys),
    }
