"""The UDP adapter: ticking on an injected clock, sending, receiving, and surviving errors."""

from __future__ import annotations

import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorUDP, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import Packet, PacketKind
from leeky_twisted.membership.gossip_core import GossipConfig, GossipCore, MemberState
from leeky_twisted.membership.udp import GossipService, make_gossip_service


@implementer(IUDPTransport)
class RecordingDatagramTransport:
    """A UDP transport that records what is written, and can be told to fail."""

    def __init__(self, host: str, port: int) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.host = host
        self.port = port
        self.fail_with: Exception | None = None
        self.stopped = False
        self.broadcast = False

    def write(self, packet: bytes, addr: Any = None) -> None:
        """Record ``packet`` for ``addr`` (or raise ``fail_with``)."""
        if self.fail_with is not None:
            raise self.fail_with
        self.written.append((packet, addr))

    def connect(self, host: str, port: int) -> None:
        """Refuse: gossip ports are never connected."""
        raise NotImplementedError

    def getHost(self) -> IPv4Address:
        """Return the bound address."""
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> defer.Deferred[None]:
        """Mark the port closed."""
        self.stopped = True
        return defer.succeed(None)

    def setBroadcastAllowed(self, enabled: bool) -> None:
        """Record the flag."""
        self.broadcast = enabled

    def getBroadcastAllowed(self) -> bool:
        """Return the flag."""
        return self.broadcast

    def take(self) -> list[tuple[bytes, tuple[str, int]]]:
        """Return and forget what was written."""
        out, self.written = self.written, []
        return out


@implementer(IReactorUDP)
class FakeUDPReactor(task.Clock):
    """A Clock that can listen on UDP (with recording transports) and resolve names."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        super().__init__()
        self.names = names or {}
        self.resolved: list[str] = []
        self.ports: dict[int, tuple[DatagramProtocol, RecordingDatagramTransport]] = {}
        self.pending_resolution: defer.Deferred[str] | None = None
        self.hold_resolution = False

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> RecordingDatagramTransport:
        """Bind ``protocol`` to a recording transport (port 0 picks 40000+)."""
        bound = port or 40000 + len(self.ports)
        transport = RecordingDatagramTransport(interface or "0.0.0.0", bound)
        protocol.makeConnection(transport)  # type: ignore[arg-type]
        self.ports[bound] = (protocol, transport)
        return transport

    def resolve(self, name: str, timeout: Any = (1, 3, 11, 45)) -> defer.Deferred[str]:
        """Resolve from the ``names`` table, now or when ``finish_resolution`` is called."""
        self.resolved.append(name)
        if self.hold_resolution:
            self.pending_resolution = defer.Deferred()
            return self.pending_resolution
        if name in self.names:
            return defer.succeed(self.names[name])
        return defer.fail(DNSLookupError(name))


def make_core(i: int, **knobs: Any) -> GossipCore:
    """Return a core of node ``n<i>`` advertising 10.0.0.<i>:7946."""
    cfg = GossipConfig(
        NodeId(f"n{i}"), (f"10.0.0.{i}", 7946), "udp", {"peer": f"10.0.0.{i}:7000"}, **knobs
    )
    return GossipCore(cfg, random.Random(i))


def decoded(written: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[tuple[str, int], Packet]]:
    """Decode recorded datagrams."""
    return [(addr, codec.decode(data, "udp")) for data, addr in written]


def test_fakes_provide_their_interfaces() -> None:
    """The recording transport and fake reactor match the Twisted interfaces they stand for."""
    assert verifyObject(IUDPTransport, RecordingDatagramTransport("h", 1))
    assert verifyObject(IReactorUDP, FakeUDPReactor())


def test_service_listens_and_ticks_on_the_injected_clock() -> None:
    """startService binds the port and ticks the core every tick_interval."""
    reactor = FakeUDPReactor()
    core = make_core(1)
    svc = GossipService(reactor, core, 7946, "10.0.0.1", tick_interval=0.1)
    svc.startService()
    assert svc.bound_port() == 7946
    _, transport = reactor.ports[7946]
    assert transport.host == "10.0.0.1"
    reactor.pump([0.1] * 25)
    assert core.now == 25
    svc.stopService()
    assert transport.stopped and svc.bound_port() is None
    reactor.pump([0.1] * 10)
    assert core.now == 25


def test_a_late_reactor_ticks_once_not_many_times() -> None:
    """After a stall the core advances one tick: acks waiting to be read don't time out."""
    reactor = FakeUDPReactor()
    core = make_core(1)
    svc = GossipService(reactor, core, 7946)
    svc.startService()
    reactor.advance(5.0)
    assert core.now == 1


