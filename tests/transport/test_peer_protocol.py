"""Tests for the peer AMP protocol over in-memory transports (no sockets, no sleeps)."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from leeky_twisted.transport.codec import encode
from leeky_twisted.transport.peer_commands import SnapshotChunk
from leeky_twisted.transport.peer_protocol import (
    HELLO_FRAME_BYTES,
    PeerInbox,
    PeerProtocol,
    PeerServerFactory,
    frame_message,
)

CLUSTER = "c1"
N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
META = SnapshotMeta(40, 3, Configuration(frozenset({N1, N2, N3})))


class Server:
    """The accepting side: an inbox for node n2 that records what it delivers."""

    def __init__(self, capture, *, max_frame_bytes=1 << 20, store_result=None, clock=None):
        self.received: list = []
        self.snapshots: list = []
        self.order: list = []  # ("store", meta, data) and ("deliver", message), in call order
        self.store_result = store_result
        self.inbox = PeerInbox(
            CLUSTER,
            N2,
            lambda node: node in {N1, N3},
            self.store,
            log=capture.log,
            max_frame_bytes=max_frame_bytes,
            max_snapshot_bytes=8 << 20,
            clock=clock,
            hello_timeout=5.0,
        )
        self.inbox.receiver = self.deliver
        self.factory = PeerServerFactory(self.inbox)

    def store(self, meta, data):
        if isinstance(self.store_result, Exception):
            raise self.store_result
        self.snapshots.append((meta, data))
        self.order.append(("store", meta, data))
        return self.store_result

    def deliver(self, message):
        self.received.append(message)
        self.order.append(("deliver", message))

    def raw(self):
        """Return a fresh accepted protocol on a StringTransport."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport


def dial(server, capture, *, cluster=CLUSTER, node=N1, expect=N2, proof=None, bootstrap=None):
    """Dial a new server protocol; return (client, server protocol, pump, hello result)."""
    client = PeerProtocol(None, capture.log)
    server_protocol = server.factory.buildProtocol(None)
    pump = iosim.connect(
        server_protocol,
        iosim.makeFakeServer(server_protocol),
        client,
        iosim.makeFakeClient(client),
        greet=False,
        clock=Clock(),
    )
    hello = client.hello(cluster, node, expect, proof, bootstrap)
    pump.flush()
    return client, server_protocol, pump, hello


def result_of(d: Deferred):
    """Return the result of a fired Deferred."""
    results: list = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def box(**values: bytes) -> bytes:
    """Serialize an AMP box from keyword arguments."""
    return amp.AmpBox({k.encode(): v for k, v in values.items()}).serialize()


HELLO_N1 = box(_command=b"Hello", _ask=b"1", cluster_id=CLUSTER.encode(), node_id=b"n1")


def all_messages():
    """Return one message of every one-way type, from n1 to n2."""
    return [
        RequestVote(N1, N2, 4, 10, 3, pre_vote=True),
        RequestVoteResponse(N1, N2, 4, True),
        AppendEntries(N1, N2, 4, 10, 3, (Entry(11, 4, data=b"a"), Entry(12, 4, data=b"b")), 9),
        AppendEntriesResponse(N1, N2, 4, True, 12),
        Heartbeat(N1, N2, 4, 12, 1),
        HeartbeatResponse(N1, N2, 4, 1, 12),
        TimeoutNow(N1, N2, 4),
        ReadIndexRequest(N1, N2, 4, 77),
        ReadIndexResponse(N1, N2, 4, 77, 12),
    ]


# ------------------------------------------------------------------ happy path


def test_hello_then_every_message_type_delivered_in_order(capture):
    """After a Hello, each one-way message arrives decoded and in sending order."""
    server = Server(capture)
    client, server_protocol, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    messages = all_messages()
    client.write_frames([frame_message(m) for m in messages])
    pump.flush()
    assert server.received == messages
    assert server_protocol.peer_id == N1
    assert capture.errors() == []


