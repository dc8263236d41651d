"""Connection caps, first-bytes and idle timeouts, descriptor budget (security/connlimits.py)."""

from __future__ import annotations

import resource
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import LogLevel, globalLogPublisher

from leeky_twisted.protocol.netutil import write_now
from leeky_twisted.security.connlimits import (
    RESERVED_DESCRIPTORS,
    ConnectionGuard,
    GuardedFactory,
    PortCaps,
    plan_caps,
    raise_descriptor_limit,
)
from leeky_twisted.security.tls import RefusalLoggingFactory


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def addr(host: str = "10.0.0.9", port: int = 40000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def guarded(
    clock: Clock | None = None,
    caps: PortCaps | None = None,
    idle: float | None = 300.0,
    handshake: float | None = 10.0,
) -> tuple[GuardedFactory, ConnectionGuard, Clock]:
    clock = clock if clock is not None else Clock()
    guard = ConnectionGuard(
        "client",
        caps if caps is not None else PortCaps(4, 2),
        clock,
        idle_timeout=idle,
        handshake_timeout=handshake,
        log_interval=60,
    )
    return GuardedFactory(Factory.forProtocol(Recorder), guard), guard, clock


def connect(factory: GuardedFactory, host: str = "10.0.0.9", port: int = 40000) -> Any:
    proto = factory.buildProtocol(addr(host, port))
    if proto is None:
        return None
    transport = StringTransportWithDisconnection()
    transport.protocol = proto
    proto.makeConnection(transport)
    return proto


@pytest.fixture
def warnings() -> Any:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# ----------------------------------------------------------------- caps


def test_connections_over_the_port_cap_are_refused_at_once_and_counted():
    """Past the cap, buildProtocol returns None (Twisted closes the socket); a slot freed
    by a closed connection is given to the next one."""
    factory, guard, _ = guarded(caps=PortCaps(3, 3))
    open_ = [connect(factory, f"10.0.0.{i}") for i in range(3)]
    assert all(p is not None for p in open_)
    assert connect(factory, "10.0.0.7") is None
    assert guard.refused["port_cap"] == 1 and guard.open == 3
    open_[0].transport.loseConnection()
    assert guard.open == 2
    assert connect(factory, "10.0.0.7") is not None


def test_one_source_address_may_not_take_more_than_its_share():
    """The per-host cap refuses a third connection from one address, not from another."""
    factory, guard, _ = guarded(caps=PortCaps(10, 2))
    assert connect(factory, "10.0.0.1", 1) and connect(factory, "10.0.0.1", 2)
    assert connect(factory, "10.0.0.1", 3) is None
    assert guard.refused["host_cap"] == 1
    assert connect(factory, "10.0.0.2", 1) is not None
    assert guard.by_host == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_refusals_are_logged_at_most_once_per_interval(warnings):
    """A flood of refused connections logs one line a minute, saying how many were not logged."""
    factory, guard, clock = guarded(caps=PortCaps(1, 1))
    connect(factory).dataReceived(b"x")
    for port in range(1000):
        connect(factory, "10.0.0.2", port)
    assert guard.refused["port_cap"] == 1000
    assert len(warnings) == 1 and "refused a connection from 10.0.0.2" in warnings[0]
    clock.advance(61)
    connect(factory, "10.0.0.3")
    assert len(warnings) == 2 and "999 more like it not logged" in warnings[1]


# ------------------------------------------------------------- timeouts


def test_a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout():
    """No first bytes within 10 s: aborted, counted, and its slot given back."""
    factory, guard, clock = guarded()
    proto = connect(factory)
    clock.advance(9.9)
    assert not proto.transport.disconnected
    clock.advance(0.1)
    assert proto.transport.disconnected  # aborted, not a graceful close
    assert guard.closed["handshake"] == 1 and guard.open == 0


def test_an_idle_connection_is_closed_after_the_idle_timeout():
    """Bytes keep a connection open; idle_timeout seconds of silence close it."""
    factory, guard, clock = guarded()
    proto = connect(factory)
    clock.advance(1)
    proto.dataReceived(b"x")
    for _ in range(10):  # a chatty client is never idle
        clock.advance(200)
        proto.dataReceived(b"y")
    assert not proto.transport.disconnected
    assert proto.wrappedProtocol.received == [b"x"] + [b"y"] * 10
    clock.advance(299.9)
    assert not proto.transport.disconnected
    clock.advance(0.1)
    assert proto.transport.disconnected
    assert guard.closed["idle"] == 1 and guard.open == 0


def test_a_streamed_answer_keeps_its_connection_from_being_idle():
    """A client that asked once and only reads a stream is not idle while the stream flows."""
    factory, guard, clock = guarded()
    proto = connect(factory)
    proto.dataReceived(b"GET /events")
    for _ in range(10):
        clock.advance(200)
        proto.wrappedProtocol.transport.write(b"data: tick\n\n")
    assert not proto.transport.disconnected
    clock.advance(200)
    proto.wrappedProtocol.transport.writeSequence([b": ", b"keep\n"])
    clock.advance(299.9)
    assert not proto.transport.disconnected
    clock.advance(0.1)
    assert proto.transport.disconnected
    assert guard.closed["idle"] == 1


def test_without_an_idle_timeout_only_the_first_bytes_are_timed():
    """The peer port: once a peer spoke, silence never closes it (its Hello is timed apart)."""
    factory, _guard, clock = guarded(idle=None)
    proto = connect(factory)
    proto.dataReceived(b"hello")
    clock.advance(100_000)
    assert not proto.transport.disconnected
    assert clock.getDelayedCalls() == []


def test_a_closed_connection_leaves_no_timer_behind():
    """Closing cancels the connection's timer."""
    factory, guard, clock = guarded()
    proto = connect(factory)
    proto.transport.loseConnection()
    assert clock.getDelayedCalls() == []
    assert proto.wrappedProtocol is None and guard.open == 0


def test_timeouts_must_be_positive():
    with pytest.raises(ValueError):
        ConnectionGuard("x", PortCaps(1, 1), Clock(), idle_timeout=0)
    with pytest.raises(ValueError):
        PortCaps(0, 1)


def test_write_now_writes_through_the_guard():
    """The guard's wrapper adds no bytes: write_now reaches the transport underneath."""
    factory, _, _ = guarded()
    proto = factory.buildProtocol(addr())
    transport = StringTransport()
    proto.makeConnection(transport)
    write_now(proto.wrappedProtocol.transport, b"answer")
    assert transport.value() == b"answer"


def test_tls_handshake_must_complete_within_the_timeout():
    """Sending bytes is not enough on a TLS port: no finished handshake in 10 s, aborted."""
    clock = Clock()
    factory = RefusalLoggingFactory(
        Factory.forProtocol(Recorder), clock=clock, handshake_timeout=10.0
    )
    proto = factory.buildProtocol(addr())
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"half a ClientHello")
    clock.advance(10)
    assert transport.disconnected
    # a completed handshake stops the clock
    proto = factory.buildProtocol(addr())
    proto.makeConnection(StringTransport())
    proto.handshakeCompleted()
    assert clock.getDelayedCalls() == []


