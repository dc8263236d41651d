"""The shape of a transaction document, as both ends may check it.

A node checks every transaction in full (``api.coord.parse_txn``: this shape,
and its own size limits) before anything is proposed. A client may check the
same shape first, with no node to ask: :func:`check_txn_document` refuses what
every node would refuse, whatever its limits, so ``leekyraft txn`` can tell
bad input (exit 64) from a refusal by the cluster (exit 5). See
``api.coord`` for the document itself.
"""

from __future__ import annotations

from typing import Any

from leeky_twisted.protocol.commands import MAX_RANGE_LIMIT, MAX_SEQ

__all__ = [
    "COMPARE_OPS",
    "COMPARE_TARGETS",
    "MAX_RANGE_LIMIT",
    "MAX_REVISION",
    "MAX_TXN_OPS",
    "check_txn_document",
    "revision_operand_error",
]

#: What a compare may look at, and the operators it may apply.
COMPARE_TARGETS = frozenset({"value", "version", "create", "mod"})
COMPARE_OPS = frozenset({"==", "!=", "<", ">"})
#: The most compares, and the most operations per branch, of one transaction.
MAX_TXN_OPS = 128
#: The largest revision (or version, or lease id) a request may name.
MAX_REVISION = MAX_SEQ

_DOCUMENT_FIELDS = frozenset({"compare", "success", "failure"})
_COMPARE_FIELDS = frozenset({"key", "target", "op", "value"})
_RANGE_FIELDS = frozenset(
    {"type", "key", "prefix", "start", "end", "limit", "keys_only", "count_only"}
)


def revision_operand_error(target: str, operand: object) -> str | None:
    """Return why ``operand`` cannot be compared with ``target`` (not ``value``), or None.

    A version or a revision is an integer from 0 to :data:`MAX_REVISION`: a
    float (even ``2.0``), a bool or a string is refused.
    """
    if not isinstance(operand, int) or isinstance(operand, bool):
        return f"a {target} compare needs an integer operand, not {_json_type(operand)}"
    if not 0 <= operand <= MAX_REVISION:
        return f"compare value must be from 0 to {MAX_REVISION}"
    return None


def check_txn_document(document: object) -> None:
    """Raise ValueError, naming the field, when ``document`` is not a transaction.

    Checks the shape and the types of every field and the bounds that do not
    depend on a node's configuration (key and value sizes do: a node checks
    those).
    """
    if not isinstance(document, dict):
        raise ValueError("a transaction is a JSON object {compare, success, failure}")
    unknown = set(document) - _DOCUMENT_FIELDS
    if unknown:
        raise ValueError(f"unknown transaction field {sorted(unknown)[0][:40]!r}")
    for item in _items(document, "compare"):
        _check_compare(item)
    for where in ("success", "failure"):
        for op in _items(document, where):
            _check_op(op, where)


def _items(document: dict[str, Any], name: str) -> list[object]:
    items = document.get(name)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"txn {name} must be a list")
    if len(items) > MAX_TXN_OPS:
        raise ValueError(
            f"txn {name} holds {len(items)} items; a transaction takes at most {MAX_TXN_OPS}"
        )
    return items


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r:.40}"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _text(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8") from None
    if not empty and not value:
        raise ValueError(f"{what} must not be empty")
    return value


def _check_compare(item: object) -> None:
    if not isinstance(item, dict) or item.keys() != _COMPARE_FIELDS:
        raise ValueError("a compare is an object {key, target, op, value}")
    _text(item["key"], "key", empty=False)
    target, op, value = item["target"], item["op"], item["value"]
    if target not in COMPARE_TARGETS:
        raise ValueError(f"compare target must be one of {sorted(COMPARE_TARGETS)}")
    if op not in COMPARE_OPS:
        raise ValueError(f"compare op must be one of {sorted(COMPARE_OPS)}")
    if target == "value":
        if not isinstance(value, str):
            raise ValueError("a value compare needs a string operand")
        _text(value, "compare value")
        return
    error = revision_operand_error(target, value)
    if error is not None:
        raise ValueError(error)


def _check_op(op: object, where: str) -> None:
    if not isinstance(op, dict):
        raise ValueError(f"each {where} operation must be an object")
    kind = op.get("type")
    if kind == "put":
        n = len(op)
        if not ("key" in op and "value" in op and (n == 3 or (n == 4 and "lease" in op))):
            raise ValueError("a put operation is {type, key, value} with an optional lease")
        lease = op.get("lease")
        if lease is not None and not (
            isinstance(lease, int) and not isinstance(lease, bool) and 1 <= lease <= MAX_REVISION
        ):
            raise ValueError(f"lease must be a lease id (an integer from 1 to {MAX_REVISION})")
        _text(op["key"], "key", empty=False)
        _text(op["value"], "value")
    elif kind == "delete":
        if set(op) != {"type", "key"}:
            raise ValueError("a delete operation is {type, key}")
        _text(op["key"], "key", empty=False)
    elif kind == "range":
        _check_range(op)
    else:
        raise ValueError(f'operation type must be "put", "delete" or "range", not {kind!r:.40}')


def _check_range(op: dict[str, Any]) -> None:
    unknown = set(op) - _RANGE_FIELDS
    if unknown:
        raise ValueError(f"unknown range field {sorted(unknown)[0][:40]!r}")
    given = [name for name in ("key", "prefix", "start") if op.get(name) is not None]
    if len(given) != 1:
        raise ValueError("a range operation names one of key, prefix or start")
    end = op.get("end")
    if given[0] == "key":
        _text(op["key"], "key", empty=False)
        if end is not None:
            raise ValueError("a range of one key takes no end")
    elif given[0] == "prefix":
        _text(op["prefix"], "range start")
        if end is not None:
            raise ValueError("a prefix range takes no end")
    else:
        start = _text(op["start"], "range start")
        if end is not None and start > _text(end, "range end"):
            raise ValueError(f"range start {start[:40]!r} is after its end {end[:40]!r}")
    limit = op.get("limit")
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_RANGE_LIMIT
    ):
        raise ValueError(f"limit must be an integer from 0 to {MAX_RANGE_LIMIT}")
    for flag in ("keys_only", "count_only"):
        if op.get(flag) is not None and not isinstance(op[flag], bool):
            raise ValueError(f"{flag} must be true or false")
