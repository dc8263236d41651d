"""Tests for AMPPeerTransport on a MemoryReactorClock (no sockets, no sleeps)."""

from __future__ import annotations

import random

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import (
    AppendEntries,
    Configuration,
    Entry,
    Heartbeat,
    InstallSnapshot,
    NodeId,
    SnapshotMeta,
)
from leeky_twisted.interfaces import IPeerTransport
from leeky_twisted.transport.peer_protocol import PeerInbox
from leeky_twisted.transport.peers import AMPPeerTransport

CLUSTER = "c1"
N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
META = SnapshotMeta(500, 4, Configuration(frozenset({N1, N2, N3})))
CHUNK = 256 * 1024


class Node:
    """One AMPPeerTransport plus what it received, on a shared memory reactor."""

    def __init__(
        self, reactor, node_id, book, capture, *, cluster=CLUSTER, listen=True, store=None, **kw
    ):
        self.received: list = []
        self.snapshots: list = []
        self.sources: dict = {}
        self.transport = AMPPeerTransport(
            reactor,
            cluster,
            node_id,
            book,
            lambda node: node in book,
            self.sources.get,
            store or (lambda meta, data: self.snapshots.append((meta, data))),
            rng=random.Random(7),
            log=capture.log,
            **kw,
        )
        self.transport.set_receiver(self.received.append)
        if listen:
            self.transport.listen(book[node_id][1])


def book():
    """Return a fresh address book for n1, n2 and n3."""
    return {N1: ("127.0.0.1", 7001), N2: ("127.0.0.1", 7002), N3: ("127.0.0.1", 7003)}


def hb(commit, sender=N1, recipient=N2):
    """Return a heartbeat numbered by its commit index."""
    return Heartbeat(sender, recipient, 1, commit)


def dialled(reactor):
    """Return the (host, port) of every connection attempt not yet completed or failed."""
    return [(host, port) for host, port, *_ in reactor.tcpClients]


def fired(d: Deferred):
    """Return the result of a fired Deferred."""
    results: list = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def test_transport_provides_ipeertransport(capture):
    """AMPPeerTransport implements the IPeerTransport contract."""
    node = Node(MemoryReactorClock(), N1, book(), capture)
    assert verifyObject(IPeerTransport, node.transport)


def test_constructor_rejects_inconsistent_limits(capture):
    """Bad limits fail at construction time, not on the first send."""
    with pytest.raises(ValueError):
        Node(MemoryReactorClock(), N1, book(), capture, max_queue=0)
    with pytest.raises(ValueError):
        Node(MemoryReactorClock(), N1, book(), capture, chunk_size=20 << 20)
    with pytest.raises(ValueError):
        Node(MemoryReactorClock(), N1, book(), capture, initial_backoff=3, max_backoff=1)


def test_send_dials_lazily_once_and_reuses_the_connection(capture):
    """The first send dials the peer; later sends use the same single connection."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    assert dialled(reactor) == []
    a.transport.send(hb(1))
    a.transport.send(hb(2))
    assert dialled(reactor) == [("127.0.0.1", 7002)]
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    for commit in range(3, 8):
        a.transport.send(hb(commit))
        pump.flush()
    assert b.received == [hb(c) for c in range(1, 8)]
    assert dialled(reactor) == []
    assert a.transport.peer_status()[N2]["connected"] is True
    assert capture.errors() == []


def test_messages_sent_in_one_turn_are_coalesced_into_one_write(capture):
    """Several sends in one reactor turn become one write, delivered in order."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(hb(0))
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    batch = [hb(1), AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"x"),), 0), hb(2)]
    for message in batch:
        a.transport.send(message)
    assert pump.clientIO.stream == []  # nothing written inside send()
    reactor.advance(0)
    assert len(pump.clientIO.stream) == 1
    pump.flush()
    assert b.received == [hb(0), *batch]


def test_send_batch_writes_each_peers_share_at_once_without_a_timer(capture):
    """A batch goes out as one write per peer in this turn, and schedules no call."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(hb(0))
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    reactor.advance(0)
    pending = list(reactor.getDelayedCalls())
    batch = [hb(1), AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"x"),), 0), hb(2)]
    a.transport.send_batch(batch)
    assert len(pump.clientIO.stream) == 1  # written now, in one write
    assert list(reactor.getDelayedCalls()) == pending  # no timer made (nor left cancelled)
    pump.flush()
    assert b.received == [hb(0), *batch]


def test_send_batch_to_an_unconnected_peer_dials_and_sends_once_connected(capture):
    """A batch for a peer not yet connected waits in its queue, as ``send`` does."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send_batch([hb(1), hb(2)])
    assert dialled(reactor) == [("127.0.0.1", 7002)]
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    assert b.received == [hb(1), hb(2)]


