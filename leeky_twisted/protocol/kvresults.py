"""The key-value results as both ends read them: keys, ranges, transactions, events.

The state machine (:mod:`leeky_twisted.statemachine.kv`) builds them; the
client rebuilds them from JSON with the ``*_from_json`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "Event",
    "KeyValue",
    "RangeResult",
    "TxnResult",
    "event_from_json",
    "range_result_from_json",
    "txn_result_from_json",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key with its revisions; ``value`` is None in a ``keys_only`` answer."""

    key: str
    value: str | None
    create_revision: int
    mod_revision: int
    version: int

    def to_json(self) -> dict[str, object]:
        """Return this key as a JSON object (no ``value`` field when None)."""
        out: dict[str, object] = {"key": self.key}
        if self.value is not None:
            out["value"] = self.value
        out["create_revision"] = self.create_revision
        out["mod_revision"] = self.mod_revision
        out["version"] = self.version
        return out


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys of a range in order, read at ``revision``.

    ``count`` is how many keys the whole range holds (whatever the limit);
    ``more`` says keys were left out (limit or size cap).
    """

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool

    def to_json(self) -> dict[str, object]:
        """Return this answer as a JSON object."""
        return {
            "revision": self.revision,
            "kvs": [kv.to_json() for kv in self.kvs],
            "count": self.count,
            "more": self.more,
        }


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch a transaction took, at which revision, and each operation's answer.

    ``responses`` holds, per operation of that branch: None for a put, a
    bool (existed) for a delete, a :class:`RangeResult` for a range.
    """

    succeeded: bool
    revision: int
    responses: tuple[bool | RangeResult | None, ...]

    def to_json(self) -> dict[str, object]:
        """Return this result as a JSON object."""
        return {
            "succeeded": self.succeeded,
            "revision": self.revision,
            "responses": [r.to_json() if isinstance(r, RangeResult) else r for r in self.responses],
        }


class Event(NamedTuple):
    """One modification: ``kind`` is "put" or "delete"; a delete's value is None.

    A named tuple, not a frozen dataclass: one is built per modification on
    the apply path, and a tuple is three times cheaper to build.

    A delete carries the revisions the key had before it went (``version``
    0 and ``mod_revision`` the delete's revision).
    """

    revision: int
    kind: str
    key: str
    value: str | None
    create_revision: int
    version: int

    def to_json(self) -> dict[str, object]:
        """Return this event as a JSON object."""
        return {
            "revision": self.revision,
            "type": self.kind,
            "key": self.key,
            "value": self.value,
            "create_revision": self.create_revision,
            "mod_revision": self.revision,
            "version": self.version,
        }


def range_result_from_json(value: Any) -> RangeResult:
    """Rebuild a :class:`RangeResult` from :meth:`RangeResult.to_json`; KeyError,
    TypeError or ValueError when malformed."""
    kvs = tuple(
        KeyValue(
            _str(kv["key"]),
            None if kv.get("value") is None else _str(kv["value"]),
            _int(kv["create_revision"]),
            _int(kv["mod_revision"]),
            _int(kv["version"]),
        )
        for kv in value["kvs"]
    )
    return RangeResult(_int(value["revision"]), kvs, _int(value["count"]), bool(value["more"]))


def event_from_json(value: Any) -> Event:
    """Rebuild an :class:`Event` from :meth:`Event.to_json`; KeyError, TypeError or
    ValueError when malformed."""
    kind = value["type"]
    if kind not in ("put", "delete"):
        raise ValueError(f"unknown event type {kind!r:.40}")
    return Event(
        _int(value["revision"]),
        kind,
        _str(value["key"]),
        None if value.get("value") is None else _str(value["value"]),
        _int(value["create_revision"]),
        _int(value["version"]),
    )


def txn_result_from_json(value: Any) -> TxnResult:
    """Rebuild a :class:`TxnResult` from :meth:`TxnResult.to_json`; KeyError,
    TypeError or ValueError when malformed."""
    responses = tuple(
        r if r is None or isinstance(r, bool) else range_result_from_json(r)
        for r in value["responses"]
    )
    return TxnResult(bool(value["succeeded"]), _int(value["revision"]), responses)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: object) -> int:
    if not _is_int(value):
        raise TypeError("expected an integer")
    return value  # type: ignore[return-value]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
