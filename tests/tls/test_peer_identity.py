"""The peer Hello must name the node in the connection's certificate (in memory, no sockets)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import crypto
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.test import iosim
from twisted.test.iosim import ConnectionCompleter

from leeky_twisted.core.messages import Heartbeat, NodeId
from leeky_twisted.security.certs import make_client_cert, make_dev_ca, make_node_cert
from leeky_twisted.transport.peer_protocol import (
    PeerInbox,
    PeerProtocol,
    PeerServerFactory,
    certificate_node_id,
)
from leeky_twisted.transport.peers import AMPPeerTransport

CLUSTER = "c1"
N1, N2, N3 = NodeId("1"), NodeId("2"), NodeId("3")


class Captured:
    """A Logger whose events are kept."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = Logger(namespace="test.tls", observer=self.events.append)

    def errors(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] >= LogLevel.error]

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with nodes 1 and 3 and the client alice."""
    d = tmp_path_factory.mktemp("identity")
    make_dev_ca(str(d))
    make_node_cert(str(d), "1")
    make_node_cert(str(d), "3")
    make_client_cert(str(d), "alice")
    return d


class CertifiedTransport(StringTransport):
    """A StringTransport whose peer presented ``certificate`` (as TLS transports report it)."""

    def __init__(self, certificate: crypto.X509 | None) -> None:
        super().__init__()
        self.certificate = certificate

    def getPeerCertificate(self) -> crypto.X509 | None:
        return self.certificate


def x509(path: Path) -> crypto.X509:
    return crypto.load_certificate(crypto.FILETYPE_PEM, path.read_bytes())


def test_certificate_node_id_reads_node_certificates_only(certs: Path) -> None:
    """A node certificate proves its id; a client certificate, none or plain TCP prove nothing."""
    assert certificate_node_id(CertifiedTransport(x509(certs / "node-3.pem"))) == N3
    assert certificate_node_id(CertifiedTransport(x509(certs / "client-alice.pem"))) is None
    assert certificate_node_id(CertifiedTransport(None)) is None
    assert certificate_node_id(StringTransport()) is None


def server(captured: Captured, authenticate: Any) -> PeerServerFactory:
    """Return the accepting side of node 2, knowing 1 and 3."""
    inbox = PeerInbox(
        CLUSTER,
        N2,
        lambda node: node in {N1, N3},
        lambda meta, data: None,
        log=captured.log,
        authenticate=authenticate,
    )
    inbox.receiver = lambda message: None
    return PeerServerFactory(inbox)


def hello(factory: PeerServerFactory, captured: Captured, node: NodeId) -> tuple[Any, Any]:
    """Dial the server as ``node``; return (hello result, pump)."""
    client = PeerProtocol(None, captured.log)
    server_protocol = factory.buildProtocol(None)
    pump = iosim.connect(
        server_protocol,
        iosim.makeFakeServer(server_protocol),
        client,
        iosim.makeFakeClient(client),
        greet=False,
        clock=Clock(),
    )
    d = client.hello(CLUSTER, node, N2)
    pump.flush()
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Hello was not answered"
    return results[0], pump


def test_hello_from_the_node_the_certificate_names_is_accepted() -> None:
    """The certificate proves node 1 and the Hello says 1: accepted."""
    captured = Captured()
    ok, pump = hello(server(captured, lambda transport: N1), captured, N1)
    assert ok is True
    assert not pump.clientIO.disconnected
    assert captured.errors() == []


def test_hello_claiming_another_node_than_the_certificate_is_refused_and_logged() -> None:
    """Node 3's certificate cannot say Hello as node 1: refused, logged, dropped."""
    captured = Captured()
    ok, pump = hello(server(captured, lambda transport: N3), captured, N1)
    pump.flush()
    assert ok is False
    assert pump.serverIO.disconnecting or pump.clientIO.disconnected
    assert any(
        "refused peer connection" in line
        and "claims node '1' but the certificate names node '3'" in line
        for line in captured.errors()
    ), captured.lines()


def test_hello_without_a_node_certificate_is_refused_when_tls_is_on() -> None:
    """With TLS on, a connection proving no node id (e.g. plain) is refused."""
    captured = Captured()
    ok, _ = hello(server(captured, lambda transport: None), captured, N1)
    assert ok is False
    assert any("has no node certificate" in line for line in captured.errors())


def test_an_authenticator_that_raises_refuses_instead_of_crashing() -> None:
    """A failing authenticator is logged and counts as no certificate."""
    captured = Captured()

    def broken(transport: Any) -> NodeId | None:
        raise RuntimeError("boom")

    ok, _ = hello(server(captured, broken), captured, N1)
    assert ok is False
    assert any("has no node certificate" in line for line in captured.errors())


def test_without_an_authenticator_hello_is_believed_as_before() -> None:
    """Plaintext mode (no authenticator) accepts a known id on its word."""
    captured = Captured()
    ok, _ = hello(server(captured, None), captured, N1)
    assert ok is True