# ------------------------------------------------------- descriptor budget


@pytest.mark.parametrize("descriptors", [64, 256, 1024, 4096, 20000, 1 << 20])
def test_caps_leave_the_reserve_free_whatever_the_limit(descriptors):
    """Every port full still leaves RESERVED_DESCRIPTORS (for the disk) below a sane limit."""
    plan = plan_caps(descriptors)
    used = plan.peer.max_connections + 2 * plan.client.max_connections
    if descriptors >= 256:
        assert used + RESERVED_DESCRIPTORS <= descriptors
    assert plan.client.max_per_host <= plan.client.max_connections
    assert plan.peer.max_connections >= 8 and plan.client.max_connections >= 8
    assert not plan.warnings


def test_a_client_cap_over_the_budget_is_lowered_with_a_warning():
    plan = plan_caps(1024, max_client_connections=5000, max_per_host=10)
    assert plan.client.max_connections + RESERVED_DESCRIPTORS + plan.peer.max_connections <= 1024
    assert plan.client.max_per_host == 10
    assert "lowered" in plan.warnings[0]
    assert plan_caps(1024, max_client_connections=50).client == PortCaps(50, 25)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
    try:
        raised = raise_descriptor_limit()
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        expected = hard if hard != resource.RLIM_INFINITY else 65536
        assert raised == now == expected
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -------------------------------------------------------------- wiring