def test_messages_to_self_of_one_turn_are_one_read_on_the_next(capture):
    """Messages to this node wait for the next turn, with one timer, then end as one read."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    ends: list[int] = []
    a.transport.set_after_read(lambda: ends.append(len(a.received)))
    before = len(reactor.getDelayedCalls())
    a.transport.send(hb(1, N1, N1))
    a.transport.send_batch([hb(2, N1, N1)])
    assert a.received == []
    assert len(reactor.getDelayedCalls()) == before + 1
    reactor.advance(0)
    assert a.received == [hb(1, N1, N1), hb(2, N1, N1)]
    assert ends == [2]


def test_append_entries_over_64_kib_crosses_the_transport_intact(capture):
    """A 200 x 1 KiB AppendEntries goes through send() and arrives whole and in order."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    big = AppendEntries(
        N1, N2, 2, 0, 0, tuple(Entry(i, 2, data=bytes([i % 256]) * 1024) for i in range(1, 201)), 0
    )
    a.transport.send(big)
    a.transport.send(hb(200))
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert b.received == [big, hb(200)]


def test_queue_is_bounded_and_drops_the_oldest(capture):
    """While connecting, at most max_queue messages wait; the oldest are dropped."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture, max_queue=3)
    b = Node(reactor, N2, book(), capture)
    for commit in range(1, 6):
        a.transport.send(hb(commit))
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert b.received == [hb(3), hb(4), hb(5)]
    assert a.transport.peer_status()[N2]["dropped"] == 2
    assert any("send queue to n2 is full" in line for line in capture.lines())


def test_failed_connection_is_retried_with_capped_exponential_backoff(capture):
    """Each failed attempt waits [d/2, d) before the next, d doubling up to max_backoff."""
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a = Node(reactor, N1, book(), capture, initial_backoff=0.1, max_backoff=1.0)
    a.transport.send(hb(1))
    for attempt in range(1, 8):
        assert dialled(reactor) == [("127.0.0.1", 7002)]
        completer.failOnce()
        assert dialled(reactor) == []
        ceiling = min(1.0, 0.1 * 2 ** (attempt - 1))
        reactor.advance(ceiling / 2 - 0.001)
        assert dialled(reactor) == [], f"retried too early after failure {attempt}"
        reactor.advance(ceiling / 2 + 0.001)
    assert a.transport.peer_status()[N2]["failures"] == 7
    # Only the first failure of the streak is logged as a warning.
    assert sum("cannot connect to peer n2" in line for line in capture.lines()) == 1
    # The peer comes up: the next attempt connects and the queued message arrives.
    b = Node(reactor, N2, book(), capture)
    completer.succeedOnce().flush()
    assert b.received == [hb(1)]
    assert a.transport.peer_status()[N2]["failures"] == 0


def test_lost_connection_is_redialled_at_once_then_after_backoff(capture):
    """A working connection that drops is dialled again at once (to learn whether the
    peer's process is gone); a second drop within GONE_PROBE_SECONDS waits out a backoff."""
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(hb(1))
    pump = completer.succeedOnce()
    pump.flush()
    pump.serverIO.loseConnection()
    pump.flush()
    assert dialled(reactor) == [("127.0.0.1", 7002)]  # at once, nothing queued
    pump = completer.succeedOnce()
    pump.flush()
    a.transport.send(hb(2))
    pump.flush()
    assert b.received == [hb(1), hb(2)]
    pump.serverIO.loseConnection()
    pump.flush()
    a.transport.send(hb(3))
    assert dialled(reactor) == []  # the second drop within a second: a backoff
    reactor.advance(0.05)
    assert dialled(reactor) == [("127.0.0.1", 7002)]
    completer.succeedOnce().flush()
    assert b.received == [hb(1), hb(2), hb(3)]


def connected_and_watched(capture):
    """n1 connected to n2 (its Hello answered), n1's gone-peer reports kept in ``gone``.

    Return (reactor, completer, pump, n1, gone).
    """
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a, _b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    gone: list = []
    a.transport.set_peer_gone(gone.append)
    a.transport.send(hb(1))
    pump = completer.succeedOnce()
    pump.flush()
    return reactor, completer, pump, a, gone


def test_a_refused_dial_tells_the_node_its_peer_is_gone(capture):
    """When a working connection drops and the redial is refused, set_peer_gone's
    callback hears the peer's id once; a dial that fails otherwise says nothing."""
    reactor, completer, pump, a, gone = connected_and_watched(capture)
    assert gone == []
    pump.serverIO.loseConnection()
    pump.flush()
    assert gone == []  # a closed connection alone is no proof
    completer.failOnce(Failure(ConnectionRefusedError()))
    assert gone == [N2]
    a.transport.send(hb(2))
    reactor.advance(0.05)
    completer.failOnce(Failure(ConnectError("timeout")))
    assert gone == [N2]
    reactor.advance(0.1)
    completer.failOnce(Failure(ConnectionRefusedError()))
    assert gone == [N2, N2]  # each refusal: the node ignores those about a non-leader


def test_a_closed_transport_reports_no_peer_gone(capture):
    """After close(), a refusal that still arrives is not reported."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    gone: list = []
    a.transport.set_peer_gone(gone.append)
    a.transport.report_gone(N2)
    assert gone == [N2]
    a.transport.close()
    a.transport.report_gone(N2)
    assert gone == [N2]


def test_peer_without_address_is_retried_once_the_address_book_knows_it(capture):
    """An unknown address backs off; the live mapping is read again on the next attempt."""
    reactor = MemoryReactorClock()
    addresses = book()
    del addresses[N3]
    a = Node(reactor, N1, addresses, capture)
    a.transport.send(hb(1, recipient=N3))
    assert dialled(reactor) == []
    assert any("no address for peer n3" in line for line in capture.lines())
    addresses[N3] = ("10.0.0.3", 7003)
    reactor.advance(0.05)
    assert dialled(reactor) == [("10.0.0.3", 7003)]


def test_disconnect_redials_at_the_new_address(capture):
    """disconnect() closes the link; the next send dials the address book's new address."""
    reactor = MemoryReactorClock()
    addresses = book()
    a, _ = Node(reactor, N1, addresses, capture), Node(reactor, N2, addresses, capture)
    a.transport.send(hb(1))
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    addresses[N2] = ("10.0.0.2", 7102)
    closed = a.transport.disconnect(N2)
    pump.flush()
    assert fired(closed) is None
    a.transport.send(hb(2))
    assert dialled(reactor) == [("10.0.0.2", 7102)]


def test_refused_hello_is_logged_on_both_sides_and_retried(capture):
    """A node of another cluster is refused; the dialler logs it and backs off."""
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a = Node(reactor, N1, book(), capture, cluster="other")
    b = Node(reactor, N2, book(), capture)
    a.transport.send(hb(1))
    completer.succeedOnce().flush()
    assert b.received == []
    errors = capture.errors()
    assert any("refused peer connection" in e and "cluster 'other'" in e for e in errors)
    assert any("peer n2" in e and "refused our Hello" in e for e in errors)
    a.transport.send(hb(2))
    assert dialled(reactor) == []  # backing off
    reactor.advance(0.05)
    assert dialled(reactor) == [("127.0.0.1", 7002)]


def test_message_to_self_is_delivered_on_the_next_turn(capture):
    """A message addressed to this node loops back without touching the network."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    a.transport.send(hb(1, recipient=N1))
    assert a.received == []
    reactor.advance(0)
    assert a.received == [hb(1, recipient=N1)]
    assert dialled(reactor) == []


def test_send_never_raises(capture):
    """Unencodable or nonsense messages are logged and dropped; later ones still go."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(Heartbeat(N1, N2, -1, 0))
    a.transport.send(object())  # type: ignore[arg-type]
    a.transport.send(hb(2))
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert b.received == [hb(2)]
    assert any("cannot encode Heartbeat" in e for e in capture.errors())


def test_message_over_max_frame_bytes_is_dropped_not_sent(capture):
    """A message the peer would refuse as too large is dropped at the sender, with an error."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture, max_frame_bytes=200_000, chunk_size=1024)
    b = Node(reactor, N2, book(), capture, max_frame_bytes=200_000, chunk_size=1024)
    big = AppendEntries(N1, N2, 1, 0, 0, (Entry(1, 1, data=b"x" * 300_000),), 0)
    a.transport.send(big)
    a.transport.send(hb(1))
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    assert b.received == [hb(1)]
    assert not pump.clientIO.disconnected
    assert any("over max_frame_bytes 200000" in e for e in capture.errors())


def test_close_closes_connections_and_stops_dialling(capture):
    """close() fires once every connection is gone; nothing is sent or dialled afterwards."""
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(hb(1))
    pump = completer.succeedOnce()
    pump.flush()
    closed = b.transport.close()  # closes the accepted connection from a
    pump.flush()
    assert fired(closed) is None
    assert pump.clientIO.disconnected
    assert dialled(reactor) == [("127.0.0.1", 7002)]  # redialled at once: is b gone?
    probe = reactor.connectors[-1]
    closing = a.transport.close()
    assert fired(closing) is None
    assert probe.stoppedConnecting
    reactor.tcpClients.clear()
    a.transport.send(hb(2))
    reactor.advance(10)
    assert dialled(reactor) == []


def test_close_while_dialling_fires_at_once(capture):
    """A pending connection attempt does not delay close()."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    a.transport.send(hb(1))
    assert fired(a.transport.close()) is None
    ConnectionCompleter(reactor).failOnce()
    reactor.advance(10)
    assert dialled(reactor) == []


# ------------------------------------------------------------------ snapshots


@pytest.fixture
def chunks(monkeypatch):
    """Record (offset, length) of every snapshot chunk any inbox receives."""
    seen: list = []
    original = PeerInbox.snapshot_chunk

    def spy(self, message, offset, total, crc32, data, done):
        seen.append((offset, len(data)))
        return original(self, message, offset, total, crc32, data, done)

    monkeypatch.setattr(PeerInbox, "snapshot_chunk", spy)
    return seen


def snapshot_nodes(capture):
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture, chunk_size=CHUNK)
    b = Node(reactor, N2, book(), capture)
    data = random.Random(3).randbytes(3 * 1024 * 1024 + 123)
    a.sources[META] = data
    return reactor, a, b, data


