"""Decoding of the coordination requests both APIs share: ranges and transactions.

A transaction travels as a JSON document (the same over AMP, JSON-RPC and in
``leekyraft txn``)::

    {"compare": [{"key": "lock", "target": "version", "op": "==", "value": 0}],
     "success": [{"type": "put", "key": "lock", "value": "me"}],
     "failure": [{"type": "range", "key": "lock"}]}

A compare's ``target`` is ``value``, ``version``, ``create`` or ``mod``
(revisions); ``op`` is ``==``, ``!=``, ``<`` or ``>``; an absent key has
version 0. An operation's ``type`` is ``put`` (key, value, optional ``lease``: the key
then belongs to that lease, as with a plain put), ``delete`` (key)
or ``range``: one of ``key`` (exactly that key), ``prefix``, or ``start``
with an optional ``end``; optional ``limit``, ``keys_only``, ``count_only``.
Every field is checked and bounded here, with a clear error naming it, before
anything is proposed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from leeky_twisted.protocol.errors import InvalidRequest
from leeky_twisted.protocol.txndoc import (
    COMPARE_TARGETS,
    MAX_RANGE_LIMIT,
    MAX_REVISION,
    revision_operand_error,
)
from leeky_twisted.statemachine import commands as kv

if TYPE_CHECKING:
    from leeky_twisted.api.amp_api import KeyValueFrontend

__all__ = ["MAX_RANGE_LIMIT", "MAX_REVISION", "parse_txn", "range_request", "txn_document"]

_COMPARE_FIELDS = frozenset({"key", "target", "op", "value"})
_DOCUMENT_FIELDS = frozenset({"compare", "success", "failure"})
_RANGE_FIELDS = frozenset({"key", "prefix", "start", "end", "limit", "keys_only", "count_only"})


def _flag(value: object, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{what} must be true or false")
    return value


def _count(value: object, what: str, maximum: int) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidRequest(f"{what} must be an integer from 0 to {maximum}")
    return value


def range_request(
    checker: KeyValueFrontend,
    start: object,
    end: object = None,
    *,
    prefix: object = False,
    limit: object = 0,
    keys_only: object = False,
    count_only: object = False,
) -> kv.Range:
    """Return the checked :class:`~leeky_twisted.statemachine.commands.Range`.

    ``checker`` is the frontend (its ``_check_text`` and limits). ``start``
    may be empty (the first key); with ``prefix``, ``start`` is the prefix
    and ``end`` must be absent. InvalidRequest when anything is malformed or
    ``start > end``.
    """
    limit_bytes = checker.limits.max_key_bytes
    start = checker._check_text(start, "range start", limit_bytes)
    if end is not None:  # one more byte: the end of a one-key range is the key + "\0"
        end = checker._check_text(end, "range end", limit_bytes + 1)
    options: dict[str, Any] = {
        "limit": _count(limit, "limit", MAX_RANGE_LIMIT),
        "keys_only": _flag(keys_only, "keys_only"),
        "count_only": _flag(count_only, "count_only"),
    }
    try:
        if _flag(prefix, "prefix"):
            if end is not None:
                raise InvalidRequest("a prefix range takes no end")
            return kv.Range.prefix(start, **options)
        return kv.Range(start, end, **options)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


def _range_op(checker: KeyValueFrontend, op: dict[str, Any]) -> kv.Range:
    given = [name for name in ("key", "prefix", "start") if op.get(name) is not None]
    if len(given) != 1:
        raise InvalidRequest("a range operation names one of key, prefix or start")
    options = {name: op.get(name) for name in ("limit", "keys_only", "count_only")}
    if given[0] == "key":
        key = checker._key(op["key"])
        if op.get("end") is not None:
            raise InvalidRequest("a range of one key takes no end")
        return range_request(checker, key, key + "\0", **options)
    if given[0] == "prefix":
        if op.get("end") is not None:
            raise InvalidRequest("a prefix range takes no end")
        return range_request(checker, op["prefix"], None, prefix=True, **options)
    return range_request(checker, op["start"], op.get("end"), **options)


def _op(checker: KeyValueFrontend, op: object, where: str) -> kv.TxnOp:
    if not isinstance(op, dict):
        raise InvalidRequest(f"each {where} operation must be an object")
    kind = op.get("type")
    if kind == "put":
        n = len(op)  # {type, key, value}, or those and lease: no set built per operation
        if not ("key" in op and "value" in op and (n == 3 or (n == 4 and "lease" in op))):
            raise InvalidRequest("a put operation is {type, key, value} with an optional lease")
        lease = op.get("lease")
        if lease is not None and not (
            isinstance(lease, int) and not isinstance(lease, bool) and 1 <= lease <= MAX_REVISION
        ):
            raise InvalidRequest(f"lease must be a lease id (an integer from 1 to {MAX_REVISION})")
        return kv.Put(checker._key(op["key"]), checker._value(op["value"]), None, lease or 0)
    if kind == "delete":
        if set(op) != {"type", "key"}:
            raise InvalidRequest("a delete operation is {type, key}")
        return kv.Delete(checker._key(op["key"]))
    if kind == "range":
        unknown = set(op) - _RANGE_FIELDS - {"type"}
        if unknown:
            raise InvalidRequest(f"unknown range field {sorted(unknown)[0][:40]!r}")
        return _range_op(checker, op)
    raise InvalidRequest(f'operation type must be "put", "delete" or "range", not {kind!r:.40}')


def _compare(checker: KeyValueFrontend, item: object) -> kv.Compare:
    if not isinstance(item, dict) or item.keys() != _COMPARE_FIELDS:
        raise InvalidRequest("a compare is an object {key, target, op, value}")
    key = checker._key(item["key"])
    target, op, value = item["target"], item["op"], item["value"]
    if target == "value":
        value = checker._value(value, "compare value")
    elif target in COMPARE_TARGETS:
        error = revision_operand_error(target, value)  # a float too: refused before the log
        if error is not None:
            raise InvalidRequest(error)
    try:
        return kv.Compare(key, target, op, value)
    except (ValueError, TypeError) as e:
        raise InvalidRequest(str(e)) from None


def _items(document: dict[str, Any], name: str) -> list[object]:
    items = document.get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidRequest(f"txn {name} must be a list")
    if len(items) > kv.MAX_TXN_OPS:
        raise InvalidRequest(
            f"txn {name} holds {len(items)} items; a transaction takes at most {kv.MAX_TXN_OPS}"
        )
    return items


def parse_txn(checker: KeyValueFrontend, document: object, session: kv.Session | None) -> kv.Txn:
    """Return the checked transaction the JSON ``document`` describes.

    InvalidRequest, naming the field, when it is malformed or out of bounds.
    """
    if not isinstance(document, dict):
        raise InvalidRequest("a transaction is a JSON object {compare, success, failure}")
    unknown = set(document) - _DOCUMENT_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown transaction field {sorted(unknown)[0][:40]!r}")
    return kv.Txn(
        tuple(_compare(checker, c) for c in _items(document, "compare")),
        tuple(_op(checker, op, "success") for op in _items(document, "success")),
        tuple(_op(checker, op, "failure") for op in _items(document, "failure")),
        session,
    )


def txn_document(txn: kv.Txn) -> dict[str, Any]:
    """Return the JSON document of ``txn`` (for forwarding it to the leader)."""

    def op(o: kv.TxnOp) -> dict[str, Any]:
        if isinstance(o, kv.Put):
            put = {"type": "put", "key": o.key, "value": o.value}
            return {**put, "lease": o.lease} if o.lease else put
        if isinstance(o, kv.Delete):
            return {"type": "delete", "key": o.key}
        return {
            "type": "range",
            "start": o.start,
            "end": o.end,
            "limit": o.limit,
            "keys_only": o.keys_only,
            "count_only": o.count_only,
        }

    return {
        "compare": [
            {"key": c.key, "target": c.target, "op": c.op, "value": c.operand} for c in txn.compares
        ],
        "success": [op(o) for o in txn.success],
        "failure": [op(o) for o in txn.failure],
    }