def test_every_listener_of_a_node_is_guarded_with_the_options(tmp_path):
    """twistd options reach a guard on each of the three ports; the peer port has its own
    cap and no idle timeout, the client ports the --idle-timeout and --max-client-connections."""

    from nodebuild import service_from

    from leeky_twisted.server.service import _Listener

    top = service_from(
        [
            "--id=1",
            "--peers=1=127.0.0.1:7001",
            f"--data-dir={tmp_path}",
            "--idle-timeout=7",
            "--handshake-timeout=3",
            "--max-client-connections=50",
            "--max-connections-per-host=20",
        ]
    )
    guards = {
        s.factory.guard.name: s.factory.guard
        for s in top
        if isinstance(s, _Listener) and isinstance(s.factory, GuardedFactory)
    }
    assert set(guards) == {"peer", "client", "http"}
    for name in ("client", "http"):
        assert guards[name].caps == PortCaps(50, 20)
        assert (guards[name].idle_timeout, guards[name].handshake_timeout) == (7, 3)
    assert guards["peer"].idle_timeout is None and guards["peer"].handshake_timeout == 3
    assert guards["peer"].caps != guards["client"].caps


def test_plain_listeners_ask_for_a_deep_backlog():
    """A flood of connections must not fill the kernel's queue for everyone else:
    the node's listeners ask for LISTEN_BACKLOG, not Twisted's default of 50."""
    from twisted.internet.protocol import Factory
    from twisted.internet.testing import MemoryReactor

    from leeky_twisted.server.service import LISTEN_BACKLOG, _Listener

    reactor = MemoryReactor()
    _Listener(reactor, "127.0.0.1", 0, Factory()).startService()
    (_port, _factory, backlog, _interface) = reactor.tcpServers[0]
    assert backlog == LISTEN_BACKLOG >= 1024


# ------------------------------------------------------ request read timeout


