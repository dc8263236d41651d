"""The log encoding of key-value commands.

A command is a compact JSON array, UTF-8 encoded (the stdlib ``json`` parser is
in C, and the text stays readable in log dumps)::

    ["put", key, value, session]
    ["del", key, session]
    ["cas", key, expected_or_null, new, session]
    ["append", key, suffix, session]
    ["get", key]
    ["register", nonce]
    ["txn", compares, success, failure, session]

A transaction's ``compares`` are ``[key, target, op, operand]`` (see
:class:`Compare`); ``success`` and ``failure`` are lists of operations
``["put", key, value]``, ``["del", key]`` and
``["range", start, end, limit, keys_only, count_only]`` (see :class:`Range`).

``session`` is ``null`` or ``{"id": session_id, "seq": seq, "ack": ack}`` (see
:class:`Session`): a session opened by a ``register`` entry, refused by the
state machine once it is unknown. Logs written before sessions had to be
registered hold the older form ``[client_id, seq, ack]``; it decodes to a
``Session`` with ``registered=False`` and keeps its old meaning (the session is
created on first use), so replaying an old log gives the state it gave then.
The API never writes that form.
The original Leeky Raft's text commands are accepted as well: ``PUT key
value...`` (the value is the remaining words joined by single spaces),
``GET key`` and ``DELETE key`` (verbs in any case).

:func:`decode_command` is the only way bytes become a command and it raises
only :class:`CommandDecodeError`, whatever the input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from leeky_twisted.protocol.txndoc import COMPARE_OPS, COMPARE_TARGETS, MAX_TXN_OPS

__all__ = [
    "MAX_LEASE_TTL",
    "MAX_TXN_OPS",
    "Append",
    "Cas",
    "Command",
    "CommandDecodeError",
    "Compare",
    "Delete",
    "Get",
    "LeaseGrant",
    "LeaseInfo",
    "LeaseRevoke",
    "Put",
    "Range",
    "RegisterSession",
    "Session",
    "Txn",
    "TxnOp",
    "WriteCommand",
    "decode_command",
    "encode_command",
    "prefix_end",
]


class CommandDecodeError(ValueError):
    """The bytes are not a well-formed key-value command."""


@dataclass(frozen=True, slots=True)
class Session:
    """A client's session and request number, for exactly-once writes.

    ``client_id`` is the session id a ``register`` entry returned. ``seq``
    numbers the client's requests (a retry reuses it). ``ack`` is the lowest
    ``seq`` the client is still waiting for: it holds every answer below it, so
    the state machine may forget them. A client with one request in flight
    sends ``ack == seq``. ``registered=False`` marks the legacy form found in
    old logs only (see the module docstring).
    """

    client_id: str
    seq: int
    ack: int
    registered: bool = True

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("session client_id must not be empty")
        if not 0 <= self.ack <= self.seq:
            raise ValueError("session needs 0 <= ack <= seq")


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``; applies to None.

    With a ``lease`` (not 0), the key belongs to that lease and is deleted
    with it; a put to an unknown lease is refused.
    """

    key: str
    value: str
    session: Session | None = None
    lease: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Create a lease of ``ttl`` seconds; applies to its id (the entry's index)."""

    ttl: int
    session: Session | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.ttl <= MAX_LEASE_TTL:
            raise ValueError(f"a lease's ttl is 1 to {MAX_LEASE_TTL} seconds")


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    """End lease ``lease`` and delete its keys; applies to whether it existed.

    The leader proposes one when a lease expires (``expired``), so expiry is
    decided once, in the log, and replicas never read a clock.
    """

    lease: int
    session: Session | None = None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A query (``IStateMachine.query``): (ttl, its keys sorted) of ``lease``, or None."""

    lease: int


#: The longest ttl of a lease, in seconds.
MAX_LEASE_TTL = 10**6


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; applies to True when it existed."""

    key: str
    session: Session | None = None


@dataclass(frozen=True, slots=True)
class Cas:
    """Set ``key`` to ``new`` if it holds ``expected`` (None: if absent); applies to swapped."""

    key: str
    expected: str | None
    new: str
    session: Session | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``suffix`` to the value of ``key`` (absent counts as ""); applies to the new length.

    Not idempotent: the command that shows client sessions at work.
    """

    key: str
    suffix: str
    session: Session | None = None


@dataclass(frozen=True, slots=True)
class RegisterSession:
    """Open a client session; applies to its id, ``"<log index>.<nonce>"``.

    The id is unique within the cluster (the log index) and, thanks to the
    random ``nonce`` the proposer picks, across clusters rebuilt from nothing.
    """

    nonce: str

    def __post_init__(self) -> None:
        if not 0 < len(self.nonce) <= MAX_NONCE_CHARS:
            raise ValueError(f"a session nonce is 1 to {MAX_NONCE_CHARS} characters")


#: The longest nonce of a RegisterSession (keeps session ids short).
MAX_NONCE_CHARS = 32


@dataclass(frozen=True, slots=True)
class Get:
    """Read ``key``; the value or None. Also the request object for ``IStateMachine.query``."""

    key: str


@dataclass(frozen=True, slots=True)
class Range:
    """Read the keys in [``start``, ``end``), sorted; ``end`` None: every key from ``start``.

    ``limit`` (0: none) caps how many keys come back; ``keys_only`` leaves the
    values out; ``count_only`` returns only how many keys the range holds. A
    request object for ``IStateMachine.query`` and an operation of a
    :class:`Txn`. Raises ValueError when ``start > end`` or ``limit < 0``.
    """

    start: str
    end: str | None = None
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False

    def __post_init__(self) -> None:
        if self.end is not None and self.start > self.end:
            raise ValueError(f"range start {self.start[:40]!r} is after its end {self.end[:40]!r}")
        if self.limit < 0:
            raise ValueError("range limit must not be negative")

    @classmethod
    def key(cls, key: str) -> Range:
        """Return the range that holds exactly ``key``."""
        return cls(key, key + "\0")

    @classmethod
    def prefix(cls, prefix: str, **options: Any) -> Range:
        """Return the range of every key that starts with ``prefix``."""
        return cls(prefix, prefix_end(prefix), **options)


def prefix_end(prefix: str) -> str | None:
    """Return the least string above every string starting with ``prefix`` (None: no bound).

    Strings compare by code point, which is the order of their UTF-8 bytes.
    """
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None
    return stem[:-1] + chr(ord(stem[-1]) + 1)


@dataclass(frozen=True, slots=True)
class Compare:
    """A test of one key in a :class:`Txn`: ``target op operand``.

    ``target`` is ``value`` (operand: a string), or ``version``,
    ``create`` (create revision) or ``mod`` (mod revision), whose operand is
    an integer. An absent key has version, create and mod 0 and no value (a
    value compare on it is false), so ``version == 0`` tests absence.
    """

    key: str
    target: str
    op: str
    operand: str | int

    def __post_init__(self) -> None:
        if self.target not in COMPARE_TARGETS:
            raise ValueError(f"compare target must be one of {sorted(COMPARE_TARGETS)}")
        if self.op not in COMPARE_OPS:
            raise ValueError(f"compare op must be one of {sorted(COMPARE_OPS)}")
        operand = self.operand
        if self.target == "value":
            if not isinstance(operand, str):
                raise ValueError("a value compare needs a string operand")
        elif not isinstance(operand, int) or isinstance(operand, bool):  # a float too
            raise ValueError(f"a {self.target} compare needs an integer operand")


#: An operation of a transaction: a put, a single-key delete or a range read.
TxnOp = Put | Delete | Range


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, apply ``success``, else ``failure``: one log entry, atomically.

    Every modification of the chosen branch takes the entry's revision.
    Applies to a :class:`~leeky_twisted.statemachine.kv.TxnResult`. The
    operations' own ``session`` fields are ignored: the transaction's counts.
    """

    compares: tuple[Compare, ...]
    success: tuple[TxnOp, ...]
    failure: tuple[TxnOp, ...] = ()
    session: Session | None = None

    def __post_init__(self) -> None:
        for what, items in (
            ("compares", self.compares),
            ("success", self.success),
            ("failure", self.failure),
        ):
            if len(items) > MAX_TXN_OPS:
                raise ValueError(
                    f"a transaction takes at most {MAX_TXN_OPS} {what}, not {len(items)}"
                )


WriteCommand = Put | Delete | Cas | Append | Txn | LeaseGrant | LeaseRevoke
Command = Put | Delete | Cas | Append | Get | RegisterSession | Txn | LeaseGrant | LeaseRevoke


def _session_json(session: Session | None) -> object:
    if session is None:
        return None
    if not session.registered:
        return [session.client_id, session.seq, session.ack]
    return {"id": session.client_id, "seq": session.seq, "ack": session.ack}


#: One encoder for every command (json.dumps with options builds a new one per call).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_command(command: Command) -> bytes:
    """Return the log encoding of ``command``.

    Raises ValueError when a string cannot be encoded as UTF-8 (lone surrogates).
    """
    fields: list[object]
    if isinstance(command, Put):
        fields = ["put", command.key, command.value, _session_json(command.session)]
        if command.lease:
            fields.append(command.lease)
    elif isinstance(command, Delete):
        fields = ["del", command.key, _session_json(command.session)]
    elif isinstance(command, Cas):
        fields = [
            "cas",
            command.key,
            command.expected,
            command.new,
            _session_json(command.session),
        ]
    elif isinstance(command, Append):
        fields = ["append", command.key, command.suffix, _session_json(command.session)]
    elif isinstance(command, Get):
        fields = ["get", command.key]
    elif isinstance(command, RegisterSession):
        fields = ["register", command.nonce]
    elif isinstance(command, LeaseGrant):
        fields = ["lease_grant", command.ttl, _session_json(command.session)]
    elif isinstance(command, LeaseRevoke):
        fields = ["lease_revoke", command.lease, _session_json(command.session), command.expired]
    elif isinstance(command, Txn):
        fields = [
            "txn",
            [[c.key, c.target, c.op, c.operand] for c in command.compares],
            [_op_json(op) for op in command.success],
            [_op_json(op) for op in command.failure],
            _session_json(command.session),
        ]
    else:
        raise TypeError(f"not a key-value command: {command!r}")
    text = _COMPACT.encode(fields)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"command holds text that is not valid UTF-8: {e}") from None


