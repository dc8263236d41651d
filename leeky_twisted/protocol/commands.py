"""The AMP schema of the client API: shared by the server responders and the clients.

Strings travel as :class:`ChunkedText`, because an AMP value is at most 65,535
bytes and values may be up to 1 MiB. Writes carry an optional client session
(``client_id``, ``seq``, ``ack``: see ``statemachine.commands.Session``);
``seq`` and ``ack`` lie in [0, MAX_SEQ].
``forwarded`` is set by a follower that passes a request on to the leader; the
leader then answers NotLeader instead of forwarding again.

A client opens a session with RegisterSession (one log entry) and sends its id
as ``client_id``; a write in a session the cluster does not hold (never
registered, expired, evicted) fails with SessionExpired (``SESSION_EXPIRED``)
and is not applied.

Errors: NotLeader's description carries the leader's id and client address as
JSON, so the client rebuilds ``NotLeader(leader_id, leader_address)`` and can
follow it (see ``protocol.errors``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.protocols import amp

from leeky_twisted.protocol.errors import (
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)

__all__ = [
    "CLIENT_ERRORS",
    "MAX_LEASE_TTL",
    "MAX_RANGE_LIMIT",
    "MAX_SEQ",
    "WATCH_ENDED_REMOVED",
    "AddServer",
    "Append",
    "BoundedInteger",
    "CancelWatch",
    "Cas",
    "ChunkedText",
    "Delete",
    "Get",
    "LeaseGrant",
    "LeaseKeepalive",
    "LeaseRevoke",
    "LeaseTTL",
    "Members",
    "Put",
    "Query",
    "Range",
    "RegisterSession",
    "RemoveServer",
    "Status",
    "Submit",
    "TransferLeader",
    "Txn",
    "Watch",
    "WatchAck",
    "WatchEnded",
    "WatchEvents",
    "describe_bad_arguments",
    "refuse_malformed",
    "request_words",
    "send_watch_events",
    "watch_events_box",
    "watch_events_tail",
]

#: The largest ``seq`` or ``ack`` of a client session (and lease id, revision).
MAX_SEQ = 2**63 - 1
#: The longest lease, in seconds (the state machine's own bound).
MAX_LEASE_TTL = 10**6
#: The most keys one range returns.
MAX_RANGE_LIMIT = 10**9


class ChunkedText(amp.Argument):
    """A text argument of any length, split over several AMP keys.

    The UTF-8 bytes go in pieces of at most 65,535 bytes under ``name``,
    ``name.1``, ``name.2``, ... Decoding never fails: bytes that are not UTF-8
    come out as lone surrogates (``surrogateescape``), which the API rejects
    with a clear InvalidRequest instead of AMP dropping the connection.
    """

    def fromBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        """Collect the pieces of ``name`` from ``strings`` into ``objects``."""
        pieces = []
        first = strings.pop(name, None)
        if first is not None:
            pieces.append(first)
            n = 1
            while (piece := strings.pop(name + b".%d" % n, None)) is not None:
                pieces.append(piece)
                n += 1
        nk = amp._wireNameToPythonIdentifier(name)
        if not pieces:
            if not self.optional:
                raise KeyError(name)
            objects[nk] = None
            return
        objects[nk] = b"".join(pieces).decode("utf-8", "surrogateescape")

    def toBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        """Write ``objects[name]`` into ``strings`` in pieces."""
        nk = amp._wireNameToPythonIdentifier(name)
        value = objects.pop(nk, None) if self.optional else objects.pop(nk)
        if value is None:
            if not self.optional:
                raise TypeError(f"{nk} must not be None")
            return
        data = value.encode("utf-8", "surrogateescape")
        limit = amp.MAX_VALUE_LENGTH
        strings[name] = data[:limit]
        for n, start in enumerate(range(limit, len(data), limit), 1):
            strings[name + b".%d" % n] = data[start : start + limit]


class BoundedInteger(amp.Integer):
    """An integer argument in [``minimum``, ``maximum``]: at most 20 ASCII digits, optional sign.

    Anything else raises ValueError naming the bounds before any large number
    is built; :func:`refuse_malformed` answers it with INVALID_REQUEST.
    """

    def __init__(self, minimum: int = 0, maximum: int = MAX_SEQ, optional: bool = False) -> None:
        super().__init__(optional=optional)
        self.minimum = minimum
        self.maximum = maximum

    def fromString(self, inString: bytes) -> int:  # type: ignore[override]
        """Return the integer ``inString`` spells; ValueError unless it lies within the bounds."""
        digits = inString[1:] if inString[:1] == b"-" else inString
        if 0 < len(digits) <= 20 and digits.isdigit():
            value = int(inString)
            if self.minimum <= value <= self.maximum:
                return value
        raise ValueError(f"expected an integer from {self.minimum} to {self.maximum}")

    def fromBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        """Decode as amp.Integer does; a ValueError names the argument and its bounds."""
        try:
            super().fromBox(name, strings, objects, proto)
        except ValueError:
            shown = name.decode("ascii", "replace")
            raise ValueError(
                f"{shown} must be an integer from {self.minimum} to {self.maximum}"
            ) from None


def request_words(name: bytes) -> str:
    """Return a command's name as a user says it: ``LeaseGrant`` is "lease grant"."""
    text = name.decode("ascii", "replace")[:40]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text).lower()


