"""The replicated key-value store: Leeky Raft's built-in state machine.

Everything here is deterministic: the same commands at the same log indexes
give the same state and results on every replica. Nothing reads a clock.

Exactly-once writes (Raft dissertation §6.3): a client first opens a session
with a ``register`` entry (:class:`~leeky_twisted.statemachine.commands.RegisterSession`),
which applies to a new session id. Its writes then carry a
:class:`~leeky_twisted.statemachine.commands.Session` ``(session id, seq, ack)``.
Per session the machine keeps the results of the requests the client has not
acknowledged yet, so a retried ``(session id, seq)`` returns the cached result
without applying the command again. A request below the client's ``ack`` is
answered with a :class:`CommandError` and never applied. A write whose session
the machine does not know (never registered, or expired) is answered with
:class:`UnknownSession` and changes nothing: applying it as the first request
of a fresh session could apply a retry a second time.

A session last used at log index ``u`` is dropped when the entry at
``u + session_ttl`` (or later) is applied: expiry counts log indexes, never
wall time. The least recently used session is dropped, too, when there are
more than ``max_sessions``. These settings are replicated semantics: every
replica must use the same values. The session table, in least recently used
order, is part of every snapshot.

Revisions: every log entry that modifies a key (a put, a delete of a key that
existed, a swap, an append, a transaction that changed something) takes the
entry's log index as its *revision*. Revisions therefore strictly increase
with each committed modification (they are not dense: reads, session
registrations and refused commands take indexes too), and every replica
computes the same ones. Each key carries ``create_revision`` (the revision
that created it since it was last absent), ``mod_revision`` (its last
modification) and ``version`` (modifications since it was created, from 1);
:attr:`KeyValueStateMachine.revision` is the revision of the last
modification. All of them are part of every snapshot. A snapshot written
before revisions existed (format ``leeky-kv/1``) restores with the revision
set to its ``last_applied`` index, and each of its keys at
``create_revision = mod_revision = last_applied`` and ``version = 1``.

Range reads keep a sorted list of the keys, built on the first range and
then maintained lazily: a put of a new key or a delete only notes the key
(O(1)); the next range merges the notes (or re-sorts when there are many).
Puts to existing keys never touch it.
"""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zope.interface import implementer

from leeky_twisted.interfaces import IStateMachine
from leeky_twisted.protocol.kvresults import (
    Event,
    KeyValue,
    RangeResult,
    TxnResult,
    _is_int,
    event_from_json,
    range_result_from_json,
    txn_result_from_json,
)
from leeky_twisted.statemachine.commands import (
    Append,
    Cas,
    CommandDecodeError,
    Compare,
    Delete,
    Get,
    LeaseGrant,
    LeaseInfo,
    LeaseRevoke,
    Put,
    Range,
    RegisterSession,
    Session,
    Txn,
    WriteCommand,
    decode_command,
)

__all__ = [
    "SNAPSHOT_FORMAT",
    "CommandError",
    "Event",
    "KeyValue",
    "KeyValueStateMachine",
    "RangeResult",
    "Result",
    "TxnResult",
    "UnknownSession",
    "event_from_json",
    "range_result_from_json",
    "txn_result_from_json",
]

SNAPSHOT_FORMAT = "leeky-kv/2"
#: The format before revisions; restored as the module docstring says.
SNAPSHOT_FORMAT_V1 = "leeky-kv/1"
#: A snapshot piece holds about this many bytes of keys and values: serializing
#: one costs a few milliseconds of the reactor, whatever the size of the values.
SNAPSHOT_PIECE_BYTES = 1 << 20

#: A key's revisions: (create, mod, version), or only the revision of a key written once
Revisions = int | tuple[int, int, int]


def revisions(r: Revisions) -> tuple[int, int, int]:
    """Return (create, mod, version) from a key's stored revisions."""
    if type(r) is int:
        return (r, r, 1)
    return r  # type: ignore[return-value]


#: A range answer holds at most this many bytes of keys and values (then ``more``).
MAX_RANGE_BYTES = 4 << 20
#: A range inside a transaction returns at most this many keys and bytes: the
#: answer is kept with the client's session.
MAX_TXN_RANGE_KEYS = 1000
MAX_TXN_RANGE_BYTES = 256 << 10
#: Pending sorted-index notes beyond which the index is dropped and rebuilt.
_INDEX_NOTES = 65536