def test_append_entries_over_64_kib_arrives_intact_and_in_order(capture):
    """200 entries of 1 KiB (one AMP box of several values) arrive whole, between other messages."""
    server = Server(capture)
    client, _, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    batch = tuple(Entry(100 + i, 5, data=bytes([i]) * 1024) for i in range(200))
    before = Heartbeat(N1, N2, 5, 99)
    big = AppendEntries(N1, N2, 5, 99, 5, batch, 99)
    after = Heartbeat(N1, N2, 5, 299)
    frames = [frame_message(m) for m in (before, big, after)]
    assert len(frames[1]) > 200 * 1024
    client.write_frames(frames)
    pump.flush()
    assert server.received == [before, big, after]
    assert [e.index for e in server.received[1].entries] == list(range(100, 300))


def send_snapshot(client, pump, data, chunk, message=None):
    """Stream ``data`` in ``chunk``-byte SnapshotChunks; return the answers."""
    message = message or InstallSnapshot(N1, N2, 3, META)
    payload = encode(message)
    answers = []
    offset = 0
    while True:
        end = min(len(data), offset + chunk)
        d = client.callRemote(
            SnapshotChunk,
            message=payload,
            offset=offset,
            total=len(data),
            crc32=zlib.crc32(data),
            data=data[offset:end],
            done=end == len(data),
        )
        pump.flush()
        answer = result_of(d)
        answers.append(answer)
        if not isinstance(answer, dict) or answer["received"] == len(data):
            return answers
        offset = answer["received"]


def test_snapshot_chunks_assemble_then_store_then_deliver_install_snapshot(capture):
    """Chunks are assembled; the last one stores the data, then InstallSnapshot is delivered."""
    server = Server(capture)
    client, _, pump, _ = dial(server, capture)
    data = bytes(range(256)) * 1000
    answers = send_snapshot(client, pump, data, 60_000)
    assert [a["received"] for a in answers] == [60_000, 120_000, 180_000, 240_000, 256_000]
    assert server.order == [("store", META, data), ("deliver", InstallSnapshot(N1, N2, 3, META))]


def test_snapshot_chunk_at_wrong_offset_is_answered_with_bytes_held(capture):
    """A chunk not continuing the held bytes is ignored; the answer gives the resume point."""
    server = Server(capture)
    client, _, pump, _ = dial(server, capture)
    data = b"x" * 1000
    payload = encode(InstallSnapshot(N1, N2, 3, META))
    common = {"message": payload, "total": 1000, "crc32": zlib.crc32(data)}
    first = client.callRemote(SnapshotChunk, offset=0, data=data[:400], done=False, **common)
    skip = client.callRemote(SnapshotChunk, offset=800, data=data[800:], done=True, **common)
    again = client.callRemote(SnapshotChunk, offset=0, data=data[:400], done=False, **common)
    pump.flush()
    assert [result_of(d)["received"] for d in (first, skip, again)] == [400, 400, 400]
    assert server.snapshots == []


def test_snapshot_with_bad_checksum_is_restarted(capture):
    """A complete snapshot whose crc32 does not match is discarded and answered 0."""
    server = Server(capture)
    client, _, pump, _ = dial(server, capture)
    d = client.callRemote(
        SnapshotChunk,
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=0,
        total=3,
        crc32=12345,
        data=b"abc",
        done=True,
    )
    pump.flush()
    assert result_of(d) == {"received": 0}
    assert server.snapshots == [] and server.received == []


def test_deferred_snapshot_receiver_holds_back_later_messages(capture):
    """Later messages wait while the snapshot is stored, so InstallSnapshot keeps its place."""
    storing: Deferred = Deferred()
    server = Server(capture, store_result=storing)
    client, _, pump, _ = dial(server, capture)
    data = b"s" * 5000
    chunk = client.callRemote(
        SnapshotChunk,
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=0,
        total=len(data),
        crc32=zlib.crc32(data),
        data=data,
        done=True,
    )
    later = Heartbeat(N1, N2, 3, 41)
    client.write_frames([frame_message(later)])
    pump.flush()
    assert server.snapshots == [(META, data)]
    assert server.received == []
    assert not chunk.called
    storing.callback(None)
    pump.flush()
    assert server.received == [InstallSnapshot(N1, N2, 3, META), later]
    assert result_of(chunk) == {"received": len(data)}


def test_failing_snapshot_receiver_is_logged_and_answered_zero(capture):
    """If storing fails, InstallSnapshot is not delivered and the sender is told to start over."""
    server = Server(capture, store_result=OSError("disk full"))
    client, _, pump, _ = dial(server, capture)
    data = b"d" * 100
    d = client.callRemote(
        SnapshotChunk,
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=0,
        total=len(data),
        crc32=zlib.crc32(data),
        data=data,
        done=True,
    )
    pump.flush()
    assert result_of(d) == {"received": 0}
    assert server.received == []
    assert any("snapshot_receiver failed on snapshot 40" in e for e in capture.errors())