def describe_bad_arguments(error: Exception) -> str:
    """Return what was wrong with a request's arguments, in a user's words."""
    if isinstance(error, KeyError) and error.args:
        missing = error.args[0]
        if isinstance(missing, bytes):
            missing = missing.decode("ascii", "replace")
        return f"the {str(missing)[:40]} argument is missing"
    if isinstance(error, UnicodeDecodeError):
        return "an argument is not valid UTF-8 text"
    return str(error) or "an argument cannot be read"


def refuse_malformed(
    name: bytes, responder: Callable[[amp.AmpBox], Any] | None
) -> Callable[[amp.AmpBox], Deferred[Any]]:
    """Wrap the located ``responder`` of command ``name`` (None: an unknown command).

    Arguments that do not parse (a missing argument, bad UTF-8, an integer
    out of bounds) are answered INVALID_REQUEST and the connection stays
    open; left to itself, AMP logs a traceback and closes the connection for
    each such box. A box that asks for no answer gets none: its failures
    (and unknown commands) are dropped instead of logged.
    """

    def respond(box: amp.AmpBox) -> Deferred[Any]:
        asked = amp.ASK in box
        if responder is None:
            if not asked:
                return succeed(None)
            why = f"Unhandled Command: {name!r}"[:200]
            return fail(amp.RemoteAmpError(amp.UNHANDLED_ERROR_CODE, why))
        try:
            result: Deferred[Any] = responder(box)
        except Exception as e:  # the responder itself runs later, in a Deferred
            if not asked:
                return succeed(None)
            why = f"invalid {request_words(name)} request: {describe_bad_arguments(e)}"[:200]
            return fail(amp.RemoteAmpError(b"INVALID_REQUEST", why))
        if not asked:
            result.addErrback(lambda _: None)
        return result

    return respond


#: The errors every client command may answer with; LeekyError last, as a catch-all.
CLIENT_ERRORS: dict[type[Exception], bytes] = {
    NotLeader: b"NOT_LEADER",
    CommitTimeout: b"COMMIT_TIMEOUT",
    InvalidRequest: b"INVALID_REQUEST",
    Unavailable: b"UNAVAILABLE",
    NotCommitted: b"NOT_COMMITTED",
    SessionExpired: b"SESSION_EXPIRED",
    Compacted: b"COMPACTED",
    Removed: b"REMOVED",
    LeekyError: b"ERROR",
}

_SESSION = [
    (b"client_id", ChunkedText(optional=True)),
    (b"seq", BoundedInteger(optional=True)),
    (b"ack", BoundedInteger(optional=True)),
    (b"forwarded", amp.Boolean(optional=True)),
]


class RegisterSession(amp.Command):
    """Open a client session (a log entry); ``session`` is its id, for ``client_id``."""

    arguments = [(b"forwarded", amp.Boolean(optional=True))]
    response = [(b"session", amp.Unicode())]
    errors = CLIENT_ERRORS


