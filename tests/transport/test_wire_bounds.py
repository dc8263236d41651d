"""Hostile peers: out-of-bounds values are refused at decode, before the core or the disk.

Issue 19, finding 3: one RequestVote with term 2**64-1 used to brick a whole
cluster (every node went to that term, persisted it, and could not encode its
own next RequestVote). The boxes here are written by hand, as an attacker
would, never through the normal encoder.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peer_strategies import any_message
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.protocols import amp

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_TERM,
    AppendEntries,
    Configuration,
    Entry,
    Heartbeat,
    InstallSnapshot,
    NodeId,
    RequestVote,
    SnapshotMeta,
    bounds_error,
)
from leeky_twisted.transport.codec import TAGS, CodecError, OutOfBounds, decode, encode
from leeky_twisted.transport.peer_commands import HeartbeatCmd
from leeky_twisted.transport.peer_protocol import (
    MESSAGE_COMMANDS,
    REFUSAL_LOG_INTERVAL,
    PeerInbox,
    PeerServerFactory,
    frame_message,
)

CLUSTER = "c1"
N1, N2 = NodeId("n1"), NodeId("n2")
HUGE = 2**64 - 1


def _box(**values: bytes) -> bytes:
    return amp.AmpBox({k.encode(): v for k, v in values.items()}).serialize()


HELLO_N1 = _box(_command=b"Hello", _ask=b"1", cluster_id=CLUSTER.encode(), node_id=b"n1")


def _prefix(kind: type) -> bytes:
    return struct.pack("!BHH", TAGS[kind], 2, 2) + b"n1n2"


def raw_request_vote(term: int, last_index: int = 0, last_term: int = 0) -> bytes:
    """Return an encoded RequestVote n1 -> n2 built by hand (no bounds on the values)."""
    return _prefix(RequestVote) + struct.pack("!QQQB", term, last_index, last_term, 0)


def raw_heartbeat(term: int, commit: int = 0, read_round: int = 0) -> bytes:
    """Return an encoded Heartbeat n1 -> n2 built by hand."""
    return _prefix(Heartbeat) + struct.pack("!QQQ", term, commit, read_round)


def raw_append_entries(term: int, prev_index: int, prev_term: int, commit: int, *entries) -> bytes:
    """Return an encoded AppendEntries n1 -> n2 built by hand; ``entries`` are (index, term)."""
    body = struct.pack("!QQQQQI", term, prev_index, prev_term, commit, 0, len(entries))
    for index, entry_term in entries:
        body += struct.pack("!QQBI", index, entry_term, 0, 1) + b"x"
    return _prefix(AppendEntries) + body


#: Hand-built payloads no valid peer sends, with the command that carries each.
ATTACKS = {
    "RequestVote term 2**64-1": (b"RequestVoteCmd", raw_request_vote(HUGE)),
    "RequestVote term 2**63": (b"RequestVoteCmd", raw_request_vote(MAX_TERM + 1)),
    "RequestVote last_log_term above term": (b"RequestVoteCmd", raw_request_vote(5, 9, 6)),
    "RequestVote last_log_index 2**64-1": (b"RequestVoteCmd", raw_request_vote(5, HUGE, 5)),
    "Heartbeat term 2**64-1": (b"HeartbeatCmd", raw_heartbeat(HUGE)),
    "Heartbeat commit 2**64-1": (b"HeartbeatCmd", raw_heartbeat(5, HUGE)),
    "Heartbeat read_round 2**62+1": (b"HeartbeatCmd", raw_heartbeat(5, 0, MAX_INDEX + 1)),
    "AppendEntries term 2**64-1": (b"AppendEntriesCmd", raw_append_entries(HUGE, 0, 0, 0)),
    "AppendEntries entry term 2**64-1": (
        b"AppendEntriesCmd",
        raw_append_entries(5, 0, 0, 0, (1, HUGE)),
    ),
    "AppendEntries entry term above the message's": (
        b"AppendEntriesCmd",
        raw_append_entries(5, 0, 0, 0, (1, 6)),
    ),
    "AppendEntries entries with a gap": (
        b"AppendEntriesCmd",
        raw_append_entries(5, 0, 0, 0, (1, 5), (3, 5)),
    ),
    "AppendEntries entry index past MAX_INDEX": (
        b"AppendEntriesCmd",
        raw_append_entries(5, MAX_INDEX, 5, 0, (MAX_INDEX + 1, 5)),
    ),
    "AppendEntries leader_commit 2**64-1": (
        b"AppendEntriesCmd",
        raw_append_entries(5, 0, 0, HUGE),
    ),
}


class Receiver:
    """An inbox for node n2 whose receiver records every message that reaches it."""

    def __init__(self, capture, clock=None):
        self.received: list = []
        self.inbox = PeerInbox(
            CLUSTER,
            N2,
            lambda node: node == N1,
            lambda meta, data: None,
            log=capture.log,
            clock=clock,
        )
        self.inbox.receiver = self.received.append
        self.factory = PeerServerFactory(self.inbox)

    def connect(self):
        """Return an accepted protocol on a StringTransport, after n1's Hello."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(HELLO_N1)
        assert protocol.peer_id == N1
        return protocol, transport


def test_huge_term_is_refused_at_decode(capture):
    """A RequestVote with term 2**64-1 never reaches the receiver; the connection lives on."""
    receiver = Receiver(capture)
    protocol, transport = receiver.connect()
    attack = _box(_command=b"RequestVoteCmd", m=raw_request_vote(HUGE))
    good = Heartbeat(N1, N2, 3, 1)
    protocol.dataReceived(attack + frame_message(good))
    assert receiver.received == [good]
    assert not transport.disconnecting
    assert receiver.inbox.refused == {N1: 1}
    assert any(f"term {HUGE}" in line for line in capture.lines(LogLevel.warn))