def test_join_before_start_is_sent_at_start() -> None:
    """A join queued before the service starts goes out when it starts listening."""
    reactor = FakeUDPReactor()
    svc = GossipService(reactor, make_core(1), 7946)
    svc.join([("10.0.0.2", 7946)])
    svc.startService()
    _, transport = reactor.ports[7946]
    [(addr, p)] = decoded(transport.take())
    assert addr == ("10.0.0.2", 7946) and p.kind is PacketKind.JOIN


def test_two_services_find_each_other() -> None:
    """Datagrams carried between two adapters let a joiner and a seed learn of each other."""
    reactor = FakeUDPReactor()
    a = GossipService(reactor, make_core(1), 7001)
    b = GossipService(reactor, make_core(2), 7002)
    a.startService()
    b.startService()
    ends = {("10.0.0.1", 7946): reactor.ports[7001], ("10.0.0.2", 7946): reactor.ports[7002]}
    srcs = {7001: ("10.0.0.1", 7946), 7002: ("10.0.0.2", 7946)}

    def carry() -> None:
        moved = True
        while moved:
            moved = False
            for port, (_, transport) in list(reactor.ports.items()):
                for data, addr in transport.take():
                    moved = True
                    ends[addr][0].datagramReceived(data, srcs[port])

    b.join([("10.0.0.1", 7946)])
    for _ in range(30):
        carry()
        reactor.advance(0.1)
    for svc, other in ((a, "n2"), (b, "n1")):
        assert svc.core.members()[NodeId(other)].state is MemberState.ALIVE


def test_garbage_is_counted_not_raised() -> None:
    """Random datagrams are dropped by the core and counted; nothing is sent back."""
    reactor = FakeUDPReactor()
    svc = GossipService(reactor, make_core(1), 7946)
    svc.startService()
    protocol, transport = reactor.ports[7946]
    rng = random.Random(0)
    for _ in range(50):
        protocol.datagramReceived(rng.randbytes(rng.randrange(100)), ("6.6.6.6", 6))
    assert svc.counters()["dropped_malformed"] == 50
    assert transport.take() == []


def test_a_core_that_raises_is_contained() -> None:
    """Should the core raise on input or tick, the adapter counts it and keeps running."""
    reactor = FakeUDPReactor()
    core = make_core(1)
    svc = GossipService(reactor, core, 7946)
    svc.startService()
    protocol, _ = reactor.ports[7946]

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    core.receive = boom  # type: ignore[method-assign]
    core.tick = boom  # type: ignore[method-assign]
    protocol.datagramReceived(b"x", ("1.2.3.4", 5))
    reactor.pump([0.1] * 3)
    counters = svc.counters()
    assert counters["receive_errors"] == 1 and counters["tick_errors"] == 3
    assert svc.running


def test_send_errors_are_counted() -> None:
    """A failing write (e.g. unreachable network) is counted, not raised."""
    reactor = FakeUDPReactor()
    svc = GossipService(reactor, make_core(1), 7946)
    svc.startService()
    _, transport = reactor.ports[7946]
    transport.fail_with = OSError("network unreachable")
    svc.join([("10.0.0.2", 7946)])
    assert svc.counters()["send_errors"] == 1


def test_host_names_are_resolved_and_cached() -> None:
    """Seeds given by name are resolved once, then sent to by IP until the cache expires."""
    reactor = FakeUDPReactor({"seed.example": "10.0.0.9"})
    svc = GossipService(reactor, make_core(1), 7946)
    svc.startService()
    _, transport = reactor.ports[7946]
    svc.join([("seed.example", 7946)])
    reactor.pump([0.1] * 20)  # JOIN retried each period
    addrs = [addr for _, addr in transport.take()]
    assert addrs and set(addrs) == {("10.0.0.9", 7946)}
    assert reactor.resolved == ["seed.example"]
    reactor.advance(31)
    reactor.pump([0.1] * 10)
    assert reactor.resolved == ["seed.example", "seed.example"]