class Put(amp.Command):
    """Set ``key`` to ``value``; with ``lease``, the key belongs to that lease."""

    arguments = [
        (b"key", ChunkedText()),
        (b"value", ChunkedText()),
        *_SESSION,
        (b"lease", BoundedInteger(1, MAX_SEQ, optional=True)),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = CLIENT_ERRORS


class Get(amp.Command):
    """Read ``key``: ``value`` is absent when the key is. Linearizable unless ``stale``."""

    arguments = [
        (b"key", ChunkedText()),
        (b"stale", amp.Boolean(optional=True)),
        (b"forwarded", amp.Boolean(optional=True)),
    ]
    response = [(b"value", ChunkedText(optional=True))]
    errors = CLIENT_ERRORS


class Delete(amp.Command):
    """Remove ``key``; ``existed`` says whether it was there."""

    arguments = [(b"key", ChunkedText()), *_SESSION]
    response = [(b"existed", amp.Boolean())]
    errors = CLIENT_ERRORS


class Cas(amp.Command):
    """Set ``key`` to ``new`` if it holds ``expected``; no ``expected``: if ``key`` is absent."""

    arguments = [
        (b"key", ChunkedText()),
        (b"expected", ChunkedText(optional=True)),
        (b"new", ChunkedText()),
        *_SESSION,
    ]
    response = [(b"swapped", amp.Boolean())]
    errors = CLIENT_ERRORS


class Append(amp.Command):
    """Append ``suffix`` to the value of ``key``; ``length`` is the new value's length."""

    arguments = [(b"key", ChunkedText()), (b"suffix", ChunkedText()), *_SESSION]
    response = [(b"length", amp.Integer())]
    errors = CLIENT_ERRORS


class Range(amp.Command):
    """Read the keys in [``start``, ``end``) (no end: to the last key), or with
    ``prefix`` every key starting with ``start``; sorted, linearizable unless
    ``stale``. ``result`` is the JSON of a ``statemachine.kv.RangeResult``
    (``revision``, ``kvs``, ``count``, ``more``).
    """

    arguments = [
        (b"start", ChunkedText()),
        (b"end", ChunkedText(optional=True)),
        (b"prefix", amp.Boolean(optional=True)),
        (b"limit", BoundedInteger(0, MAX_RANGE_LIMIT, optional=True)),
        (b"keys_only", amp.Boolean(optional=True)),
        (b"count_only", amp.Boolean(optional=True)),
        (b"stale", amp.Boolean(optional=True)),
        (b"forwarded", amp.Boolean(optional=True)),
    ]
    response = [(b"result", ChunkedText())]
    errors = CLIENT_ERRORS


class Txn(amp.Command):
    """Run the transaction ``txn`` (a JSON document, see ``api.coord``) as one log entry.

    ``result`` is the JSON of a ``statemachine.kv.TxnResult`` (``succeeded``,
    ``revision``, ``responses``).
    """

    arguments = [(b"txn", ChunkedText()), *_SESSION]
    response = [(b"result", ChunkedText())]
    errors = CLIENT_ERRORS


class LeaseGrant(amp.Command):
    """Create a lease of ``ttl`` seconds (a log entry); ``lease`` is its id."""

    arguments = [(b"ttl", BoundedInteger(1, MAX_LEASE_TTL)), *_SESSION]
    response = [(b"lease", amp.Integer())]
    errors = CLIENT_ERRORS


class LeaseRevoke(amp.Command):
    """End ``lease`` and delete its keys (a log entry); ``existed`` says whether it was live."""

    arguments = [(b"lease", BoundedInteger(1, MAX_SEQ)), *_SESSION]
    response = [(b"existed", amp.Boolean())]
    errors = CLIENT_ERRORS


class LeaseKeepalive(amp.Command):
    """Renew ``lease`` for its ttl from now (the leader does); ``ttl`` is that ttl.

    An expired or revoked lease is INVALID_REQUEST ("lease N not found").
    """

    arguments = [(b"lease", BoundedInteger(1, MAX_SEQ)), (b"forwarded", amp.Boolean(optional=True))]
    response = [(b"ttl", amp.Integer())]
    errors = CLIENT_ERRORS


class LeaseTTL(amp.Command):
    """Describe ``lease``: ``result`` is JSON ``{"id", "ttl", "remaining", "keys"}``."""

    arguments = [(b"lease", BoundedInteger(1, MAX_SEQ)), (b"forwarded", amp.Boolean(optional=True))]
    response = [(b"result", ChunkedText())]
    errors = CLIENT_ERRORS


class Watch(amp.Command):
    """Watch the keys in [``start``, ``end``) (or with ``prefix``) from ``start_revision``.

    No ``start_revision`` (or 0): from the next revision. The answer gives
    the watch's id and the revision it starts at; the node then sends
    WatchEvents on this connection (after the answer), and WatchEnded if it
    ends the watch. Fails with COMPACTED when the node no longer holds
    events that old.

    ``batched_acks`` (optional; older nodes ignore it): the client would
    rather acknowledge events with :class:`WatchAck` than answer every
    WatchEvents. A node that agrees answers ``ack_every`` (optional; older
    clients ignore it): it then sends this watch's events asking no answer,
    and the client sends a WatchAck once that many events are unacknowledged
    and soon after the last one (the node's progress notes, which still ask
    for answers, go only to watchers with nothing unacknowledged).
    """

    arguments = [
        (b"start", ChunkedText()),
        (b"end", ChunkedText(optional=True)),
        (b"prefix", amp.Boolean(optional=True)),
        (b"start_revision", BoundedInteger(0, MAX_SEQ, optional=True)),
        (b"batched_acks", amp.Boolean(optional=True)),
    ]
    response = [
        (b"watch_id", amp.Integer()),
        (b"start_revision", amp.Integer()),
        (b"ack_every", amp.Integer(optional=True)),
    ]
    errors = CLIENT_ERRORS


class WatchAck(amp.Command):
    """Client → node: the client has taken ``count`` more events of ``watch_id``.

    Only for a watch whose Watch answer gave ``ack_every``; no answer.
    """

    arguments = [(b"watch_id", BoundedInteger(0, MAX_SEQ)), (b"count", BoundedInteger(0, MAX_SEQ))]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    requiresAnswer = False


class CancelWatch(amp.Command):
    """End the watch ``watch_id`` of this connection (unknown ids are ignored)."""

    arguments = [(b"watch_id", BoundedInteger(0, MAX_SEQ))]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = CLIENT_ERRORS


class WatchEvents(amp.Command):
    """Node → client: ``events`` (a JSON list, whole revisions, in order) of ``watch_id``.

    ``next_revision``: the watch has had every matching event below it (with
    no events, a progress note). The client answers once it has taken them.
    """

    arguments = [
        (b"watch_id", amp.Integer()),
        (b"events", ChunkedText()),
        (b"next_revision", amp.Integer()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []


def send_watch_events(
    proto: amp.BoxDispatcher, watch_id: int, events: bytes, next_revision: int, ask: bool = True
) -> Deferred[amp.AmpBox] | None:
    """Send a WatchEvents box (``events``: the UTF-8 JSON list) straight to ``proto``.

    The same box as ``callRemote(WatchEvents, ...)`` sends, without building
    an ``amp.Command`` (which costs several times the box): a node sends one
    per watcher per event. Fires with the answer box, or fails as callRemote;
    without ``ask``, the box asks for no answer and None is returned.
    """
    box = amp.AmpBox()
    box[b"watch_id"] = b"%d" % watch_id
    limit = amp.MAX_VALUE_LENGTH
    box[b"events"] = events[:limit]
    for n, start in enumerate(range(limit, len(events), limit), 1):
        box[b"events.%d" % n] = events[start : start + limit]
    box[b"next_revision"] = b"%d" % next_revision
    d: Deferred[amp.AmpBox] | None = proto._sendBoxCommand(b"WatchEvents", box, ask)
    return d


def watch_events_tail(events: bytes, next_revision: int) -> bytes:
    """Return the wire bytes of a WatchEvents box after its ``_ask`` and ``watch_id``.

    The command, ``events`` (the UTF-8 JSON list, in pieces as ChunkedText
    sends it), ``next_revision`` and the end of the box: the part every
    watcher of one batch shares, built once for all of them
    (:func:`watch_events_box` adds the rest).
    """
    limit = amp.MAX_VALUE_LENGTH
    parts = [_WATCH_EVENTS_COMMAND]
    for n, start in enumerate(range(0, max(len(events), 1), limit)):
        key = b"events.%d" % n if n else b"events"
        chunk = events[start : start + limit]
        parts += [_U16.pack(len(key)), key, _U16.pack(len(chunk)), chunk]
    revision = b"%d" % next_revision
    parts += [b"\x00\x0dnext_revision", _U16.pack(len(revision)), revision, b"\x00\x00"]
    return b"".join(parts)


def watch_events_box(tag: bytes | None, watch_id: int, tail: bytes) -> bytes:
    """Return a whole WatchEvents box on the wire: ``_ask`` ``tag``, ``watch_id``, then ``tail``.

    The same box :func:`send_watch_events` sends (AMP reads a box's keys in
    any order), for a ``tail`` from :func:`watch_events_tail`. ``tag`` None:
    a box that asks for no answer.
    """
    wid = b"%d" % watch_id
    if tag is None:
        return b"\x00\x08watch_id\x00%c%s%s" % (len(wid), wid, tail)
    return b"\x00\x04_ask\x00%c%s\x00\x08watch_id\x00%c%s%s" % (
        len(tag),
        tag,
        len(wid),
        wid,
        tail,
    )


_U16 = struct.Struct("!H")
_WATCH_EVENTS_COMMAND = b"\x00\x08_command\x00\x0bWatchEvents"


#: How a WatchEnded (or an SSE ``cancelled`` event) reason starts when the node learned
#: it was removed from the cluster: the rest is the Removed error new requests get. A
#: client does not ask that node again (reasons starting ``compacted`` are the other kind
#: a client must not resume from).
WATCH_ENDED_REMOVED = "removed: "


class WatchEnded(amp.Command):
    """Node → client: the node ended ``watch_id`` for ``reason`` (no more events follow).

    A reason starting :data:`WATCH_ENDED_REMOVED` says the node was removed.
    """

    arguments = [(b"watch_id", amp.Integer()), (b"reason", ChunkedText())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    requiresAnswer = False


class Status(amp.Command):
    """Return this node's status dictionary as JSON text."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"status", ChunkedText())]
    errors = CLIENT_ERRORS


class Members(amp.Command):
    """Return every known node (gossip state and Raft role) as JSON text."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    response = [(b"members", ChunkedText())]
    errors = CLIENT_ERRORS


class AddServer(amp.Command):
    """Add ``node_id`` at peer ``address`` as a learner, or as a voter with ``voter``.

    Adding a voter that is already a learner promotes it. Leader only.
    """

    arguments = [
        (b"node_id", amp.Unicode()),
        (b"address", amp.Unicode(optional=True)),
        (b"voter", amp.Boolean(optional=True)),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = CLIENT_ERRORS


class RemoveServer(amp.Command):
    """Remove ``node_id`` (voter or learner) from the configuration. Leader only."""

    arguments = [(b"node_id", amp.Unicode())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = CLIENT_ERRORS


class TransferLeader(amp.Command):
    """Hand leadership to the voter ``node_id``. Leader only."""

    arguments = [(b"node_id", amp.Unicode())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = []
    errors = CLIENT_ERRORS


class Submit(amp.Command):
    """Replicate a raw command string; ``result`` is the state machine's result as JSON."""

    arguments = [(b"command", ChunkedText()), (b"forwarded", amp.Boolean(optional=True))]
    response = [(b"result", ChunkedText())]
    errors = CLIENT_ERRORS


class Query(amp.Command):
    """Answer a raw read-only request (linearizable); ``result`` is JSON."""

    arguments = [(b"request", ChunkedText()), (b"forwarded", amp.Boolean(optional=True))]
    response = [(b"result", ChunkedText())]
    errors = CLIENT_ERRORS