class Reader(Recorder):
    """A protocol whose requests end with a newline: it reports the unfinished one."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = b""
        self.done = 0

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.buffer += data
        while b"\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\n", 1)
            self.done += 1

    def unfinished_request(self) -> int | None:
        return self.done if self.buffer else None

    def held_bytes(self) -> int:
        return len(self.buffer)


def reading(
    protocol: Any = Reader, wrap: bool = False, timeout: float = 30.0, held: int | None = None
) -> tuple[Any, ConnectionGuard, Clock]:
    """Return a connected guarded ``protocol`` (idle 300 s), optionally under one more wrapper."""
    factory, guard, clock = reading_factory(protocol, wrap, timeout, held)
    return connect(factory), guard, clock


def reading_factory(
    protocol: Any = Reader,
    wrap: bool = False,
    timeout: float | None = 30.0,
    held: int | None = None,
) -> tuple[GuardedFactory, ConnectionGuard, Clock]:
    """Return a guarded factory of ``protocol`` with these request limits."""
    from twisted.protocols.policies import WrappingFactory

    clock = Clock()
    guard = ConnectionGuard(
        "client",
        PortCaps(4, 4),
        clock,
        idle_timeout=300.0,
        request_read_timeout=timeout,
        max_held_bytes=held,
    )
    inner: Any = Factory.forProtocol(protocol)
    if wrap:  # as TLS does: the reader sits under another ProtocolWrapper
        inner = WrappingFactory(inner)
    return GuardedFactory(inner, guard), guard, clock


@pytest.mark.parametrize("wrap", [False, True])
def test_a_request_dripped_a_byte_per_idle_timeout_is_cut_off(warnings, wrap):
    """Issue 19: one byte every 200 s kept a connection forever; now the request has 30 s."""
    proto, guard, clock = reading(wrap=wrap)
    proto.dataReceived(b"G")
    clock.advance(29)
    proto.dataReceived(b"E")  # the idle timer is happy; the request's deadline stands
    assert not proto.transport.disconnected
    clock.advance(1)
    assert proto.transport.disconnected
    assert guard.closed["request"] == 1 and guard.open == 0
    assert any("had not sent its request whole after 30.0 s" in w for w in warnings)


def test_whole_requests_are_not_cut_off_and_each_gets_its_own_deadline():
    """A request finished in time stops its deadline; the next one starts a new one."""
    proto, guard, clock = reading()
    for _ in range(5):
        proto.dataReceived(b"GET")
        clock.advance(20)
        proto.dataReceived(b" /\nPO")  # one request ends, the next starts
        clock.advance(20)
        proto.dataReceived(b"ST\n")
        clock.advance(100)
    assert not proto.transport.disconnected and guard.closed["request"] == 0
    assert [c for c in clock.getDelayedCalls() if c.active()] != []  # only the idle timer
    proto.transport.loseConnection()
    assert clock.getDelayedCalls() == []


def test_protocols_that_do_not_report_requests_are_only_idle_timed():
    """Without ``unfinished_request`` (or with no timeout) nothing but silence is timed."""
    proto, guard, clock = reading(protocol=Recorder)
    for _ in range(3):
        proto.dataReceived(b"x")
        clock.advance(200)
    assert not proto.transport.disconnected and guard.closed["request"] == 0
    proto, guard, clock = reading(timeout=None)  # type: ignore[arg-type]
    proto.dataReceived(b"x")
    clock.advance(200)
    assert not proto.transport.disconnected


def test_the_amp_client_port_reports_an_unfinished_box():
    """ClientAPIProtocol: bytes of a box held, or a box half built, count as a request."""
    from twisted.protocols import amp

    from leeky_twisted.api.amp_api import ClientAPIProtocol

    proto, guard, clock = reading(protocol=lambda: ClientAPIProtocol(max_request_bytes=1 << 20))
    app = proto.wrappedProtocol
    assert app.unfinished_request() is None
    box = amp.AmpBox({b"_command": b"Nope", b"_ask": b"1"}).serialize()
    proto.dataReceived(box)  # a whole box: answered (unknown command), nothing unfinished
    assert app.unfinished_request() is None
    for i in range(len(box)):  # then the same box, one byte every 10 s
        proto.dataReceived(box[i : i + 1])
        assert app.unfinished_request() == 1
        clock.advance(10)
        if proto.transport.disconnected:
            break
    assert i == 2 and guard.closed["request"] == 1  # 30 s after its first byte


def test_the_http_port_reports_an_unfinished_request():
    """JSONRPCHTTPProtocol: a partial head or body counts as a request; so does a body drained."""
    from leeky_twisted.api.http_server import JSONRPCHTTPProtocol

    class RPC:
        max_body_bytes = 10

        def too_large(self) -> dict[str, str]:
            return {"error": "too large"}

    def http() -> JSONRPCHTTPProtocol:
        return JSONRPCHTTPProtocol(RPC(), dict)  # type: ignore[arg-type]

    proto, guard, clock = reading(protocol=http)
    app = proto.wrappedProtocol
    proto.dataReceived(b"GET /status HTTP/1.1\r\n\r\n")
    assert app.unfinished_request() is None
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nContent-Length: 5\r\n\r\n{")
    assert app.unfinished_request() == 1
    clock.advance(30)
    assert proto.transport.disconnected and guard.closed["request"] == 1
    proto, guard, clock = reading(protocol=http)
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
    assert proto.wrappedProtocol.unfinished_request() == 0  # a refused body, being drained
    clock.advance(30)
    assert proto.transport.disconnected and guard.closed["request"] == 1


def test_the_request_read_timeout_reaches_the_client_ports_only(tmp_path):
    """--request-read-timeout (default 30 s) goes to the AMP and HTTP guards; peers have none."""
    from nodebuild import service_from

    from leeky_twisted.security.connlimits import DEFAULT_REQUEST_READ_TIMEOUT
    from leeky_twisted.server.service import _Listener

    def guards(*more: str) -> dict[str, ConnectionGuard]:
        argv = ["--id=1", "--peers=1=127.0.0.1:7001", f"--data-dir={tmp_path / str(len(more))}"]
        return {
            s.factory.guard.name: s.factory.guard
            for s in service_from([*argv, *more])
            if isinstance(s, _Listener) and isinstance(s.factory, GuardedFactory)
        }

    default = guards()
    assert default["client"].request_read_timeout == DEFAULT_REQUEST_READ_TIMEOUT == 30.0
    given = guards("--request-read-timeout=12")
    assert given["client"].request_read_timeout == given["http"].request_read_timeout == 12
    assert given["peer"].request_read_timeout is None


# ------------------------------------------------------------ held bytes


def test_unfinished_requests_of_a_port_hold_at_most_the_budget(warnings):
    """The read that takes the port's held bytes past the budget aborts its connection."""
    factory, guard, _ = reading_factory(timeout=None, held=100)
    a, b = connect(factory, port=1), connect(factory, port=2)
    a.dataReceived(b"x" * 60)
    b.dataReceived(b"y" * 30)
    assert guard.held == 90 and not b.transport.disconnected
    b.dataReceived(b"y" * 20)  # 110 > 100
    assert b.transport.disconnected and not a.transport.disconnected
    assert guard.refused["held_bytes"] == 1 and guard.held == 60
    assert any("held more than 100 bytes" in w for w in warnings)
    a.dataReceived(b"\n")  # a's request is whole: its bytes are given back
    assert guard.held == 0
    c = connect(factory, port=3)
    c.dataReceived(b"z" * 100)  # the whole budget is free again
    assert not c.transport.disconnected and guard.held == 100
    c.transport.loseConnection()
    assert guard.held == 0