def test_receiver_that_raises_is_logged_and_connection_kept(capture):
    """A failing receiver does not drop the peer: the next message still arrives."""
    server = Server(capture)
    calls = []

    def receiver(message):
        calls.append(message)
        if len(calls) == 1:
            raise RuntimeError("node bug")

    server.inbox.receiver = receiver
    client, server_protocol, pump, _ = dial(server, capture)
    client.write_frames([frame_message(m) for m in all_messages()[:2]])
    pump.flush()
    assert len(calls) == 2
    assert not server_protocol.closing
    assert any("receiver raised" in line for line in capture.lines())


# -------------------------------------------------------------------- refusals


def test_hello_from_another_cluster_is_refused_logged_and_dropped(capture):
    """A node of another cluster is refused with a clear error line on both sides."""
    server = Server(capture)
    _, _, pump, hello = dial(server, capture, cluster="other")
    assert result_of(hello) is False
    assert pump.serverIO.disconnected and pump.clientIO.disconnected
    errors = capture.errors()
    assert any("refused peer connection" in e and "'other'" in e for e in errors)
    assert any("refused our Hello" in e for e in errors)
    assert server.received == []


def test_a_refused_hello_reveals_nothing(capture):
    """Issue 19 finding 4: the refusal sent back names neither our cluster id nor the reason."""
    server = Server(capture)
    _, _, _pump, hello = dial(server, capture, cluster="guess")
    assert result_of(hello) is False
    # what the refusal said, after the peer's address (an object repr whose hex
    # memory address may contain the cluster id's letters by chance)
    told = [
        e.split("refused our Hello", 1)[1] for e in capture.errors() if "refused our Hello" in e
    ]
    assert told and all(server.inbox.cluster_id not in e and "guess" not in e for e in told)


def test_hello_from_unknown_node_is_refused_logged_and_dropped(capture):
    """A node id outside the known peer set is refused."""
    server = Server(capture)
    _, _, pump, hello = dial(server, capture, node=NodeId("n9"))
    assert result_of(hello) is False
    assert pump.serverIO.disconnected
    assert any("'n9' is not a known peer" in e for e in capture.errors())


def test_hello_claiming_our_own_id_is_refused(capture):
    """A peer claiming the accepting node's own id is refused."""
    server = Server(capture)
    _, _, _, hello = dial(server, capture, node=N2)
    assert result_of(hello) is False
    assert any("is our own" in e for e in capture.errors())


def test_hello_answered_by_the_wrong_node_drops_the_dialled_connection(capture):
    """If the address now belongs to another node, the dialler notices and disconnects."""
    server = Server(capture)
    _, _, pump, hello = dial(server, capture, expect=N3)
    assert result_of(hello) is False
    assert pump.clientIO.disconnected
    assert any("expected 'n3'" in e for e in capture.errors())


