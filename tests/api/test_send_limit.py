"""A client that sends requests and never reads the answers: bounded by bytes unsent.

The node stops reading its requests while it holds more than a mark unsent,
reads again once under half of it, and aborts it over the hard cap (counted,
logged once per peer per interval); other connections go on.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from leeky_twisted.api.amp_api import ClientAPIProtocol, ClientLocator
from leeky_twisted.api.http_server import JSONRPCHTTPProtocol
from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.sendlimit import RESUME_POLL, SendLimit
from leeky_twisted.security.connlimits import (
    _MAX_KINDS,
    ConnectionGuard,
    GuardedFactory,
    PortCaps,
    RateLimitedLog,
)
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, SocketTransport

VALUE = "v" * 10_000
PAUSE = 30_000
CAP = 100_000


def _amp_node(clock: Clock) -> tuple[ClientLocator, FakeRaftNode]:
    net = FakeNetwork(clock)
    raft = FakeRaftNode("1", "10.0.0.1:7001")
    frontend = net.serve(("10.0.0.1", 7001), raft, forward=False)
    raft.state_machine.apply(1, encode_command(Put("big", VALUE)))
    raft.index = 1
    return ClientLocator(frontend), raft


def _connect_amp(locator: ClientLocator) -> tuple[ClientAPIProtocol, SocketTransport]:
    proto = ClientAPIProtocol(locator=locator)
    transport = SocketTransport()
    proto.makeConnection(transport)
    proto.send_limit.pause_unsent = PAUSE
    proto.send_limit.max_unsent = CAP
    proto.send_limit.check_bytes = 1
    return proto, transport


def _gets(n: int) -> bytes:
    """The bytes of ``n`` pipelined Get requests (stale: answered locally)."""
    client = amp.AMP()
    wire = StringTransport()
    client.makeConnection(wire)
    for _ in range(n):
        client.callRemote(cc.Get, key="big", stale=True)
    return wire.value()


def test_pipelined_gets_never_read_pause_reading_then_abort_over_the_cap():
    """Answers pile up: reading stops over the mark, the connection is aborted over the
    cap with at most the cap plus one answer held, and no more is buffered after."""
    clock = Clock()
    locator, _ = _amp_node(clock)
    proto, transport = _connect_amp(locator)
    other, other_transport = _connect_amp(locator)
    proto.dataReceived(_gets(2))
    clock.advance(0)
    assert transport.producerState == "producing" and not transport.aborted
    proto.dataReceived(_gets(200))  # one read of many requests: 2 MB of answers
    clock.advance(0)
    assert transport.producerState == "paused" and transport.aborted
    assert transport._tempDataLen <= CAP + 2 * len(VALUE)
    other.dataReceived(_gets(1))  # another client is served
    clock.advance(0)
    assert len(other_transport.drain()) > len(VALUE) and not other_transport.aborted


def test_a_slow_reader_is_paused_then_resumed_never_aborted():
    """Over the mark reading stops; once the client reads it resumes (polled on the clock)."""
    clock = Clock()
    locator, _ = _amp_node(clock)
    proto, transport = _connect_amp(locator)
    proto.dataReceived(_gets(5))  # 50 KB: over the mark, under the cap
    clock.advance(0)
    assert transport.producerState == "paused" and not transport.aborted
    clock.advance(RESUME_POLL)
    assert transport.producerState == "paused"  # still unread
    transport.drain()
    clock.advance(RESUME_POLL)
    assert transport.producerState == "producing" and not proto.send_limit.paused
    for _ in range(20):  # a client that reads after each batch goes on for ever
        proto.dataReceived(_gets(5))
        clock.advance(0)
        transport.drain()
        clock.advance(RESUME_POLL)
    assert not transport.aborted and transport.producerState == "producing"


def test_one_answer_larger_than_the_cap_goes_to_a_client_that_reads():
    clock = Clock()
    limit = SendLimit(
        SocketTransport(), clock, "client", pause_unsent=10, max_unsent=100, check_bytes=1
    )
    limit.transport.write(b"x" * 1000)
    limit.queued(1000)
    assert not limit.transport.aborted and limit.paused
    limit.transport.write(b"y" * 1000)
    limit.queued(1000)
    assert limit.transport.aborted and limit.aborted
    assert clock.getDelayedCalls() == []  # the poll stopped with the connection


def test_an_abort_is_counted_on_the_ports_guard_and_logged_by_peer_also_under_tls():
    clock = Clock()
    guard = ConnectionGuard("client", PortCaps(10, 10), clock)
    factory = GuardedFactory(_NullFactory(), guard)
    logged: list[str] = []
    guard.events.warn = lambda kind, format, **fields: logged.append(kind)  # type: ignore[method-assign]
    for under_tls in (False, True):
        wrapper = factory.buildProtocol(_Addr("10.0.0.9"))
        assert wrapper is not None
        tcp = SocketTransport()
        wrapper.makeConnection(tcp)
        # under TLS, the protocol's transport is a wrapper over the guard's
        transport = _wrapped_once(wrapper) if under_tls else wrapper
        limit = SendLimit(
            transport, clock, "client", pause_unsent=10, max_unsent=100, check_bytes=1
        )
        tcp.write(b"x" * 300)
        limit.queued(100)
        assert tcp.aborted
    assert guard.closed["unsent"] == 2 and logged == ["unsent 10.0.0.9"] * 2


def test_a_log_keyed_by_peer_forgets_peers_past_their_interval():
    """Kinds keyed by peer would grow without end; past _MAX_KINDS the expired go."""
    clock = Clock()
    rated = RateLimitedLog(clock.seconds, 60.0)
    for n in range(_MAX_KINDS + 1):
        rated.warn(f"unsent 10.0.{n // 256}.{n % 256}", "quiet")
    clock.advance(61)
    rated.warn("unsent 10.9.9.9", "quiet")
    assert len(rated._next) == 1


def test_http_pipelined_gets_never_read_are_aborted_over_the_cap():
    clock = Clock()
    locator, _ = _amp_node(clock)
    rpc = KeyValueJSONRPC(locator.frontend, 1 << 20)
    proto = JSONRPCHTTPProtocol(rpc, dict)
    transport = SocketTransport()
    proto.makeConnection(transport)
    assert proto.send_limit is not None
    proto.send_limit.pause_unsent, proto.send_limit.max_unsent = PAUSE, CAP
    proto.send_limit.check_bytes = 1
    body = json.dumps(
        {"jsonrpc": "2.0", "method": "get", "params": ["big", {"stale": True}], "id": 1}
    ).encode()
    request = b"POST /jsonrpc HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    proto.dataReceived(request * 2)
    clock.advance(0)
    assert b'"result": "vvv' in transport.drain() and transport.producerState == "producing"
    proto.dataReceived(request * 100)
    clock.advance(0)
    assert transport.aborted and transport.producerState == "paused"
    assert transport._tempDataLen <= CAP + 2 * len(VALUE)


def test_the_buffer_is_looked_at_once_check_bytes_more_were_left_in_it():
    """Small answers under TLS (each one left in the buffer) are checked in bulk."""
    tcp = SocketTransport()
    limit = SendLimit(tcp, Clock(), "client", pause_unsent=10**6, max_unsent=10**6)
    tcp.write(b"x" * (2 * 10**6))
    for _ in range(-(-limit.check_bytes // 100) - 1):
        limit.queued(100)
    assert not tcp.aborted
    limit.queued(100)
    assert tcp.aborted


def test_http_pipelining_pause_and_unsent_pause_do_not_release_each_other():
    """Reading resumes only when neither too many answers are pending nor too many
    bytes are unsent."""
    limit = SendLimit(
        SocketTransport(), Clock(), "http", pause_unsent=10, max_unsent=10**6, check_bytes=1
    )
    limit.hold_reading()  # pipelining
    limit.transport.write(b"x" * 100)
    limit.queued(100)  # unsent
    limit.release_reading()  # the pipeline drained
    assert limit.transport.producerState == "paused"
    limit.transport.drain()
    limit.clock.advance(RESUME_POLL)
    assert limit.transport.producerState == "producing"


def _wrapped_once(transport: object) -> ProtocolWrapper:
    layer = WrappingFactory(_NullFactory()).buildProtocol(None)
    layer.makeConnection(transport)
    return layer


class _NullFactory:
    def buildProtocol(self, addr: object) -> amp.AMP:
        return amp.AMP()

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


class _Addr:
    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 1