def test_the_client_protocols_report_their_held_bytes():
    """AMP: the parsed keys and values and the unparsed rest; HTTP: the partial request."""
    from twisted.protocols import amp

    from leeky_twisted.api.amp_api import ClientAPIProtocol
    from leeky_twisted.api.http_server import JSONRPCHTTPProtocol

    app = ClientAPIProtocol(max_request_bytes=1 << 20)
    app.makeConnection(StringTransport())
    box = amp.AmpBox({b"_command": b"Put", b"_ask": b"1", b"value": b"v" * 1000}).serialize()
    app.dataReceived(box[:-10])
    assert len(box) - 10 - 20 < app.held_bytes() <= len(box)
    app.dataReceived(box[-10:])
    assert app.held_bytes() == 0
    http = JSONRPCHTTPProtocol(None, dict)  # type: ignore[arg-type]
    http.makeConnection(StringTransport())
    http.dataReceived(b"GET /status HTT")
    assert http.held_bytes() == 15


def test_the_client_ports_get_the_held_bytes_budget(tmp_path):
    """256 MiB per client port, or four of the largest requests when values are huge."""
    from nodebuild import service_from

    from leeky_twisted.security.connlimits import DEFAULT_HELD_BYTES
    from leeky_twisted.server.service import _Listener

    def guards(*more: str) -> dict[str, ConnectionGuard]:
        argv = ["--id=1", "--peers=1=127.0.0.1:7001", f"--data-dir={tmp_path / str(len(more))}"]
        return {
            s.factory.guard.name: s.factory.guard
            for s in service_from([*argv, *more])
            if isinstance(s, _Listener) and isinstance(s.factory, GuardedFactory)
        }

    default = guards()
    assert default["client"].max_held_bytes == default["http"].max_held_bytes
    assert default["client"].max_held_bytes == DEFAULT_HELD_BYTES == 256 << 20
    assert default["peer"].max_held_bytes is None
    huge = guards(f"--max-value-bytes={64 << 20}")
    assert huge["client"].max_held_bytes > 4 * 2 * (64 << 20)