@pytest.mark.parametrize("feed", ["whole", "byte_at_a_time"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_out_of_bounds_message_never_reaches_the_receiver(capture, name, feed):
    """Each hand-built impossible message is refused on both receive paths, alone."""
    command, payload = ATTACKS[name]
    receiver = Receiver(capture)
    protocol, transport = receiver.connect()
    good = Heartbeat(N1, N2, 3, 1)
    data = _box(_command=command, m=payload) + frame_message(good)
    if feed == "whole":  # many boxes in one read
        protocol.dataReceived(data)
    else:  # AMP's own parser
        for i in range(len(data)):
            protocol.dataReceived(data[i : i + 1])
    assert receiver.received == [good]
    assert not transport.disconnecting
    assert receiver.inbox.refused == {N1: 1}


def test_out_of_bounds_snapshot_chunk_drops_the_connection(capture):
    """An InstallSnapshot with term 2**64-1 is not stored or delivered; its chunk is refused."""
    stored: list = []
    receiver = Receiver(capture)
    receiver.inbox._snapshot_receiver = lambda meta, data: stored.append(meta)
    protocol, transport = receiver.connect()
    install = _prefix(InstallSnapshot) + struct.pack("!QQQHH", HUGE, 5, 1, 0, 0)
    protocol.dataReceived(
        _box(
            _command=b"SnapshotChunk",
            _ask=b"2",
            message=install,
            offset=b"0",
            total=b"1",
            crc32=b"3904355907",  # crc32(b"x")
            data=b"x",
            done=b"True",
        )
    )
    assert stored == [] and receiver.received == []
    assert transport.disconnecting


def test_refusals_are_logged_once_per_peer_per_interval(capture):
    """A flood of refused messages gives one warning line per interval, with the count."""
    clock = Clock()
    receiver = Receiver(capture, clock=clock)
    protocol, _ = receiver.connect()
    attack = _box(_command=b"HeartbeatCmd", m=raw_heartbeat(HUGE))
    protocol.dataReceived(attack * 500)
    assert receiver.inbox.refused == {N1: 500}
    assert len(capture.lines(LogLevel.warn)) == 1
    clock.advance(REFUSAL_LOG_INTERVAL / 2)
    protocol.dataReceived(attack * 10)
    assert len(capture.lines(LogLevel.warn)) == 1
    clock.advance(REFUSAL_LOG_INTERVAL)
    protocol.dataReceived(attack)
    lines = capture.lines(LogLevel.warn)
    assert len(lines) == 2
    assert "refused 510 message(s) from peer n1 (511 in all)" in lines[1]
    assert receiver.received == []
    assert capture.errors() == []


# ---------------------------------------------------------------------- fuzz


def _check_decoded(data: bytes) -> None:
    """Decode ``data``: CodecError (OutOfBounds included) or a message within bounds."""
    try:
        message = decode(data)
    except CodecError:
        return
    assert bounds_error(message) is None, message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_codec_random_bytes(data):
    """Random bytes decode to an in-bounds message or raise CodecError, nothing else."""
    _check_decoded(data)


@settings(max_examples=400, deadline=None)
@given(message=any_message, data=st.data())
def test_fuzz_codec_mutated_encodings(message, data):
    """Valid encodings with bytes overwritten (often by 0xff) never yield an out-of-bound value."""
    encoded = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.sampled_from([0xFF, 0x80, 0x7F, 0x40, 0x00, 0x01]))
    _check_decoded(bytes(encoded))


@settings(max_examples=200, deadline=None)
@given(message=any_message)
def test_every_in_bounds_message_round_trips(message):
    """The codec refuses nothing a valid peer sends: bounds_error and decode agree."""
    assert bounds_error(message) is None
    assert decode(encode(message)) == message


@settings(max_examples=200, deadline=None)
@given(term=st.integers(MAX_TERM + 1, HUGE))
def test_fuzz_any_term_past_max_term_is_refused(term):
    """Every term in (MAX_TERM, 2**64) is refused, whatever the message type."""
    for payload in (raw_request_vote(term), raw_heartbeat(term), raw_append_entries(term, 0, 0, 0)):
        with pytest.raises(OutOfBounds):
            decode(payload)


def test_bounds_error_names_the_field():
    """bounds_error says which value is out of bounds."""
    assert "term" in bounds_error(Heartbeat(N1, N2, HUGE, 0))
    assert "commit" in bounds_error(Heartbeat(N1, N2, 1, MAX_INDEX + 1))
    assert "snapshot term" in bounds_error(
        InstallSnapshot(N1, N2, 1, SnapshotMeta(1, 2, Configuration(frozenset())))
    )
    assert "expected" in bounds_error(AppendEntries(N1, N2, 1, 0, 0, (Entry(2, 1),), 0))
    assert bounds_error(Heartbeat(N1, N2, "x", 0)) is not None  # type: ignore[arg-type]
    assert bounds_error(Heartbeat(N1, N2, 1, None)) is not None  # type: ignore[arg-type]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=any_message, data=st.data())
def test_fuzz_peer_boxes_never_deliver_out_of_bound_values(capture, message, data):
    """Mutated boxes after a Hello: all that is delivered is within bounds; nothing raises."""
    receiver = Receiver(capture)
    protocol, _ = receiver.connect()
    payload = bytearray(encode(message))
    for _ in range(data.draw(st.integers(0, 3))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.integers(0, 255))
    command = MESSAGE_COMMANDS.get(type(message), HeartbeatCmd).commandName
    protocol.dataReceived(_box(_command=command, m=bytes(payload)))
    for delivered in receiver.received:
        assert bounds_error(delivered) is None
    assert not [e for e in capture.events if e.get("log_failure") is not None]