def test_connection_without_hello_is_dropped_after_the_timeout(capture):
    """An accepted connection that never says Hello is dropped after hello_timeout."""
    clock = Clock()
    server = Server(capture, clock=clock)
    silent, transport = server.raw()
    greeted, greeted_transport = server.raw()
    greeted.dataReceived(HELLO_N1)
    clock.advance(4.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting and not greeted_transport.disconnecting
    assert any("no Hello within 5.0 seconds" in e for e in capture.errors())
    silent.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_refused_hello_without_answer_still_closes(capture):
    """A one-way (unanswered) Hello that is refused still closes the connection."""
    server = Server(capture)
    protocol, transport = server.raw()
    protocol.dataReceived(box(_command=b"Hello", cluster_id=b"zz", node_id=b"n1"))
    assert transport.disconnecting
    assert any("refused peer connection" in e for e in capture.errors())


# ------------------------------------------------------------------- bad input


def assert_dropped(server, capture, data: bytes, reason: str):
    """Feed ``data`` to a new accepted protocol: it drops with ``reason``; the server lives on."""
    protocol, transport = server.raw()
    protocol.dataReceived(data)
    assert transport.disconnecting, f"connection not dropped for {reason!r}"
    assert any(reason in e for e in capture.errors()), capture.errors()
    # The factory still serves a fresh connection normally.
    client, _, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    message = Heartbeat(N1, N2, 9, 9)
    client.write_frames([frame_message(message)])
    pump.flush()
    assert server.received[-1] == message


def test_message_before_hello_drops_connection(capture):
    """A Raft message before the Hello is a protocol violation."""
    server = Server(capture)
    data = frame_message(Heartbeat(N1, N2, 1, 1))
    assert_dropped(server, capture, data, "HeartbeatCmd before Hello")
    assert server.received == [Heartbeat(N1, N2, 9, 9)]


def test_random_garbage_drops_connection(capture):
    """Bytes that are not AMP (an over-long key prefix) drop the connection."""
    assert_dropped(Server(capture), capture, b"\xff\xfe garbage", "AMP key length")


def test_oversized_box_before_hello_drops_connection(capture):
    """A box over HELLO_FRAME_BYTES before the Hello is refused before it is complete."""
    server = Server(capture)
    data = box(_command=b"Hello", padding=b"p" * HELLO_FRAME_BYTES)[:-2]
    assert_dropped(server, capture, data, f"box larger than {HELLO_FRAME_BYTES}")


def test_oversized_box_after_hello_drops_connection(capture):
    """A box over max_frame_bytes after the Hello drops the connection."""
    server = Server(capture, max_frame_bytes=100_000)
    client, _, pump, _ = dial(server, capture)
    big = AppendEntries(
        N1, N2, 1, 0, 0, tuple(Entry(i + 1, 1, data=b"e" * 1024) for i in range(200)), 0
    )
    client.write_frames([frame_message(big)])
    pump.flush()
    assert pump.serverIO.disconnected
    assert server.received == []
    assert any("box larger than 100000" in e for e in capture.errors())


def test_empty_box_drops_connection(capture):
    """A box with no keys is not a command."""
    assert_dropped(Server(capture), capture, b"\x00\x00", "box without a command")


def test_unknown_command_after_hello_drops_connection(capture):
    """A command this protocol does not know drops the connection."""
    server = Server(capture)
    assert_dropped(
        server, capture, HELLO_N1 + box(_command=b"Bogus"), "unexpected command b'Bogus'"
    )


def test_second_hello_drops_connection(capture):
    """A connection says Hello once."""
    second = box(_command=b"Hello", _ask=b"2", cluster_id=CLUSTER.encode(), node_id=b"n1")
    assert_dropped(Server(capture), capture, HELLO_N1 + second, "second Hello")


def test_hello_with_bad_utf8_drops_connection(capture):
    """An undecodable Unicode argument is a malformed frame."""
    data = box(_command=b"Hello", _ask=b"1", cluster_id=b"\xff", node_id=b"n1")
    assert_dropped(Server(capture), capture, data, "malformed Hello arguments")


def test_hello_missing_argument_drops_connection(capture):
    """A Hello without node_id is a malformed frame."""
    data = box(_command=b"Hello", _ask=b"1", cluster_id=CLUSTER.encode())
    assert_dropped(Server(capture), capture, data, "malformed Hello arguments")


def test_wrongly_typed_snapshot_chunk_argument_drops_connection(capture):
    """A valid frame whose Integer argument is not an integer drops the connection."""
    data = HELLO_N1 + box(
        _command=b"SnapshotChunk",
        _ask=b"2",
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=b"zero",
        total=b"1",
        crc32=b"1",
        data=b"x",
        done=b"True",
    )
    assert_dropped(Server(capture), capture, data, "malformed SnapshotChunk arguments")


def test_message_of_the_wrong_type_for_its_command_drops_connection(capture):
    """An AppendEntriesCmd carrying a Heartbeat is rejected."""
    data = HELLO_N1 + box(_command=b"AppendEntriesCmd", m=encode(Heartbeat(N1, N2, 1, 1)))
    assert_dropped(Server(capture), capture, data, "Heartbeat sent as a AppendEntries command")


def test_undecodable_message_drops_connection(capture):
    """A command whose payload is not a valid encoding is rejected."""
    data = HELLO_N1 + box(_command=b"HeartbeatCmd", m=b"\x05\x00")
    assert_dropped(Server(capture), capture, data, "undecodable Heartbeat")


def test_sender_differing_from_hello_drops_connection(capture):
    """A message whose sender is not the node that said Hello is rejected."""
    data = HELLO_N1 + frame_message(Heartbeat(N3, N2, 1, 1))
    assert_dropped(Server(capture), capture, data, "claims sender 'n3'")


def test_message_for_another_node_drops_connection(capture):
    """A message addressed to another node is rejected."""
    data = HELLO_N1 + frame_message(Heartbeat(N1, N3, 1, 1))
    assert_dropped(Server(capture), capture, data, "message for 'n3' reached 'n2'")


def test_answer_box_on_accepting_side_drops_connection(capture):
    """An answer to a question never asked is a protocol violation."""
    assert_dropped(Server(capture), capture, HELLO_N1 + box(_answer=b"77"), "box without a command")


def test_inconsistent_snapshot_chunk_drops_connection(capture):
    """A chunk whose done flag disagrees with its end is rejected."""
    data = HELLO_N1 + box(
        _command=b"SnapshotChunk",
        _ask=b"2",
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=b"0",
        total=b"10",
        crc32=b"1",
        data=b"x",
        done=b"True",
    )
    assert_dropped(Server(capture), capture, data, "disagrees with the chunk's end")


def test_snapshot_over_the_limit_drops_connection(capture):
    """A snapshot larger than max_snapshot_bytes is refused."""
    data = HELLO_N1 + box(
        _command=b"SnapshotChunk",
        _ask=b"2",
        message=encode(InstallSnapshot(N1, N2, 3, META)),
        offset=b"0",
        total=str(9 << 20).encode(),
        crc32=b"1",
        data=b"x",
        done=b"False",
    )
    assert_dropped(Server(capture), capture, data, "exceeds the limit")


def test_command_on_dialled_connection_drops_it(capture):
    """The accepting side may only answer; a command sent back is a violation."""
    server = Server(capture)
    _, server_protocol, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    server_protocol.transport.write(frame_message(Heartbeat(N2, N1, 1, 1)))
    pump.flush()
    assert pump.clientIO.disconnected
    assert any("on a dialled connection" in e for e in capture.errors())


# ------------------------------------------------ many boxes in one read


def after_hello(server):
    """Return an accepted protocol whose Hello arrived alone."""
    protocol, transport = server.raw()
    protocol.dataReceived(HELLO_N1)
    assert protocol.peer_id == N1
    return protocol, transport


def mixed_stream() -> tuple[bytes, list]:
    """Return bytes of one-way boxes with a snapshot chunk between them, and what they deliver."""
    messages = all_messages()
    data = b"".join(frame_message(m) for m in messages[:3])
    # a snapshot chunk between one-way messages, mid-stream
    install = InstallSnapshot(N1, N2, 3, META)
    payload = b"snapshot"
    data += box(
        _command=b"SnapshotChunk",
        _ask=b"7",
        message=encode(install),
        offset=b"0",
        total=b"%d" % len(payload),
        crc32=b"%d" % zlib.crc32(payload),
        data=payload,
        done=b"True",
    )
    data += b"".join(frame_message(m) for m in messages[3:])
    return data, [*messages[:3], install, *messages[3:]]


def test_boxes_are_delivered_in_order_at_every_split(capture):
    """Split anywhere in two reads, a stream of messages and a chunk delivers each in order."""
    data, expected = mixed_stream()
    for split in range(len(data) + 1):
        server = Server(capture)
        protocol, transport = after_hello(server)
        protocol.dataReceived(data[:split])
        protocol.dataReceived(data[split:])
        assert server.received == expected, split
        assert not transport.disconnecting
    assert capture.errors() == []


def test_boxes_fed_a_byte_at_a_time(capture):
    """One byte per read still delivers every message."""
    data, expected = mixed_stream()
    server = Server(capture)
    protocol, _ = after_hello(server)
    for i in range(len(data)):
        protocol.dataReceived(data[i : i + 1])
    assert server.received == expected


def test_a_value_split_over_keys_is_delivered(capture):
    """A message over 64 KiB (its value split over several keys) arrives whole after small ones."""
    server = Server(capture)
    protocol, _ = after_hello(server)
    big = AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"e" * 150_000),), 0)
    small = Heartbeat(N1, N2, 1, 1)
    protocol.dataReceived(frame_message(small) + frame_message(big) + frame_message(small))
    assert server.received == [small, big, small]