def test_multi_megabyte_snapshot_is_streamed_in_paced_chunks_then_installed(capture, chunks):
    """A 3 MiB snapshot goes chunk by chunk; it is stored, then InstallSnapshot is delivered."""
    reactor, a, b, data = snapshot_nodes(capture)
    install = InstallSnapshot(N1, N2, 4, META)
    a.transport.send(install)
    a.transport.send(install)  # a duplicate while streaming starts no second stream
    reactor.advance(0)  # the stream fetches the data on the next turn, then dials
    pump = ConnectionCompleter(reactor).succeedOnce(greet=False)
    pump.pump()
    pump.pump()
    assert len(chunks) == 1  # paced: the next chunk waits for this one's answer
    a.transport.send(hb(7))  # other messages are not held behind the snapshot
    pump.flush()
    expected = [(offset, min(CHUNK, len(data) - offset)) for offset in range(0, len(data), CHUNK)]
    assert chunks == expected
    assert b.snapshots == [(META, data)]
    assert b.received == [hb(7), install]
    assert a.transport.peer_status()[N2]["snapshot"] is None


def test_snapshot_resumes_at_the_receivers_offset_after_a_dropped_connection(capture, chunks):
    """After a reconnect the stream continues where the receiver is, not from zero."""
    reactor, a, b, data = snapshot_nodes(capture)
    install = InstallSnapshot(N1, N2, 4, META)
    a.transport.send(install)
    reactor.advance(0)
    completer = ConnectionCompleter(reactor)
    pump = completer.succeedOnce(greet=False)
    while len(chunks) < 5:
        pump.pump()
    pump.serverIO.loseConnection()
    pump.flush()
    assert b.snapshots == []
    reactor.advance(0.05)
    completer.succeedOnce().flush()
    assert b.snapshots == [(META, data)]
    assert b.received == [install]
    offsets = [offset for offset, _ in chunks]
    assert offsets.count(0) == 1
    assert offsets[-1] == len(data) - len(data) % CHUNK


