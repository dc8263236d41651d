"""Encode core messages to compact bytes and back, for the peer transport.

Every message is one tag byte, a fixed header and its variable parts::

    tag:u8  sender_len:u16  recipient_len:u16  sender  recipient  body

Integers are unsigned 64-bit big-endian, node ids are UTF-8, booleans are bits
of one flags byte (unknown bits are rejected). ``AppendEntries`` carries its
entries as length-prefixed records (``index:u64 term:u64 kind:u8 len:u32
data``); ``InstallSnapshot`` carries the voter and learner ids of its
configuration as length-prefixed strings, sorted so the encoding is canonical.
A :class:`~leeky_twisted.transport.notices.RemovedNotice` (not a core message:
the node reads it, the core never sees it) is encoded the same way, its body
the index of the removal. The ``eager`` field of append and heartbeat answers
is not encoded here (it decodes as false): it travels as an AMP argument of its own, which a node of
an earlier version ignores (:mod:`~leeky_twisted.transport.peer_commands`).

:func:`decode` treats its input as untrusted: anything malformed raises
:class:`CodecError` and nothing else. A well-formed message holding a value no
valid peer sends (a term above ``MAX_TERM``, an index above ``MAX_INDEX``,
entries that do not follow ``prev_log_index``: see
:func:`~leeky_twisted.core.messages.bounds_error`) raises its subclass
:class:`OutOfBounds`, so no such value reaches the core or the disk.

:class:`LargeBytes` is the AMP argument type that carries encoded messages:
AMP caps each value at 65,535 bytes, so it spreads longer values over several
keys of the same box (``m``, ``m.1``, ``m.2``, ...).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.protocols import amp

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_STORAGE_ID,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
    bounds_error,
)
from leeky_twisted.transport.notices import RemovedNotice

__all__ = [
    "TAGS",
    "CodecError",
    "LargeBytes",
    "OutOfBounds",
    "PeerMessage",
    "decode",
    "encode",
    "put_large",
]


class CodecError(ValueError):
    """Bytes that are not a valid encoded message, or a message that cannot be encoded."""


class OutOfBounds(CodecError):
    """A well-formed message holding a value no valid peer sends; refuse the message."""


#: The tag byte of each message type. Never reuse a number: add new ones.
TAGS: dict[type, int] = {
    RequestVote: 1,
    RequestVoteResponse: 2,
    AppendEntries: 3,
    AppendEntriesResponse: 4,
    Heartbeat: 5,
    HeartbeatResponse: 6,
    InstallSnapshot: 7,
    TimeoutNow: 8,
    RemovedNotice: 9,
    ReadIndexRequest: 10,
    ReadIndexResponse: 11,
}

#: What travels between peers: a core message, or a notice the node reads itself.
PeerMessage = Message | RemovedNotice

_PREFIX = struct.Struct("!BHH")  # tag, sender length, recipient length
_U16 = struct.Struct("!H")
_RV = struct.Struct("!QQQB")  # term, last_log_index, last_log_term, flags
_RVR = struct.Struct("!QBQ")  # term, flags, storage
# term, prev_log_index, prev_log_term, leader_commit, to_storage, count
_AE = struct.Struct("!QQQQQI")
_ENTRY = struct.Struct("!QQBI")  # index, term, kind, data length
# term, flags, match, reject, conflict_term, conflict_index, storage
_AER = struct.Struct("!QBQQQQQ")
_QQQ = struct.Struct("!QQQ")  # heartbeat
# heartbeat response: term, read_round, last_log_index, storage, flags
_HBR = struct.Struct("!QQQQB")
_IS = struct.Struct("!QQQHH")  # term, meta index, meta term, voters, learners
_Q = struct.Struct("!Q")  # timeout now
_QQ = struct.Struct("!QQ")  # read index request: term, request

_KINDS: dict[int, EntryKind] = {int(kind): kind for kind in EntryKind}

# RequestVote flags
_PRE_VOTE = 1
_TRANSFER = 2
# RequestVoteResponse flags
_GRANTED = 1
_RESP_PRE_VOTE = 2
_RESP_ABSTAINING = 4
# AppendEntriesResponse flags
_SUCCESS = 1
_AER_ABSTAINING = 2
# HeartbeatResponse flags
_ABSTAINING = 1


# --------------------------------------------------------------------- encoding


def _node(node_id: str) -> bytes:
    raw = node_id.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise CodecError(f"node id longer than 65535 bytes: {node_id[:20]!r}...")
    return raw


def _ids(ids: frozenset[NodeId]) -> list[bytes]:
    parts = []
    for raw in sorted(_node(i) for i in ids):
        parts.append(_U16.pack(len(raw)))
        parts.append(raw)
    return parts


def _body_request_vote(m: RequestVote) -> list[bytes]:
    flags = (_PRE_VOTE if m.pre_vote else 0) | (_TRANSFER if m.transfer else 0)
    return [_RV.pack(m.term, m.last_log_index, m.last_log_term, flags)]


def _body_request_vote_response(m: RequestVoteResponse) -> list[bytes]:
    flags = (
        (_GRANTED if m.granted else 0)
        | (_RESP_PRE_VOTE if m.pre_vote else 0)
        | (_RESP_ABSTAINING if m.abstaining else 0)
    )
    return [_RVR.pack(m.term, flags, m.storage)]


def _body_append_entries(m: AppendEntries) -> list[bytes]:
    entries = m.entries
    parts = [
        _AE.pack(
            m.term, m.prev_log_index, m.prev_log_term, m.leader_commit, m.to_storage, len(entries)
        )
    ]
    append = parts.append
    pack = _ENTRY.pack
    kinds = _KINDS
    for e in entries:
        data = e.data
        if e.kind not in kinds:
            raise CodecError(f"entry {e.index} has unknown kind {e.kind!r}")
        append(pack(e.index, e.term, e.kind, len(data)))
        append(data)
    return parts


def _body_append_entries_response(m: AppendEntriesResponse) -> list[bytes]:
    return [
        _AER.pack(
            m.term,
            (_SUCCESS if m.success else 0) | (_AER_ABSTAINING if m.abstaining else 0),
            m.match_index,
            m.reject_index,
            m.conflict_term,
            m.conflict_index,
            m.storage,
        )
    ]


def _body_heartbeat(m: Heartbeat) -> list[bytes]:
    return [_QQQ.pack(m.term, m.commit, m.read_round)]


def _body_heartbeat_response(m: HeartbeatResponse) -> list[bytes]:
    return [
        _HBR.pack(
            m.term, m.read_round, m.last_log_index, m.storage, _ABSTAINING if m.abstaining else 0
        )
    ]


def _body_install_snapshot(m: InstallSnapshot) -> list[bytes]:
    meta = m.meta
    config = meta.config
    voters = _ids(config.voters)
    learners = _ids(config.learners)
    header = _IS.pack(m.term, meta.index, meta.term, len(voters) // 2, len(learners) // 2)
    seats = [_U16.pack(len(config.storage))]
    for nid, storage in config.storage:  # sorted by node id
        raw = _node(nid)
        seats += [_U16.pack(len(raw)), raw, _Q.pack(storage)]
    return [header, *voters, *learners, *seats]


def _body_timeout_now(m: TimeoutNow) -> list[bytes]:
    return [_Q.pack(m.term)]


def _body_read_index_request(m: ReadIndexRequest) -> list[bytes]:
    return [_QQ.pack(m.term, m.request)]


def _body_read_index_response(m: ReadIndexResponse) -> list[bytes]:
    return [_QQQ.pack(m.term, m.request, m.index)]


def _body_removed_notice(m: RemovedNotice) -> list[bytes]:
    return [_Q.pack(m.index)]


_ENCODERS: dict[type, Callable[[Any], list[bytes]]] = {
    RequestVote: _body_request_vote,
    RequestVoteResponse: _body_request_vote_response,
    AppendEntries: _body_append_entries,
    AppendEntriesResponse: _body_append_entries_response,
    Heartbeat: _body_heartbeat,
    HeartbeatResponse: _body_heartbeat_response,
    InstallSnapshot: _body_install_snapshot,
    TimeoutNow: _body_timeout_now,
    RemovedNotice: _body_removed_notice,
    ReadIndexRequest: _body_read_index_request,
    ReadIndexResponse: _body_read_index_response,
}


def encode(message: PeerMessage) -> bytes:
    """Return the compact binary form of ``message``.

    Raises CodecError when ``message`` is not a core message or holds a value
    that does not fit the format (a negative or >= 2**64 integer, an entry
    kind or node id that cannot be encoded).
    """
    cls = type(message)
    body = _ENCODERS.get(cls)
    if body is None:
        raise CodecError(f"not a core message: {cls.__name__}")
    try:
        sender = _node(message.sender)
        recipient = _node(message.recipient)
        parts = body(message)
        return b"".join(
            (_PREFIX.pack(TAGS[cls], len(sender), len(recipient)), sender, recipient, *parts)
        )
    except CodecError:
        raise
    except (struct.error, TypeError, ValueError, AttributeError) as e:
        raise CodecError(f"cannot encode {cls.__name__}: {e}") from e


# --------------------------------------------------------------------- decoding


def _text(raw: bytes) -> NodeId:
    try:
        return NodeId(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CodecError(f"node id is not UTF-8: {raw[:20]!r}") from e


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise CodecError(
            f"truncated {what}: need {size} bytes at offset {offset}, have {len(data) - offset}"
        )


def _done(data: bytes, offset: int, what: str) -> None:
    if offset != len(data):
        raise CodecError(f"{len(data) - offset} bytes of trailing garbage after {what}")


def _flags(value: int, allowed: int, what: str) -> int:
    if value & ~allowed:
        raise CodecError(f"unknown flag bits {value:#04x} in {what}")
    return value


def _decode_request_vote(s: NodeId, r: NodeId, data: bytes, off: int) -> RequestVote:
    _need(data, off, _RV.size, "RequestVote")
    term, last_index, last_term, flags = _RV.unpack_from(data, off)
    _done(data, off + _RV.size, "RequestVote")
    _flags(flags, _PRE_VOTE | _TRANSFER, "RequestVote")
    return RequestVote(
        s, r, term, last_index, last_term, bool(flags & _PRE_VOTE), bool(flags & _TRANSFER)
    )


def _decode_request_vote_response(
    s: NodeId, r: NodeId, data: bytes, off: int
) -> RequestVoteResponse:
    _need(data, off, _RVR.size, "RequestVoteResponse")
    term, flags, storage = _RVR.unpack_from(data, off)
    _done(data, off + _RVR.size, "RequestVoteResponse")
    _flags(flags, _GRANTED | _RESP_PRE_VOTE | _RESP_ABSTAINING, "RequestVoteResponse")
    return RequestVoteResponse(
        s,
        r,
        term,
        bool(flags & _GRANTED),
        bool(flags & _RESP_PRE_VOTE),
        storage,
        bool(flags & _RESP_ABSTAINING),
    )


def _decode_append_entries(s: NodeId, r: NodeId, data: bytes, off: int) -> AppendEntries:
    _need(data, off, _AE.size, "AppendEntries")
    term, prev_index, prev_term, commit, to_storage, count = _AE.unpack_from(data, off)
    off += _AE.size
    end = len(data)
    if count * _ENTRY.size > end - off:
        raise CodecError(f"AppendEntries claims {count} entries but has {end - off} bytes")
    unpack = _ENTRY.unpack_from
    size = _ENTRY.size
    kinds = _KINDS
    entries: list[Entry] = []
    append = entries.append
    for _ in range(count):
        if off + size > end:
            raise CodecError(f"truncated entry header at offset {off}")
        index, eterm, kind, length = unpack(data, off)
        off += size
        stop = off + length
        if stop > end:
            raise CodecError(f"entry {index} claims {length} bytes, {end - off} left")
        k = kinds.get(kind)
        if k is None:
            raise CodecError(f"entry {index} has unknown kind {kind}")
        append(Entry(index, eterm, k, data[off:stop]))
        off = stop
    _done(data, off, "AppendEntries")
    return AppendEntries(s, r, term, prev_index, prev_term, tuple(entries), commit, to_storage)


def _decode_append_entries_response(
    s: NodeId, r: NodeId, data: bytes, off: int
) -> AppendEntriesResponse:
    _need(data, off, _AER.size, "AppendEntriesResponse")
    term, flags, match, reject, conflict_term, conflict_index, storage = _AER.unpack_from(data, off)
    _done(data, off + _AER.size, "AppendEntriesResponse")
    _flags(flags, _SUCCESS | _AER_ABSTAINING, "AppendEntriesResponse")
    return AppendEntriesResponse(
        s,
        r,
        term,
        bool(flags & _SUCCESS),
        match,
        reject,
        conflict_term,
        conflict_index,
        storage,
        bool(flags & _AER_ABSTAINING),
    )


def _decode_heartbeat(s: NodeId, r: NodeId, data: bytes, off: int) -> Heartbeat:
    _need(data, off, _QQQ.size, "Heartbeat")
    term, commit, read_round = _QQQ.unpack_from(data, off)
    _done(data, off + _QQQ.size, "Heartbeat")
    return Heartbeat(s, r, term, commit, read_round)


def _decode_heartbeat_response(s: NodeId, r: NodeId, data: bytes, off: int) -> HeartbeatResponse:
    _need(data, off, _HBR.size, "HeartbeatResponse")
    term, read_round, last_index, storage, flags = _HBR.unpack_from(data, off)
    _done(data, off + _HBR.size, "HeartbeatResponse")
    _flags(flags, _ABSTAINING, "HeartbeatResponse")
    return HeartbeatResponse(s, r, term, read_round, last_index, storage, bool(flags & _ABSTAINING))


def _decode_ids(data: bytes, off: int, count: int, what: str) -> tuple[frozenset[NodeId], int]:
    ids = []
    previous = None
    for _ in range(count):
        _need(data, off, 2, what)
        (length,) = _U16.unpack_from(data, off)
        off += 2
        _need(data, off, length, what)
        raw = data[off : off + length]
        off += length
        if previous is not None and raw <= previous:
            raise CodecError(f"{what} ids are not sorted and unique")
        previous = raw
        ids.append(_text(raw))
    return frozenset(ids), off


def _decode_install_snapshot(s: NodeId, r: NodeId, data: bytes, off: int) -> InstallSnapshot:
    _need(data, off, _IS.size, "InstallSnapshot")
    term, index, meta_term, n_voters, n_learners = _IS.unpack_from(data, off)
    off += _IS.size
    voters, off = _decode_ids(data, off, n_voters, "voter")
    learners, off = _decode_ids(data, off, n_learners, "learner")
    seats: list[tuple[NodeId, int]] = []
    _need(data, off, 2, "InstallSnapshot seats")
    (count,) = _U16.unpack_from(data, off)
    off += 2
    for _ in range(count):
        nids, off = _decode_ids(data, off, 1, "seat")
        _need(data, off, _Q.size, "seat storage")
        (storage,) = _Q.unpack_from(data, off)
        off += _Q.size
        (nid,) = nids
        if nid not in voters or storage > MAX_STORAGE_ID:
            what = f"seat of {nid!r:.40} bound to {storage}"
            raise CodecError(f"{what}: not a voter, or too big")
        if seats and nid <= seats[-1][0]:
            raise CodecError("seats are not sorted and unique")
        seats.append((nid, storage))
    _done(data, off, "InstallSnapshot")
    config = Configuration(voters, learners, tuple(seats))
    return InstallSnapshot(s, r, term, SnapshotMeta(index, meta_term, config))


def _decode_timeout_now(s: NodeId, r: NodeId, data: bytes, off: int) -> TimeoutNow:
    _need(data, off, _Q.size, "TimeoutNow")
    (term,) = _Q.unpack_from(data, off)
    _done(data, off + _Q.size, "TimeoutNow")
    return TimeoutNow(s, r, term)


def _decode_read_index_request(s: NodeId, r: NodeId, data: bytes, off: int) -> ReadIndexRequest:
    _need(data, off, _QQ.size, "ReadIndexRequest")
    term, request = _QQ.unpack_from(data, off)
    _done(data, off + _QQ.size, "ReadIndexRequest")
    return ReadIndexRequest(s, r, term, request)


def _decode_read_index_response(s: NodeId, r: NodeId, data: bytes, off: int) -> ReadIndexResponse:
    _need(data, off, _QQQ.size, "ReadIndexResponse")
    term, request, index = _QQQ.unpack_from(data, off)
    _done(data, off + _QQQ.size, "ReadIndexResponse")
    return ReadIndexResponse(s, r, term, request, index)


def _decode_removed_notice(s: NodeId, r: NodeId, data: bytes, off: int) -> RemovedNotice:
    _need(data, off, _Q.size, "RemovedNotice")
    (index,) = _Q.unpack_from(data, off)
    _done(data, off + _Q.size, "RemovedNotice")
    if not 0 < index <= MAX_INDEX:
        raise OutOfBounds(f"RemovedNotice refused: index {index} outside [1, {MAX_INDEX}]")
    return RemovedNotice(s, r, index)


_DECODERS: dict[int, Callable[[NodeId, NodeId, bytes, int], Any]] = {
    TAGS[RequestVote]: _decode_request_vote,
    TAGS[RequestVoteResponse]: _decode_request_vote_response,
    TAGS[AppendEntries]: _decode_append_entries,
    TAGS[AppendEntriesResponse]: _decode_append_entries_response,
    TAGS[Heartbeat]: _decode_heartbeat,
    TAGS[HeartbeatResponse]: _decode_heartbeat_response,
    TAGS[InstallSnapshot]: _decode_install_snapshot,
    TAGS[TimeoutNow]: _decode_timeout_now,
    TAGS[RemovedNotice]: _decode_removed_notice,
    TAGS[ReadIndexRequest]: _decode_read_index_request,
    TAGS[ReadIndexResponse]: _decode_read_index_response,
}


def decode(data: bytes) -> PeerMessage:
    """Parse bytes produced by :func:`encode` and return the message.

    ``data`` is untrusted: wrong lengths, unknown tags, flags or entry kinds,
    invalid UTF-8 and trailing bytes all raise CodecError; a value out of
    bounds raises OutOfBounds (a CodecError). No other exception escapes.
    """
    try:
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                raise CodecError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        _need(data, 0, _PREFIX.size, "message prefix")
        tag, sender_len, recipient_len = _PREFIX.unpack_from(data, 0)
        decoder = _DECODERS.get(tag)
        if decoder is None:
            raise CodecError(f"unknown message tag {tag}")
        off = _PREFIX.size
        _need(data, off, sender_len + recipient_len, "node ids")
        sender = _text(data[off : off + sender_len])
        off += sender_len
        recipient = _text(data[off : off + recipient_len])
        off += recipient_len
        message: PeerMessage = decoder(sender, recipient, data, off)
        if isinstance(message, RemovedNotice):
            return message  # its decoder checked its one value
        problem = bounds_error(message)
        if problem is not None:
            raise OutOfBounds(f"{type(message).__name__} refused: {problem}")
        return message
    except CodecError:
        raise
    except Exception as e:  # a decoder bug must still surface as CodecError
        raise CodecError(f"malformed message: {e!r}") from e


# ---------------------------------------------------------------- AMP argument


class LargeBytes(amp.Argument):
    """An AMP argument holding bytes of any length.

    A value longer than ``amp.MAX_VALUE_LENGTH`` is split over several keys of
    the same box: ``name``, ``name.1``, ``name.2`` and so on, joined again on
    receipt. The receiving protocol bounds the size of a whole box.
    """

    def fromBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        """Join ``name``, ``name.1``, ... from ``strings`` into ``objects[name]``."""
        first = strings.pop(name)  # KeyError: the argument is missing
        parts = [first]
        n = 1
        while True:
            part = strings.pop(b"%s.%d" % (name, n), None)
            if part is None:
                break
            parts.append(part)
            n += 1
        objects[name.decode("ascii")] = first if n == 1 else b"".join(parts)

    def toBox(
        self, name: bytes, strings: dict[bytes, bytes], objects: dict[str, Any], proto: Any
    ) -> None:
        """Split ``objects[name]`` into ``strings`` as ``name``, ``name.1``, ..."""
        put_large(strings, name, objects[name.decode("ascii")])


def put_large(box: dict[bytes, bytes], name: bytes, value: bytes) -> None:
    """Store ``value`` in ``box`` under ``name`` the way :class:`LargeBytes` reads it."""
    limit = amp.MAX_VALUE_LENGTH
    if len(value) <= limit:
        box[name] = value
        return
    view = memoryview(value)
    box[name] = bytes(view[:limit])
    n = 1
    for start in range(limit, len(value), limit):
        box[b"%s.%d" % (name, n)] = bytes(view[start : start + limit])
        n += 1