def test_a_box_over_the_limit_in_a_whole_read_drops_connection(capture):
    """A single-value box over max_frame_bytes is refused when it arrives in one read too."""
    server = Server(capture, max_frame_bytes=1000)
    protocol, transport = after_hello(server)
    big = AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"e" * 2000),), 0)
    protocol.dataReceived(frame_message(Heartbeat(N1, N2, 1, 1)) + frame_message(big))
    assert len(server.received) == 1
    assert transport.disconnecting
    assert any("box larger than 1000" in e for e in capture.errors())


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (box(_command=b"AppendEntriesCmd", m=encode(Heartbeat(N1, N2, 1, 1))), "sent as a"),
        (box(_command=b"HeartbeatCmd", m=b"\x05\x00"), "undecodable Heartbeat"),
        (frame_message(Heartbeat(N3, N2, 1, 1)), "claims sender 'n3'"),
        (frame_message(Heartbeat(N1, N3, 1, 1)), "message for 'n3' reached 'n2'"),
        (box(_command=b"Bogus", m=b"x"), "unexpected command b'Bogus'"),
        (box(_command=b"HeartbeatCmd", _ask=b"5", m=b"x"), "undecodable Heartbeat"),
    ],
)
def test_bad_boxes_are_refused_whether_whole_or_split(capture, frame, reason):
    """Bad one-way boxes after the Hello drop the connection, and nothing after them is read."""
    server = Server(capture)
    protocol, transport = after_hello(server)
    good = Heartbeat(N1, N2, 1, 1)
    protocol.dataReceived(frame_message(good) + frame + frame_message(good))
    assert server.received == [good]
    assert transport.disconnecting
    assert any(reason in e for e in capture.errors()), capture.errors()


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from([b"", HELLO_N1, b"hello first"]),
    data=st.binary(max_size=300),
    split=st.integers(min_value=0, max_value=400),
)
def test_random_bytes_never_raise_out_of_data_received(prefix, data, split):
    """Arbitrary bytes, in any split, before or after a Hello, never raise nor log a traceback."""
    events: list = []
    log = Logger(observer=events.append)
    inbox = PeerInbox(CLUSTER, N2, lambda node: node == N1, lambda meta, data: None, log=log)
    inbox.receiver = lambda message: None
    protocol = PeerServerFactory(inbox).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    globalLogPublisher.addObserver(events.append)
    try:
        if prefix == b"hello first":  # later reads arrive after the Hello
            protocol.dataReceived(HELLO_N1)
            prefix = b""
        stream = prefix + data
        protocol.dataReceived(stream[:split])
        protocol.dataReceived(stream[split:])
        protocol.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [formatEvent(e) for e in events if e["log_level"] is LogLevel.critical] == []
    if transport.disconnecting:
        assert any(
            "dropping peer connection" in formatEvent(e) or "refused" in formatEvent(e)
            for e in events
        )