@dataclass(frozen=True, slots=True)
class CommandError:
    """The result of a committed command that could not take effect.

    The command is in the log already, so applying it must neither raise nor
    differ between replicas: it yields this value instead.
    """

    message: str


@dataclass(frozen=True, slots=True)
class UnknownSession(CommandError):
    """A write named a session this machine does not hold: refused, nothing changed.

    The session was never registered, or it expired (``session_ttl``) or was
    evicted (``max_sessions``). The client must register a new session.
    """


Result = None | bool | int | str | CommandError | TxnResult

#: Builds an Event from a tuple without NamedTuple's Python-level __new__ (the hot path).
_new_event = tuple.__new__


class _ClientSession:
    """One client's cached results; seqs below ``floor`` are forgotten."""

    __slots__ = ("floor", "last_used", "results")

    def __init__(self, last_used: int, floor: int = 0) -> None:
        self.last_used = last_used
        self.floor = floor
        self.results: dict[int, Result] = {}


@implementer(IStateMachine)
class KeyValueStateMachine:
    """A map from UTF-8 string keys to UTF-8 string values, with client sessions.

    :param session_ttl: drop a session once this many log indexes passed
        since its last use.
    :param max_sessions: keep at most this many sessions (drop the least
        recently used).
    :param max_results_per_session: keep at most this many unacknowledged
        results per client (forget the oldest).
    """

    def __init__(
        self,
        *,
        session_ttl: int = 1_000_000,
        max_sessions: int = 100_000,
        max_results_per_session: int = 1024,
    ) -> None:
        if session_ttl < 1 or max_sessions < 1 or max_results_per_session < 1:
            raise ValueError("session limits must be positive")
        self.session_ttl = session_ttl
        self.max_sessions = max_sessions
        self.max_results_per_session = max_results_per_session
        self._data: dict[str, str] = {}
        #: key -> (create_revision, mod_revision, version); the same keys as _data
        #: each key's (create, mod, version); a key written once (version 1, so
        #: create == mod) holds just that revision: 64 bytes less per such key
        self._meta: dict[str, Revisions] = {}
        self._revision = 0
        self._sessions: OrderedDict[str, _ClientSession] = OrderedDict()
        self._last_applied = 0
        #: the keys in order, once a range asked for them (see the module docstring)
        self._sorted: list[str] | None = None
        #: key -> was it in _sorted at the last merge, for keys created or deleted since
        self._notes: dict[str, bool] = {}
        #: lease id -> (ttl, its keys); key -> its lease (leased keys only)
        self._leases: dict[int, tuple[int, set[str]]] = {}
        self._key_lease: dict[str, int] = {}
        self._observer: Callable[[list[Event]], None] | None = None
        self._on_restore: Callable[[int], None] | None = None
        self._pending: list[Event] | None = None

    def leases(self) -> list[tuple[int, int]]:
        """Return every live lease as (id, ttl in seconds), oldest first."""
        return [(lease, ttl) for lease, (ttl, _) in self._leases.items()]

    def lease(self, lease: int) -> tuple[int, list[str]] | None:
        """Return (ttl, its keys sorted) of ``lease``, or None when it does not exist."""
        found = self._leases.get(lease)
        return None if found is None else (found[0], sorted(found[1]))

    @property
    def revision(self) -> int:
        """Return the revision of the last modification (0 before any)."""
        return self._revision

    def observe(
        self,
        observer: Callable[[list[Event]], None] | None,
        on_restore: Callable[[int], None] | None = None,
    ) -> None:
        """Call ``observer`` with the events of each applied entry that modified keys.

        One call per entry, in apply order, after the entry took effect; and
        ``on_restore(revision)`` after a snapshot replaced the state. None
        stops the calls. The callbacks must not raise.
        """
        self._observer = observer
        self._on_restore = on_restore if observer is not None else None
        self._pending = [] if observer is not None else None

    @property
    def last_applied(self) -> int:
        """Return the index of the last applied entry (0 before any)."""
        return self._last_applied

    def session_ids(self) -> list[str]:
        """Return the client ids with a live session, least recently used first."""
        return list(self._sessions)

    def apply(self, index: int, command: bytes) -> Result:
        """Apply the committed ``command`` at log ``index``; return its result.

        Results: put → None, delete → existed, cas → swapped, append → the new
        length, get → the value or None, register → the new session id, txn →
        a :class:`TxnResult`. A
        write in a session this machine does not hold → :class:`UnknownSession`.
        An index at or below
        :attr:`last_applied` is ignored (None, nothing changes), so replaying
        entries a snapshot already covers is harmless. Undecodable or refused
        commands yield a :class:`CommandError`; this method never raises on
        bad bytes.
        """
        if index <= self._last_applied:
            return None
        self._last_applied = index
        self._expire_sessions(index)
        try:
            decoded = decode_command(command)
        except CommandDecodeError as e:
            return CommandError(f"rejected command: {e}")
        if isinstance(decoded, RegisterSession):
            return self._register(index, decoded.nonce)
        session = None if isinstance(decoded, Get) else decoded.session
        if session is None:
            result = self._execute(decoded, index)
        else:
            result = self._apply_in_session(index, decoded, session)
        if self._pending:
            events, self._pending = self._pending, []
            self._observer(events)  # type: ignore[misc]
        return result

    def query(self, request: object) -> str | RangeResult | None:
        """Answer ``commands.Get(key)`` with the value (None when absent), a
        ``commands.Range`` with a :class:`RangeResult`, a ``commands.LeaseInfo``
        with (ttl, keys) or None.

        Raises TypeError for any other request.
        """
        if isinstance(request, Get):
            return self._data.get(request.key)
        if isinstance(request, Range):
            return self._range(request, 0, MAX_RANGE_BYTES)
        if isinstance(request, LeaseInfo):
            return self.lease(request.lease)  # type: ignore[return-value]
        raise TypeError(f"unsupported query: {request!r}")

    # ----------------------------------------------------------------- apply

    def _execute(self, command: WriteCommand | Get, index: int) -> Result:
        data = self._data
        if type(command) is Put and (command.lease or self._key_lease):
            return self._put_leased(command, index)
        if type(command) is Put:  # the hot path: _set, inlined
            key = command.key
            meta = self._meta
            m = meta.get(key)
            if m is None:
                meta[key] = index
                create, version = index, 1
                if self._sorted is not None:
                    self._note(key, False)
            else:
                if type(m) is int:
                    create, version = m, 2
                else:
                    create, version = m[0], m[2] + 1  # type: ignore[index]
                meta[key] = (create, index, version)
            data[key] = command.value
            self._revision = index
            if self._pending is not None:
                self._pending.append(
                    _new_event(Event, (index, "put", key, command.value, create, version))
                )
            return None
        if isinstance(command, Delete):
            return self._remove(command.key, index)
        if isinstance(command, Cas):
            if data.get(command.key) != command.expected:
                return False
            self._set(command.key, command.new, index)
            return True
        if isinstance(command, Append):
            value = data.get(command.key, "") + command.suffix
            self._set(command.key, value, index)
            return len(value)
        if isinstance(command, Txn):
            return self._txn(command, index)
        if isinstance(command, LeaseGrant):
            self._leases[index] = (command.ttl, set())
            return index
        if isinstance(command, LeaseRevoke):
            return self._revoke(command.lease, index)
        return data.get(command.key)

    # ---------------------------------------------------------------- leases

    def _put_leased(self, command: Put, index: int) -> Result:
        lease = command.lease
        if lease and lease not in self._leases:
            return CommandError(f"lease {lease} not found (expired or revoked)")
        self._set(command.key, command.value, index)
        if lease:
            self._key_lease[command.key] = lease
            self._leases[lease][1].add(command.key)
        return None

    def _detach(self, key: str) -> None:
        lease = self._key_lease.pop(key, None)
        if lease is not None:
            self._leases[lease][1].discard(key)

    def _revoke(self, lease: int, index: int) -> bool:
        found = self._leases.pop(lease, None)
        if found is None:
            return False
        for key in sorted(found[1]):
            self._key_lease.pop(key, None)
            self._remove(key, index)
        return True

    def _set(self, key: str, value: str, index: int) -> None:
        if self._key_lease:
            self._detach(key)  # a plain put takes the key off its lease
        meta = self._meta
        m = meta.get(key)
        if m is None:
            meta[key] = index
            create, version = index, 1
            if self._sorted is not None:
                self._note(key, False)
        else:
            create, _, version = revisions(m)
            version += 1
            meta[key] = (create, index, version)
        self._data[key] = value
        self._revision = index
        if self._pending is not None:
            self._pending.append(_new_event(Event, (index, "put", key, value, create, version)))

    def _remove(self, key: str, index: int) -> bool:
        if self._data.pop(key, None) is None:
            return False
        if self._key_lease:
            self._detach(key)
        create = revisions(self._meta.pop(key))[0]
        self._revision = index
        if self._sorted is not None:
            self._note(key, True)
        if self._pending is not None:
            self._pending.append(Event(index, "delete", key, None, create, 0))
        return True

    def _txn(self, txn: Txn, index: int) -> TxnResult | CommandError:
        ok = all(self._compare(c) for c in txn.compares)
        branch = txn.success if ok else txn.failure
        for op in branch:  # every lease first: a refused txn changes nothing
            if type(op) is Put and op.lease and op.lease not in self._leases:
                return CommandError(f"lease {op.lease} not found (expired or revoked)")
        responses: list[bool | RangeResult | None] = []
        for op in branch:
            if isinstance(op, Put):
                self._set(op.key, op.value, index)
                if op.lease:
                    self._key_lease[op.key] = op.lease
                    self._leases[op.lease][1].add(op.key)
                responses.append(None)
            elif isinstance(op, Delete):
                responses.append(self._remove(op.key, index))
            else:
                responses.append(self._range(op, MAX_TXN_RANGE_KEYS, MAX_TXN_RANGE_BYTES))
        return TxnResult(ok, self._revision, tuple(responses))

    def _compare(self, c: Compare) -> bool:
        found = self._meta.get(c.key)
        m = None if found is None else revisions(found)
        actual: str | int
        if c.target == "value":
            if m is None:
                return False  # an absent key has no value to compare
            actual = self._data[c.key]
        elif m is None:
            actual = 0
        else:
            actual = m[2] if c.target == "version" else m[0] if c.target == "create" else m[1]
        operand = c.operand
        if c.op == "==":
            return actual == operand
        if c.op == "!=":
            return actual != operand
        if c.op == "<":
            return actual < operand  # type: ignore[operator]
        return actual > operand  # type: ignore[operator]

    # ---------------------------------------------------------------- ranges

    def _note(self, key: str, indexed: bool) -> None:
        notes = self._notes
        notes.setdefault(key, indexed)
        if len(notes) > _INDEX_NOTES:  # cheaper to sort afresh on the next range
            self._sorted = None
            notes.clear()

    def _sorted_keys(self) -> list[str]:
        """Return every key in order, merging the notes taken since the last call."""
        keys = self._sorted
        if keys is None:
            keys = self._sorted = sorted(self._data)
            self._notes.clear()
            return keys
        if not self._notes:
            return keys
        data = self._data
        added = [k for k, was in self._notes.items() if not was and k in data]
        gone = {k for k, was in self._notes.items() if was and k not in data}
        self._notes.clear()
        if len(gone) <= 16:
            for k in gone:
                del keys[bisect_left(keys, k)]
        else:
            keys = self._sorted = [k for k in keys if k not in gone]
        if len(added) <= 16:
            for k in added:
                insort(keys, k)
        else:
            keys.extend(added)
            keys.sort()  # two sorted runs (well, one and a few): timsort merges them
        return keys

    def _range(self, r: Range, max_keys: int, max_bytes: int) -> RangeResult:
        """Answer ``r``: at most ``max_keys`` keys (0: any number) and ``max_bytes``
        characters of keys and values (always at least one key)."""
        keys = self._sorted_keys()
        lo = bisect_left(keys, r.start)
        hi = len(keys) if r.end is None else bisect_left(keys, r.end, lo)
        count = hi - lo
        if r.count_only:
            return RangeResult(self._revision, (), count, False)
        n = count if r.limit == 0 else min(count, r.limit)
        if max_keys:
            n = min(n, max_keys)
        data, meta, keys_only = self._data, self._meta, r.keys_only
        out = []
        size = 0
        for key in keys[lo : lo + n]:  # a slice: islice would walk from 0
            value = None if keys_only else data[key]
            size += len(key) + (0 if value is None else len(value))
            if out and size > max_bytes:
                break
            rev = meta[key]
            if type(rev) is int:
                out.append(KeyValue(key, value, rev, rev, 1))
            else:
                c, m, v = rev  # type: ignore[misc]
                out.append(KeyValue(key, value, c, m, v))
        return RangeResult(self._revision, tuple(out), count, len(out) < count)

    def _register(self, index: int, nonce: str) -> str:
        session_id = f"{index}.{nonce}"
        self._open(session_id, index)
        return session_id

    def _open(self, session_id: str, index: int) -> _ClientSession:
        sessions = self._sessions
        state = sessions[session_id] = _ClientSession(index)
        while len(sessions) > self.max_sessions:
            sessions.popitem(last=False)
        return state

    def _apply_in_session(
        self, index: int, command: WriteCommand | Get, session: Session
    ) -> Result:
        sessions = self._sessions
        state = sessions.get(session.client_id)
        if state is None:
            if session.registered:
                return UnknownSession(
                    f"session {session.client_id!r} is unknown or expired; register a new session"
                )
            state = self._open(session.client_id, index)  # a legacy entry of an old log
        else:
            sessions.move_to_end(session.client_id)
            state.last_used = index
        if session.seq < state.floor:
            return CommandError(
                f"stale request: seq {session.seq} of client {session.client_id!r}"
                f" is below its acknowledged seq {state.floor}"
            )
        if session.seq in state.results:
            return state.results[session.seq]
        result = self._execute(command, index)
        state.results[session.seq] = result
        if session.ack > state.floor:
            state.floor = session.ack
            state.results = {s: r for s, r in state.results.items() if s >= state.floor}
        if len(state.results) > self.max_results_per_session:
            kept = sorted(state.results)[-self.max_results_per_session :]
            state.floor = kept[0]
            state.results = {s: state.results[s] for s in kept}
        return result

    def _expire_sessions(self, index: int) -> None:
        horizon = index - self.session_ttl
        sessions = self._sessions
        while sessions:
            client_id, state = next(iter(sessions.items()))
            if state.last_used > horizon:
                break
            del sessions[client_id]

    # ------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Return the whole state (data, revisions, sessions, last applied index) as UTF-8 JSON."""
        return b"".join(self.snapshot_chunks())

    def snapshot_chunks(
        self, batch: int = 20000, piece_bytes: int = SNAPSHOT_PIECE_BYTES
    ) -> Iterator[bytes]:
        """Return the bytes of :meth:`snapshot`, as a lazy series of pieces.

        The state is captured when this is called (shallow copies of the
        data and the revisions, whose entries are immutable); the pieces are
        produced as the iterator is advanced, each of at most ``batch`` keys
        and about ``piece_bytes`` of keys and values (one value more at most),
        so a node can serialize a large state a little at a time without
        stalling its reactor, whatever the size of the values. The document is
        ``{"format", "last_applied", "revision", "sessions", "data": {key:
        value}, "meta": {key: [create, mod, version]}}``.
        """
        if batch < 1 or piece_bytes < 1:
            raise ValueError("batch and piece_bytes must be positive")
        data = dict(self._data)
        meta = dict(self._meta)
        head = self.snapshot_header()

        def objects(mapping: dict[str, object], expand: bool = False) -> Iterator[bytes]:
            items = iter(mapping.items())
            first = True
            while True:
                chunk: dict[str, object] = {}
                size = 0
                for key, value in items:
                    chunk[key] = value
                    size += len(key) + (len(value) if isinstance(value, str) else 16)
                    if len(chunk) >= batch or size >= piece_bytes:
                        break
                if not chunk:
                    break
                if expand:
                    chunk = {k: revisions(v) for k, v in chunk.items()}  # type: ignore[arg-type]
                body = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))[1:-1]
                yield (body if first else "," + body).encode("utf-8")
                first = False

        def pieces() -> Iterator[bytes]:
            yield head
            yield from objects(data)  # type: ignore[arg-type]
            yield b'},"meta":{'
            yield from objects(meta, expand=True)  # type: ignore[arg-type]
            yield b"}}"

        return pieces()

    def snapshot_header(self) -> bytes:
        """Return the snapshot's opening: everything but the data and revisions, which follow."""
        sessions = [
            [
                client_id,
                state.last_used,
                state.floor,
                [[seq, _result_to_json(r)] for seq, r in state.results.items()],
            ]
            for client_id, state in self._sessions.items()
        ]
        head = {
            "format": SNAPSHOT_FORMAT,
            "last_applied": self._last_applied,
            "revision": self._revision,
            "leases": [[lease, ttl, sorted(keys)] for lease, (ttl, keys) in self._leases.items()],
            "sessions": sessions,
        }
        text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
        return (text[:-1] + ',"data":{').encode("utf-8")

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one produced by :meth:`snapshot`.

        A ``leeky-kv/1`` snapshot (before revisions) is restored as the module
        docstring says. Raises ValueError, leaving the state untouched, when
        ``data`` is not a valid snapshot.
        """
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"snapshot is not valid JSON: {e}") from None
        formats = (SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_V1)
        if not isinstance(document, dict) or document.get("format") not in formats:
            raise ValueError(f"not a {SNAPSHOT_FORMAT} snapshot")
        last_applied = document.get("last_applied")
        kv = document.get("data")
        raw_sessions = document.get("sessions")
        if not _is_int(last_applied) or last_applied < 0:
            raise ValueError("snapshot last_applied must be a non-negative integer")
        if not isinstance(kv, dict) or not all(isinstance(v, str) for v in kv.values()):
            raise ValueError("snapshot data must map strings to strings")
        if not isinstance(raw_sessions, list):
            raise ValueError("snapshot sessions must be a list")
        if document["format"] == SNAPSHOT_FORMAT_V1:
            revision = last_applied
            meta: dict[str, Revisions] = dict.fromkeys(kv, revision)
        else:
            revision, meta = _revisions_from_json(document, kv, last_applied)
        sessions: OrderedDict[str, _ClientSession] = OrderedDict()
        for entry in raw_sessions:
            client_id, state = _session_from_json(entry)
            sessions[client_id] = state
        leases, key_lease = _leases_from_json(document.get("leases", []), kv)
        self._leases = leases
        self._key_lease = key_lease
        self._data = kv
        self._meta = meta
        self._revision = revision
        self._sessions = sessions
        self._last_applied = last_applied
        self._sorted = None
        self._notes = {}
        if self._on_restore is not None:
            self._on_restore(revision)


def _leases_from_json(
    raw: object, data: dict[str, str]
) -> tuple[dict[int, tuple[int, set[str]]], dict[str, int]]:
    if not isinstance(raw, list):
        raise ValueError("snapshot leases must be a list")
    leases: dict[int, tuple[int, set[str]]] = {}
    key_lease: dict[str, int] = {}
    for entry in raw:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and _is_int(entry[0])
            and _is_int(entry[1])
            and isinstance(entry[2], list)
            and all(isinstance(k, str) and k in data and k not in key_lease for k in entry[2])
        ):
            raise ValueError("snapshot lease must be [id, ttl, [its keys]]")
        leases[entry[0]] = (entry[1], set(entry[2]))
        key_lease.update(dict.fromkeys(entry[2], entry[0]))
    return leases, key_lease


def _revisions_from_json(
    document: dict[str, object], data: dict[str, str], last_applied: int
) -> tuple[int, dict[str, Revisions]]:
    revision = document.get("revision")
    raw = document.get("meta")
    if not _is_int(revision) or not 0 <= revision <= last_applied:  # type: ignore[operator]
        raise ValueError("snapshot revision must be an integer from 0 to last_applied")
    if not isinstance(raw, dict) or raw.keys() != data.keys():
        raise ValueError("snapshot meta must give the revisions of exactly the keys in data")
    meta: dict[str, Revisions] = {}
    for key, value in raw.items():
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(_is_int(x) for x in value)
            and 1 <= value[0] <= value[1] <= revision  # type: ignore[operator]
            and value[2] >= 1
        ):
            raise ValueError(f"snapshot meta of {key[:40]!r} must be [create, mod, version]")
        create, mod, version = value
        meta[key] = mod if version == 1 and create == mod else (create, mod, version)
    return revision, meta  # type: ignore[return-value]


def _result_to_json(result: Result) -> object:
    if isinstance(result, CommandError):
        return {"error": result.message}
    if isinstance(result, TxnResult):
        return {"txn": result.to_json()}
    return result


def _result_from_json(value: object) -> Result:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict) and isinstance(value.get("error"), str) and len(value) == 1:
        return CommandError(value["error"])
    if isinstance(value, dict) and len(value) == 1 and "txn" in value:
        try:
            return txn_result_from_json(value["txn"])
        except (KeyError, TypeError, ValueError):
            pass
    raise ValueError(f"snapshot holds an unknown result: {value!r:.80}")


def _session_from_json(entry: object) -> tuple[str, _ClientSession]:
    if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)):
        raise ValueError("snapshot session must be [client_id, last_used, floor, results]")
    client_id, last_used, floor, results = entry
    if not (_is_int(last_used) and _is_int(floor) and isinstance(results, list)):
        raise ValueError(f"malformed snapshot session for {client_id!r}")
    state = _ClientSession(last_used, floor)
    for item in results:
        if not (isinstance(item, list) and len(item) == 2 and _is_int(item[0])):
            raise ValueError(f"malformed cached result for {client_id!r}")
        state.results[item[0]] = _result_from_json(item[1])
    return client_id, state