def _op_json(op: TxnOp) -> list[object]:
    if isinstance(op, Put):
        return ["put", op.key, op.value, op.lease] if op.lease else ["put", op.key, op.value]
    if isinstance(op, Delete):
        return ["del", op.key]
    if isinstance(op, Range):
        return ["range", op.start, op.end, op.limit, op.keys_only, op.count_only]
    raise TypeError(f"not a transaction operation: {op!r}")


def decode_command(data: bytes) -> Command:
    """Parse bytes produced by :func:`encode_command` or an original text command.

    Raises CommandDecodeError, and nothing else, for any malformed input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CommandDecodeError(f"command must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if raw[:1] == b"[":
        try:
            fields = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise CommandDecodeError(f"malformed command: {e}") from None
        return _from_fields(fields)
    return _from_text(raw)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CommandDecodeError(f"{what} must be a string")
    if value.isascii():  # the usual case: valid UTF-8, no copy to check it
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandDecodeError(f"{what} is not valid UTF-8") from None
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise CommandDecodeError(f"{what} must be an integer")
    return value


_SESSION_FIELDS = frozenset({"id", "seq", "ack"})


def _session(value: object) -> Session | None:
    if value is None:
        return None
    if isinstance(value, dict) and value.keys() == _SESSION_FIELDS:
        client_id, seq, ack, registered = value["id"], value["seq"], value["ack"], True
    elif isinstance(value, list) and len(value) == 3:
        (client_id, seq, ack), registered = value, False
    else:
        raise CommandDecodeError('session must be null or {"id": ..., "seq": ..., "ack": ...}')
    try:
        return Session(
            _text(client_id, "session id"),
            _int(seq, "session seq"),
            _int(ack, "session ack"),
            registered,
        )
    except ValueError as e:
        raise CommandDecodeError(str(e)) from None


_ARITY = {
    "put": 4,
    "del": 3,
    "cas": 5,
    "append": 4,
    "get": 2,
    "register": 2,
    "txn": 5,
    "lease_grant": 3,
    "lease_revoke": 4,
}


def _from_fields(fields: object) -> Command:
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], str):
        raise CommandDecodeError("command must be a JSON array starting with its name")
    op = fields[0]
    arity = _ARITY.get(op)
    if arity is None:
        raise CommandDecodeError(f"unknown command {op[:40]!r}")
    if op == "put" and len(fields) == 5:  # a put to a lease
        lease = _int(fields[4], "lease")
        if lease < 1:
            raise CommandDecodeError("lease must be a positive integer")
        return Put(_text(fields[1], "key"), _text(fields[2], "value"), _session(fields[3]), lease)
    if len(fields) != arity:
        raise CommandDecodeError(f"{op} takes {arity - 1} fields, not {len(fields) - 1}")
    if op == "register":
        try:
            return RegisterSession(_text(fields[1], "nonce"))
        except ValueError as e:
            raise CommandDecodeError(str(e)) from None
    if op == "txn":
        return _txn(fields)
    if op in ("lease_grant", "lease_revoke"):
        return _lease_command(op, fields)
    key = _text(fields[1], "key")
    if op == "put":
        return Put(key, _text(fields[2], "value"), _session(fields[3]))
    if op == "del":
        return Delete(key, _session(fields[2]))
    if op == "cas":
        expected = None if fields[2] is None else _text(fields[2], "expected")
        return Cas(key, expected, _text(fields[3], "new"), _session(fields[4]))
    if op == "append":
        return Append(key, _text(fields[2], "suffix"), _session(fields[3]))
    return Get(key)


def _lease_command(op: str, fields: list[object]) -> LeaseGrant | LeaseRevoke:
    number = _int(fields[1], "ttl" if op == "lease_grant" else "lease")
    session = _session(fields[2])
    try:
        if op == "lease_grant":
            return LeaseGrant(number, session)
        return LeaseRevoke(number, session, _bool(fields[3], "expired"))
    except ValueError as e:
        raise CommandDecodeError(str(e)) from None


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise CommandDecodeError(f"{what} must be a list")
    if len(value) > MAX_TXN_OPS:
        raise CommandDecodeError(f"a transaction takes at most {MAX_TXN_OPS} {what}")
    return value


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise CommandDecodeError(f"{what} must be true or false")
    return value


def _txn(fields: list[object]) -> Txn:
    compares = []
    for item in _list(fields[1], "compares"):
        if not (isinstance(item, list) and len(item) == 4):
            raise CommandDecodeError("a compare is [key, target, op, operand]")
        key, target, op, operand = item
        if not isinstance(operand, str):
            operand = _int(operand, "compare operand")
        try:
            compares.append(
                Compare(_text(key, "key"), _text(target, "target"), _text(op, "op"), operand)
            )
        except ValueError as e:
            raise CommandDecodeError(str(e)) from None
    return Txn(
        tuple(compares),
        tuple(_txn_op(op) for op in _list(fields[2], "success")),
        tuple(_txn_op(op) for op in _list(fields[3], "failure")),
        _session(fields[4]),
    )


_TXN_OP_ARITY = {"put": 3, "del": 2, "range": 6}


def _txn_op(value: object) -> TxnOp:
    if not (isinstance(value, list) and value and isinstance(value[0], str)):
        raise CommandDecodeError("a transaction operation is a list starting with its name")
    name, arity = value[0], _TXN_OP_ARITY.get(value[0])
    if arity is None:
        raise CommandDecodeError(f"unknown transaction operation {name[:40]!r}")
    if name == "put" and len(value) == 4:  # a put to a lease
        lease = _int(value[3], "lease")
        if lease < 1:
            raise CommandDecodeError("lease must be a positive integer")
        return Put(_text(value[1], "key"), _text(value[2], "value"), None, lease)
    if len(value) != arity:
        raise CommandDecodeError(f"a transaction {name} takes {arity - 1} fields")
    if name == "put":
        return Put(_text(value[1], "key"), _text(value[2], "value"))
    if name == "del":
        return Delete(_text(value[1], "key"))
    end = None if value[2] is None else _text(value[2], "range end")
    try:
        return Range(
            _text(value[1], "range start"),
            end,
            _int(value[3], "range limit"),
            _bool(value[4], "keys_only"),
            _bool(value[5], "count_only"),
        )
    except ValueError as e:
        raise CommandDecodeError(str(e)) from None


def _from_text(raw: bytes) -> Command:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandDecodeError("text command is not valid UTF-8") from None
    words = text.split()
    if not words:
        raise CommandDecodeError("empty command")
    verb = words[0].upper()
    if verb == "PUT":
        if len(words) < 3:
            raise CommandDecodeError("PUT needs a key and a value: PUT key value...")
        return Put(words[1], " ".join(words[2:]))
    if verb in ("GET", "DELETE"):
        if len(words) != 2:
            raise CommandDecodeError(f"{verb} needs exactly one key: {verb} key")
        return Get(words[1]) if verb == "GET" else Delete(words[1])
    raise CommandDecodeError(f"unknown command {words[0][:40]!r}")