def test_datagrams_wait_for_a_name_being_resolved() -> None:
    """While a name resolves, its datagrams queue; they go out when it resolves."""
    reactor = FakeUDPReactor()
    reactor.hold_resolution = True
    svc = GossipService(reactor, make_core(1), 7946)
    svc.startService()
    _, transport = reactor.ports[7946]
    svc.join([("seed.example", 7946)])
    reactor.pump([0.1] * 10)  # a retry while the first lookup is pending
    assert transport.take() == [] and reactor.resolved == ["seed.example"]
    assert reactor.pending_resolution is not None
    reactor.pending_resolution.callback("10.0.0.9")
    assert [addr for _, addr in transport.take()] == [("10.0.0.9", 7946)] * 2


def test_unresolvable_names_are_counted() -> None:
    """A name that does not resolve drops its datagrams and counts the failure."""
    reactor = FakeUDPReactor()
    svc = GossipService(reactor, make_core(1), 7946)
    svc.startService()
    svc.join([("nowhere.invalid", 7946)])
    counters = svc.counters()
    assert counters["resolve_errors"] == 1 and counters["unsent"] == 1


def test_leave_and_metadata_are_sent_at_once() -> None:
    """leave() and set_metadata() flush the core's datagrams immediately."""
    reactor = FakeUDPReactor()
    a = GossipService(reactor, make_core(1), 7001)
    a.startService()
    protocol, transport = reactor.ports[7001]
    sync = Packet(
        PacketKind.SYNC,
        NodeId("n2"),
        records=(codec.Record(NodeId("n2"), 0, MemberState.ALIVE, ("10.0.0.2", 7946)),),
    )
    protocol.datagramReceived(codec.encode(sync, "udp"), ("10.0.0.2", 7946))
    transport.take()
    a.set_metadata({"peer": "10.0.0.1:7000", "client": "10.0.0.1:7100"})
    assert a.core.incarnation == 1
    a.leave()
    [(addr, p)] = decoded(transport.take())
    assert addr == ("10.0.0.2", 7946)
    assert p.records[0].state is MemberState.LEFT


def test_make_gossip_service_builds_core_and_service() -> None:
    """make_gossip_service wires a configured core to a service listening on the advertised port."""
    reactor = FakeUDPReactor()
    svc = make_gossip_service(
        reactor,
        "n1",
        ("10.0.0.1", 7946),
        "udp",
        {"peer": "10.0.0.1:7000"},
        key=b"k",
        tick_interval=0.05,
        probe_period_ticks=20,
        ack_timeout_ticks=10,
    )
    assert svc.port == 7946 and svc.tick_interval == 0.05
    assert svc.core.config.probe_period_ticks == 20 and svc.core.config.key == b"k"
    with pytest.raises(ValueError):
        GossipService(reactor, svc.core, 1, tick_interval=0)


@pytest_twisted.inlineCallbacks
def test_loopback_smoke() -> Any:
    """Two services on real loopback UDP sockets (ports picked by the OS) find each other."""
    from twisted.internet import reactor

    services = []
    for i in (1, 2):
        core = GossipCore(
            GossipConfig(NodeId(f"n{i}"), ("127.0.0.1", 0), "smoke", {"peer": "x:1"}, key=b"smoke"),
            random.Random(i),
        )
        svc = GossipService(reactor, core, 0, "127.0.0.1", tick_interval=0.01)
        svc.startService()
        services.append(svc)
    try:
        a, b = services
        assert a.core.members()[NodeId("n1")].address == ("127.0.0.1", a.bound_port())
        b.join([("127.0.0.1", a.bound_port() or 0)])
        for _ in range(300):
            if all(len(s.core.members()) == 2 for s in services):
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        for svc, other in ((a, "n2"), (b, "n1")):
            assert svc.core.members()[NodeId(other)].state is MemberState.ALIVE
    finally:
        for svc in services:
            yield svc.stopService()