# ------------------------------------------------------------- eager answers


def eager_stream() -> tuple[bytes, list]:
    """Return bytes of answers saying eager (and one that does not), and what they deliver."""
    messages = [
        AppendEntriesResponse(N1, N2, 4, True, 12, eager=True),
        HeartbeatResponse(N1, N2, 4, 1, 12, eager=True),
        AppendEntriesResponse(N1, N2, 4, True, 13),
    ]
    return b"".join(frame_message(m) for m in messages), messages


def test_eager_answers_arrive_eager(capture):
    """``eager`` travels beside ``m`` and is delivered, in one read and byte by byte."""
    data, expected = eager_stream()
    server = Server(capture)
    protocol, _ = after_hello(server)
    protocol.dataReceived(data)
    assert server.received == expected
    server = Server(capture)
    protocol, _ = after_hello(server)
    for i in range(len(data)):
        protocol.dataReceived(data[i : i + 1])
    assert server.received == expected
    assert capture.errors() == []


def test_an_answer_that_is_not_eager_is_framed_as_before():
    """Without eager the box holds exactly the command and ``m``: the bytes an older node
    sends and expects."""
    m = AppendEntriesResponse(N1, N2, 4, True, 12)
    assert frame_message(m) == box(_command=b"AppendEntriesResponseCmd", m=encode(m))
    hb = HeartbeatResponse(N1, N2, 4, 1, 12)
    assert frame_message(hb) == box(_command=b"HeartbeatResponseCmd", m=encode(hb))


