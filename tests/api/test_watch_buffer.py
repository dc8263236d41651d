"""The bytes a client connection holds bound its watches (a socket the client never reads)."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.protocols.policies import WrappingFactory

from leeky_twisted.api.amp_api import ClientAPIProtocol, ClientLocator
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.netutil import buffered_bytes
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, SocketTransport

LIMIT = 20_000
VALUE = "v" * 1000


class Client(amp.AMP):
    """The client's end: sends boxes as bytes, and records what the node pushed."""

    def __init__(self) -> None:
        super().__init__()
        self.wire = StringTransport()
        self.makeConnection(self.wire)
        self.revisions: list[int] = []
        self.ended: list[str] = []

    def send(self, command: type[amp.Command], **arguments: object) -> bytes:
        """Return the bytes of one request (its answer is not awaited)."""
        self.callRemote(command, **arguments)
        data = self.wire.value()
        self.wire.clear()
        return data

    @cc.WatchEvents.responder
    def events(self, watch_id: int, events: str, next_revision: int) -> dict[str, object]:
        import json

        self.revisions.extend(e["revision"] for e in json.loads(events))
        return {}

    @cc.WatchEnded.responder
    def watch_ended(self, watch_id: int, reason: str) -> dict[str, object]:
        self.ended.append(reason)
        return {}


class Node:
    """One node's client API on a :class:`SocketTransport`, with a watch of prefix k."""

    def __init__(self) -> None:
        self.net = FakeNetwork()
        self.raft = FakeRaftNode("1", "10.0.0.1:7001")
        frontend = self.net.serve(("10.0.0.1", 7001), self.raft, forward=False)
        self.hub = frontend.watches
        self.index = 0
        self.proto = ClientAPIProtocol(locator=ClientLocator(frontend))
        self.proto.max_watch_buffer_bytes = LIMIT
        self.transport = SocketTransport()
        self.proto.makeConnection(self.transport)
        self.client = Client()

    def watch(self, start_revision: int = 0) -> None:
        self.proto.dataReceived(
            self.client.send(
                cc.Watch, start="k", prefix=True, start_revision=start_revision, batched_acks=True
            )
        )
        self.net.clock.advance(0)  # the answer goes out, then the held events

    def commit(self) -> None:
        self.index += 1
        self.raft.state_machine.apply(self.index, encode_command(Put("k", VALUE)))

    def read(self) -> None:
        """The client reads its socket."""
        self.client.dataReceived(self.transport.drain())


def test_a_client_acknowledging_what_it_never_reads_is_cancelled_at_the_byte_limit():
    """WatchAck counts events; a client acknowledging exactly what it was sent keeps its
    backlog at 0 while never reading. The connection's unsent bytes stop the watch:
    cancelled as slow, so the node holds at most the limit and one more box."""
    node = Node()
    node.watch()
    for _ in range(200):  # 200 KB of events, ten times the limit
        node.commit()
        for watcher in node.hub.watchers():
            node.proto.dataReceived(
                node.client.send(cc.WatchAck, watch_id=watcher.id, count=watcher.backlog)
            )
    assert node.hub.watchers() == [] and node.hub.cancelled_slow == 1
    assert buffered_bytes(node.transport) < LIMIT + 2 * len(VALUE)
    node.read()
    (reason,) = node.client.ended
    resume = node.client.revisions[-1] + 1
    assert reason.startswith("watcher fell behind: its connection holds ")
    assert reason.endswith(f"resume from revision {resume}")


def test_a_slow_reader_is_cancelled_then_resumes_without_gap_or_repeat():
    """An honest client that reads late (in one go, after many events) gets every
    event before the cancellation, and resumes from the revision it names."""
    node = Node()
    node.watch()
    for _ in range(60):
        node.commit()
    node.read()  # all it was sent, then WatchEnded
    (reason,) = node.client.ended
    resume = node.client.revisions[-1] + 1
    assert node.client.revisions == list(range(1, resume))
    assert reason.endswith(f"resume from revision {resume}")
    node.watch(start_revision=resume)
    node.read()
    assert node.client.revisions == list(range(1, 61))
    node.commit()
    node.read()
    assert node.client.revisions == list(range(1, 62)) and len(node.hub.watchers()) == 1


def test_a_client_that_reads_is_never_cancelled():
    node = Node()
    node.watch()
    for _ in range(200):
        node.commit()
        node.read()
    assert node.client.revisions == list(range(1, 201)) and not node.client.ended


def test_buffered_bytes_counts_a_tcp_transports_buffer():
    tcp = SocketTransport()
    tcp.dataBuffer, tcp.offset = b"x" * 100, 40
    tcp.write(b"y" * 7)
    assert buffered_bytes(tcp) == 67
    assert buffered_bytes(StringTransport()) == 0  # no socket buffer known: no bound


def test_buffered_bytes_looks_through_a_guard_and_counts_tls_plaintext():
    """Under TLS (here between wrappers, as the guard and role check wrap it; a wrapper
    forwards unknown attributes to the layer below) the TCP transport holds the
    ciphertext (the handshake's first flight here); TLS itself holds plaintext for a
    reactor turn, and until its handshake ends (``_appSendBuffer``): all count, seen
    from the application's transport down."""
    from twisted.internet import ssl
    from twisted.internet.protocol import Factory
    from twisted.internet.task import Clock
    from twisted.protocols.tls import TLSMemoryBIOFactory

    tcp = SocketTransport()
    clock = Clock()
    checking = WrappingFactory(Factory.forProtocol(amp.AMP))  # as the role check wraps it
    tls = TLSMemoryBIOFactory(ssl.optionsForClientTLS("node.example"), True, checking, clock)
    guard = WrappingFactory(tls).buildProtocol(None)
    guard.makeConnection(tcp)
    hello = tcp._tempDataLen
    assert hello > 0
    app = guard.wrappedProtocol.wrappedProtocol.wrappedProtocol
    assert isinstance(app, amp.AMP)
    app.transport.write(b"a" * 1000)  # gathered for the next reactor turn
    assert buffered_bytes(app.transport) == hello + 1000
    clock.advance(0)  # ... then waits for the handshake
    assert guard.wrappedProtocol._appSendBuffer == [b"a" * 1000]
    assert buffered_bytes(app.transport) == hello + 1000