def test_snapshot_without_data_is_dropped_with_a_warning(capture):
    """If the snapshot source has no data, nothing is dialled and a warning is logged."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    a.transport.send(InstallSnapshot(N1, N2, 4, META))
    reactor.advance(0)
    assert dialled(reactor) == []
    assert any("no data for snapshot 500" in line for line in capture.lines())


def test_snapshot_source_may_return_a_deferred(capture):
    """A snapshot source that reads off-thread returns a Deferred of the data."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)
    b = Node(reactor, N2, book(), capture)
    pending: Deferred = Deferred()
    a.sources[META] = pending
    a.transport.send(InstallSnapshot(N1, N2, 4, META))
    reactor.advance(0)
    assert dialled(reactor) == []
    pending.callback(b"tiny snapshot")
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert b.snapshots == [(META, b"tiny snapshot")]
    assert b.received == [InstallSnapshot(N1, N2, 4, META)]


def test_snapshot_stream_gives_up_when_the_receiver_keeps_failing(capture, chunks):
    """A receiver that cannot store the snapshot makes the sender retry a few times, then stop."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture)

    def broken_store(meta, data):
        raise OSError("disk full")

    b = Node(reactor, N2, book(), capture, store=broken_store)
    a.sources[META] = b"small snapshot"
    a.transport.send(InstallSnapshot(N1, N2, 4, META))
    reactor.advance(0)
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert chunks == [(0, 14)] * 4
    assert b.received == []
    assert any(
        "giving up snapshot 500 to n2: sent back 4 times" in line for line in capture.lines()
    )
    assert a.transport.peer_status()[N2]["snapshot"] is None


def test_out_of_bounds_messages_are_refused_counted_and_the_link_kept(capture):
    """A peer sending term 2**64-1 (it fits the u64 field) is refused message by message."""
    reactor = MemoryReactorClock()
    a, b = Node(reactor, N1, book(), capture), Node(reactor, N2, book(), capture)
    a.transport.send(hb(1))
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    for _ in range(3):
        a.transport.send(Heartbeat(N1, N2, 2**64 - 1, 0))
    a.transport.send(hb(2))
    pump.flush()
    assert b.received == [hb(1), hb(2)]
    assert b.transport.refused_messages() == {N1: 3}
    assert a.transport.peer_status()[N2]["connected"] is True
    assert capture.errors() == []


def test_disconnect_drops_a_down_peers_queue_and_stops_dialling_until_the_next_send(capture):
    """As for a removed peer: what was queued while it was down is never delivered, and it
    is not dialled again; a later send (it was added back) dials it and delivers only that."""
    reactor = MemoryReactorClock()
    completer = ConnectionCompleter(reactor)
    a = Node(reactor, N1, book(), capture, initial_backoff=0.1, max_backoff=1.0)
    a.transport.send(hb(1))
    a.transport.send(hb(2))
    completer.failOnce()  # the peer is down: the messages wait in the queue
    assert fired(a.transport.disconnect(N2)) is None
    reactor.advance(10)
    assert dialled(reactor) == []
    assert N2 not in a.transport.peer_status()
    b = Node(reactor, N2, book(), capture)
    a.transport.send(hb(3))
    assert dialled(reactor) == [("127.0.0.1", 7002)]
    completer.succeedOnce().flush()
    assert b.received == [hb(3)]


def test_a_probe_accepted_by_a_dying_process_still_ends_in_a_report(capture):
    """A process being killed closes its sockets one by one: the redial can be
    accepted by its listening socket before that closes too, and then reset
    before our Hello is answered. The link must dial again (nothing queued to
    send) so that the next refusal tells the node; otherwise the survivors wait
    out a whole election timeout (tests/integration SIGKILL test, flaky)."""
    reactor, completer, pump, _a, gone = connected_and_watched(capture)
    pump.serverIO.loseConnection()  # the peer's process dies ...
    pump.flush()
    assert dialled(reactor) == [("127.0.0.1", 7002)]  # ... the probe goes out at once
    # accepted into the dying listener's backlog, our Hello written, never read:
    _host, _port, factory, *_ = reactor.tcpClients.pop()
    probe = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7002))
    probe.makeConnection(StringTransport())
    probe.connectionLost(Failure(ConnectionLost()))  # and reset
    assert gone == []
    reactor.advance(1.0)  # a backoff later: dialled again though nothing is queued
    assert dialled(reactor) == [("127.0.0.1", 7002)]
    completer.failOnce(Failure(ConnectionRefusedError()))
    assert gone == [N2]