def test_a_node_that_does_not_know_eager_reads_an_eager_answer_as_before():
    """An older node's command (``m`` alone) parses an eager answer: AMP ignores a key
    its command does not declare, so the older leader just keeps its delayed notice."""
    from leeky_twisted.transport.codec import LargeBytes, decode

    class OldAnswer(amp.Command):
        commandName = b"AppendEntriesResponseCmd"
        arguments = [(b"m", LargeBytes())]
        requiresAnswer = False

    got: list = []

    class OldNode(amp.AMP):
        @OldAnswer.responder
        def answer(self, m: bytes) -> dict:
            got.append(decode(m))
            return {}

    old = OldNode()
    transport = StringTransport()
    old.makeConnection(transport)
    m = AppendEntriesResponse(N1, N2, 4, True, 12, eager=True)
    old.dataReceived(frame_message(m))
    assert got == [AppendEntriesResponse(N1, N2, 4, True, 12)]
    assert not transport.disconnecting


@pytest.mark.parametrize(("value", "eager"), [(b"False", False), (b"True", True)])
def test_an_eager_value_amp_writes_is_read(capture, value, eager):
    """``eager=False`` (which this node never writes) is read as false."""
    server = Server(capture)
    protocol, transport = after_hello(server)
    m = HeartbeatResponse(N1, N2, 4, 1, 12)
    protocol.dataReceived(box(_command=b"HeartbeatResponseCmd", m=encode(m), eager=value))
    assert server.received == [HeartbeatResponse(N1, N2, 4, 1, 12, eager=eager)]
    assert not transport.disconnecting


def test_a_malformed_eager_value_drops_the_connection(capture):
    """Anything but True or False is a broken peer, as any malformed argument."""
    server = Server(capture)
    protocol, transport = after_hello(server)
    m = HeartbeatResponse(N1, N2, 4, 1, 12)
    protocol.dataReceived(box(_command=b"HeartbeatResponseCmd", m=encode(m), eager=b"yes"))
    assert server.received == []
    assert transport.disconnecting


# ------------------------------------------- whole boxes split by hand, and the end of a read


def count_amp_strings(protocol) -> list[bytes]:
    """Record every string AMP's own parser hands on (none when boxes are split by hand)."""
    seen: list[bytes] = []
    parse = protocol.stringReceived

    def counting(string: bytes) -> None:
        seen.append(string)
        parse(string)

    protocol.stringReceived = counting
    return seen


def test_whole_one_way_boxes_after_the_hello_skip_amps_parser(capture):
    """Whole message boxes in a read are split by hand: AMP's parser sees none of them."""
    server = Server(capture)
    protocol, transport = after_hello(server)
    strings = count_amp_strings(protocol)
    messages = all_messages()
    protocol.dataReceived(b"".join(frame_message(m) for m in messages))
    assert server.received == messages
    assert strings == []
    assert not transport.disconnecting


def test_an_eager_answer_is_split_by_hand_and_keeps_its_flag(capture):
    """An answer carrying ``eager`` takes the hand-split path and arrives eager."""
    server = Server(capture)
    protocol, _ = after_hello(server)
    strings = count_amp_strings(protocol)
    eager = [
        AppendEntriesResponse(N1, N2, 4, True, 12, eager=True),
        HeartbeatResponse(N1, N2, 4, 1, 12, eager=True),
    ]
    protocol.dataReceived(b"".join(frame_message(m) for m in eager))
    assert server.received == eager
    assert strings == []


def test_an_eager_flag_that_is_not_a_boolean_is_left_to_amps_parser(capture):
    """A box whose ``eager`` is neither True nor False goes to AMP's parser, which refuses it."""
    server = Server(capture)
    protocol, _ = after_hello(server)
    strings = count_amp_strings(protocol)
    aer = AppendEntriesResponse(N1, N2, 4, True, 12)
    frame = box(_command=b"AppendEntriesResponseCmd", m=encode(aer), eager=b"maybe")
    protocol.dataReceived(frame)
    assert strings != []
    assert server.received == []