def test_authenticator_sees_the_real_transport(certs: Path) -> None:
    """certificate_node_id as authenticator, over a transport carrying node 3's certificate."""
    captured = Captured()
    factory = server(captured, certificate_node_id)
    protocol = factory.buildProtocol(None)
    transport = CertifiedTransport(x509(certs / "node-3.pem"))
    protocol.makeConnection(transport)
    box = b"\x00\x08_command\x00\x05Hello\x00\x04_ask\x00\x011"
    box += b"\x00\x0acluster_id\x00\x02c1\x00\x07node_id\x00\x011\x00\x00"
    protocol.dataReceived(box)
    assert b"HELLO_REFUSED" in transport.value()
    assert transport.disconnecting
    assert any("certificate names node '3'" in line for line in captured.errors())


# -------------------------------------------------------------- the dialling hook


class RecordingEndpoints:
    """A connect_endpoint hook that records each call and dials TCP on a memory reactor."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.calls: list[tuple[str, int, NodeId]] = []

    def __call__(self, host: str, port: int, peer_id: NodeId) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint

        self.calls.append((host, port, peer_id))
        return TCP4ClientEndpoint(self.reactor, host, port)


def transport_pair(
    reactor: MemoryReactorClock, captured: Captured, hook: Any
) -> tuple[AMPPeerTransport, list[Any]]:
    """Return node 1 dialling through ``hook``, and what a listening node 2 receives."""
    book = {N1: ("127.0.0.1", 7001), N2: ("127.0.0.1", 7002)}
    received: list[Any] = []
    a = AMPPeerTransport(
        reactor,
        CLUSTER,
        N1,
        book,
        lambda n: n in book,
        lambda meta: None,
        lambda meta, data: None,
        rng=random.Random(1),
        log=captured.log,
        connect_endpoint=hook,
    )
    b = AMPPeerTransport(
        reactor,
        CLUSTER,
        N2,
        book,
        lambda n: n in book,
        lambda meta: None,
        lambda meta, data: None,
        rng=random.Random(2),
        log=captured.log,
    )
    b.set_receiver(received.append)
    b.listen(7002)
    return a, received


def test_peers_are_dialled_through_the_connect_endpoint_hook_with_their_id() -> None:
    """With connect_endpoint, each attempt asks the hook for (host, port, peer id)."""
    reactor = MemoryReactorClock()
    captured = Captured()
    hook = RecordingEndpoints(reactor)
    a, received = transport_pair(reactor, captured, hook)
    a.send(Heartbeat(N1, N2, 1, 1))
    assert hook.calls == [("127.0.0.1", 7002, N2)]
    pump = ConnectionCompleter(reactor).succeedOnce()
    pump.flush()
    a.send(Heartbeat(N1, N2, 1, 2))
    reactor.advance(0)
    pump.flush()
    assert [m.commit for m in received] == [1, 2]
    assert a.peer_status()[N2]["connected"] is True
    assert captured.errors() == []


def test_a_failed_endpoint_attempt_backs_off_and_retries() -> None:
    """A refused endpoint connection is retried after the backoff, through the hook again."""
    reactor = MemoryReactorClock()
    captured = Captured()
    hook = RecordingEndpoints(reactor)
    a, received = transport_pair(reactor, captured, hook)
    a.send(Heartbeat(N1, N2, 1, 1))
    ConnectionCompleter(reactor).failOnce()
    assert any("cannot connect to peer 2" in line for line in captured.lines())
    reactor.advance(2.0)
    assert len(hook.calls) == 2
    ConnectionCompleter(reactor).succeedOnce().flush()
    assert [m.commit for m in received] == [1]


def test_close_abandons_an_endpoint_attempt_under_way() -> None:
    """Closing the transport cancels the endpoint's pending connection and fires."""
    reactor = MemoryReactorClock()
    captured = Captured()
    cancelled: list[bool] = []

    class Pending:
        def connect(self, factory: Any) -> Deferred[Any]:
            return Deferred(lambda d: cancelled.append(True))

    a, _ = transport_pair(reactor, captured, lambda host, port, peer: Pending())
    a.send(Heartbeat(N1, N2, 1, 1))
    done: list[Any] = []
    a.close().addBoth(done.append)
    assert cancelled == [True]
    assert done == [None]
    assert captured.errors() == []
    reactor.advance(5.0)  # no retry after close
    assert a.peer_status() == {}


def test_a_hook_that_raises_backs_off_instead_of_crashing() -> None:
    """A connect_endpoint that raises is logged; the link retries later."""
    reactor = MemoryReactorClock()
    captured = Captured()
    calls: list[NodeId] = []

    def broken(host: str, port: int, peer: NodeId) -> Any:
        calls.append(peer)
        if len(calls) == 1:
            raise ValueError("no certificate for that peer")
        return type("Pending", (), {"connect": lambda self, factory: Deferred()})()

    a, _ = transport_pair(reactor, captured, broken)
    a.send(Heartbeat(N1, N2, 1, 1))
    assert any("cannot dial peer 2" in line for line in captured.lines())
    reactor.advance(2.0)
    assert calls == [N2, N2]
