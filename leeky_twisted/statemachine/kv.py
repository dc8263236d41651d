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
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from zope.interface import implementer

from leeky_twisted.interfaces import IStateMachine
from leeky_twisted.statemachine.commands import (
    Append,
    Cas,
    CommandDecodeError,
    Delete,
    Get,
    Put,
    RegisterSession,
    Session,
    WriteCommand,
    decode_command,
)

__all__ = [
    "SNAPSHOT_FORMAT",
    "CommandError",
    "KeyValueStateMachine",
    "Result",
    "UnknownSession",
]

SNAPSHOT_FORMAT = "leeky-kv/1"


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


Result = None | bool | int | str | CommandError


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
        self._sessions: OrderedDict[str, _ClientSession] = OrderedDict()
        self._last_applied = 0

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
        length, get → the value or None, register → the new session id. A
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
            return self._execute(decoded)
        return self._apply_in_session(index, decoded, session)

    def query(self, request: object) -> str | None:
        """Answer ``commands.Get(key)`` with the value, or None when absent.

        Raises TypeError for any other request.
        """
        if isinstance(request, Get):
            return self._data.get(request.key)
        raise TypeError(f"unsupported query: {request!r}")

    # ----------------------------------------------------------------- apply

    def _execute(self, command: WriteCommand | Get) -> Result:
        data = self._data
        if isinstance(command, Put):
            data[command.key] = command.value
            return None
        if isinstance(command, Delete):
            return data.pop(command.key, None) is not None
        if isinstance(command, Cas):
            if data.get(command.key) != command.expected:
                return False
            data[command.key] = command.new
            return True
        if isinstance(command, Append):
            value = data.get(command.key, "") + command.suffix
            data[command.key] = value
            return len(value)
        return data.get(command.key)

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
        result = self._execute(command)
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
        """Return the whole state (data, sessions, last applied index) as UTF-8 JSON."""
        sessions = [
            [
                client_id,
                state.last_used,
                state.floor,
                [[seq, _result_to_json(r)] for seq, r in state.results.items()],
            ]
            for client_id, state in self._sessions.items()
        ]
        document = {
            "format": SNAPSHOT_FORMAT,
            "last_applied": self._last_applied,
            "data": self._data,
            "sessions": sessions,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def snapshot_chunks(self, batch: int = 20000) -> Iterator[bytes]:
        """Return the same bytes as :meth:`snapshot`, as a lazy series of pieces.

        The state is captured when this is called (a shallow copy of the
        data); the pieces are produced as the iterator is advanced, at most
        ``batch`` keys each, so a node can serialize a large state a little at
        a time without stalling its reactor.
        """
        data = dict(self._data)
        head = self.snapshot_header()

        def pieces() -> Iterator[bytes]:
            yield head
            items = iter(data.items())
            first = True
            while True:
                chunk = dict(islice(items, batch))
                if not chunk:
                    break
                body = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))[1:-1]
                yield (body if first else "," + body).encode("utf-8")
                first = False
            yield b"}}"

        return pieces()

    def snapshot_header(self) -> bytes:
        """Return the snapshot's opening: everything but the data, which follows."""
        sessions = [
            [
                client_id,
                state.last_used,
                state.floor,
                [[seq, _result_to_json(r)] for seq, r in state.results.items()],
            ]
            for client_id, state in self._sessions.items()
        ]
        head = {"format": SNAPSHOT_FORMAT, "last_applied": self._last_applied, "sessions": sessions}
        text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
        return (text[:-1] + ',"data":{').encode("utf-8")

    def restore(self, data: bytes) -> None:
        """Replace the whole state with one produced by :meth:`snapshot`.

        Raises ValueError, leaving the state untouched, when ``data`` is not a
        valid snapshot.
        """
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"snapshot is not valid JSON: {e}") from None
        if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
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
        sessions: OrderedDict[str, _ClientSession] = OrderedDict()
        for entry in raw_sessions:
            client_id, state = _session_from_json(entry)
            sessions[client_id] = state
        self._data = kv
        self._sessions = sessions
        self._last_applied = last_applied


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _result_to_json(result: Result) -> object:
    if isinstance(result, CommandError):
        return {"error": result.message}
    return result


def _result_from_json(value: object) -> Result:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict) and isinstance(value.get("error"), str) and len(value) == 1:
        return CommandError(value["error"])
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