def test_after_read_is_told_once_per_read_that_delivered_messages(capture):
    """The inbox's ``after_read`` runs once after each read's messages, never for none."""
    server = Server(capture)
    calls: list[int] = []
    server.inbox.after_read = lambda: calls.append(len(server.received))
    protocol, _ = after_hello(server)
    assert calls == []  # the Hello delivers no message
    messages = all_messages()
    data = b"".join(frame_message(m) for m in messages[:3])
    protocol.dataReceived(data)
    assert calls == [3]
    frame = frame_message(messages[3])
    protocol.dataReceived(frame[:5])  # not a whole box yet
    assert calls == [3]
    protocol.dataReceived(frame[5:])
    assert calls == [3, 4]


def test_after_read_that_raises_is_logged_and_the_connection_lives(capture):
    """An ``after_read`` that raises costs neither the connection nor later messages."""
    server = Server(capture)

    def broken() -> None:
        raise RuntimeError("boom")

    server.inbox.after_read = broken
    protocol, transport = after_hello(server)
    messages = all_messages()
    protocol.dataReceived(frame_message(messages[0]))
    protocol.dataReceived(frame_message(messages[1]))
    assert server.received == messages[:2]
    assert not transport.disconnecting
    assert any("after_read raised" in e for e in capture.errors())


def test_a_read_can_hold_work_for_its_end_and_only_a_read(capture):
    """``hold_for_end_of_read`` is True inside a read (whose end then runs ``after_read``)."""
    server = Server(capture)
    held: list[bool] = []
    calls: list[int] = []
    server.inbox.receiver = lambda m: held.append(server.inbox.hold_for_end_of_read())
    server.inbox.after_read = lambda: calls.append(len(held))
    protocol, _ = after_hello(server)
    assert server.inbox.hold_for_end_of_read() is False
    protocol.dataReceived(b"".join(frame_message(m) for m in all_messages()[:2]))
    assert held == [True, True]
    assert calls == [2]
    assert server.inbox.hold_for_end_of_read() is False
    assert server.inbox.reading is False


def test_a_hold_during_a_read_that_delivered_nothing_still_gets_its_end(capture):
    """Work held by a read that delivered no message still ends in ``after_read``."""
    server = Server(capture)
    calls: list[str] = []
    server.inbox.after_read = lambda: calls.append("end")
    protocol, _ = after_hello(server)
    server.inbox.reading = True  # as inside dataReceived
    assert server.inbox.hold_for_end_of_read()
    server.inbox.read_ended(server.inbox.delivered)
    assert calls == ["end"]
    protocol.dataReceived(b"")  # the promise was kept once: no second call
    assert calls == ["end"]


def test_deliver_read_delivers_in_order_then_ends_the_read_once(capture):
    """Messages delivered as one read reach the receiver in order, then ``after_read`` once."""
    server = Server(capture)
    calls: list[int] = []
    server.inbox.after_read = lambda: calls.append(len(server.received))
    messages = all_messages()[:3]
    server.inbox.deliver_read(messages)
    assert server.received == messages
    assert calls == [3]
    assert server.inbox.reading is False


@pytest.mark.parametrize("over", [1, 2])
def test_a_box_just_over_the_limit_is_refused_on_the_fast_path_as_by_amps_parser(capture, over):
    """The limit counts a box's every byte, its closing empty key too (as AMP's parser
    counts it): a box ``over`` bytes past it is refused whole in one read, as when its
    bytes come one at a time."""
    big = AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"e" * 500),), 0)
    frame = frame_message(big)
    for whole in (False, True):
        server = Server(capture, max_frame_bytes=len(frame) - over)
        protocol, transport = after_hello(server)
        if whole:
            protocol.dataReceived(frame)
        else:
            for i in range(len(frame)):
                protocol.dataReceived(frame[i : i + 1])
        assert server.received == [] and transport.disconnecting, whole


def test_a_box_at_the_limit_is_delivered_whole_or_split(capture):
    """A box of exactly max_frame_bytes is taken by either path."""
    big = AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"e" * 500),), 0)
    frame = frame_message(big)
    for whole in (False, True):
        server = Server(capture, max_frame_bytes=len(frame))
        protocol, transport = after_hello(server)
        if whole:
            protocol.dataReceived(frame)
        else:
            for i in range(len(frame)):
                protocol.dataReceived(frame[i : i + 1])
        assert server.received == [big] and not transport.disconnecting, whole
