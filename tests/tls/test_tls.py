"""Mutual TLS on loopback: AMP works with one CA's certificates; others are refused, logged."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp

from leeky_twisted.security.certs import (
    NODES_NAME,
    make_client_cert,
    make_dev_ca,
    make_node_cert,
    node_dns_name,
)
from leeky_twisted.security.tls import (
    MutualTLSServerEndpoint,
    RefusalLoggingFactory,
    TLSCredentials,
    TLSFiles,
    client_endpoint,
    peer_identity,
)

DEADLINE = 10.0


class Echo(amp.Command):
    """Send a value back."""

    arguments = [(b"value", amp.Unicode())]
    response = [(b"value", amp.Unicode()), (b"peer", amp.Unicode())]


class EchoLocator(amp.CommandLocator):
    """Answer Echo with the value and the caller's certificate name."""

    def __init__(self) -> None:
        self.proto: amp.AMP | None = None

    @Echo.responder
    def echo(self, value: str) -> dict[str, str]:
        assert self.proto is not None
        identity = peer_identity(self.proto.transport)
        return {"value": value, "peer": identity[0] if identity else ""}


class EchoFactory(protocol.Factory):
    def buildProtocol(self, addr: Any) -> amp.AMP:
        locator = EchoLocator()
        proto = amp.AMP(locator=locator)
        locator.proto = proto
        return proto


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cluster CA with nodes 1 and 2 and a client; another CA with an intruder."""
    d = tmp_path_factory.mktemp("certs")
    make_dev_ca(str(d / "good"))
    make_node_cert(str(d / "good"), "1")
    make_node_cert(str(d / "good"), "2")
    make_client_cert(str(d / "good"), "alice")
    make_dev_ca(str(d / "evil"), name="Some other CA")
    make_node_cert(str(d / "evil"), "2")
    return d


class Captured:
    """Warnings and errors logged while a test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error):
            self.events.append(event)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


@pytest.fixture
def captured() -> Iterator[Captured]:
    c = Captured()
    globalLogPublisher.addObserver(c)
    yield c
    globalLogPublisher.removeObserver(c)


@defer.inlineCallbacks
def serve(creds: TLSCredentials, roles: tuple[str, ...] = ("node", "client")) -> Any:
    from twisted.internet import reactor

    endpoint = MutualTLSServerEndpoint(reactor, 0, creds, "127.0.0.1", allowed_roles=roles)
    port = yield endpoint.listen(EchoFactory())
    return port


@defer.inlineCallbacks
def call(endpoint: Any) -> Any:
    """Connect, Echo once, disconnect; return the answer (or raise the failure)."""
    from twisted.internet import reactor

    proto = yield connectProtocol(endpoint, amp.AMP()).addTimeout(DEADLINE, reactor)
    try:
        answer = yield proto.callRemote(Echo, value="hi").addTimeout(DEADLINE, reactor)
    finally:
        proto.transport.loseConnection()
    return answer


@defer.inlineCallbacks
def refused(endpoint: Any) -> Any:
    """Expect the call to fail; return the failure's exception."""
    try:
        yield call(endpoint)
    except defer.TimeoutError:
        raise
    except Exception as e:
        return e
    raise AssertionError("the connection was accepted")


@defer.inlineCallbacks
def until_logged(captured: Captured, text: str) -> Any:
    """Wait (with a deadline) until a warning containing ``text`` was logged."""
    from twisted.internet import reactor, task

    for _ in range(int(DEADLINE / 0.01)):
        if any(text in line for line in captured.lines()):
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"never logged {text!r}: {captured.lines()}")


def load(certs: Path, ca: str, node: str) -> TLSCredentials:
    return TLSCredentials.load(TLSFiles.for_node(str(certs / ca), node))


def test_certificates_carry_the_documented_names(certs: Path) -> None:
    """Node certs name the node and the cluster; keys are private files; the CA is not reused."""
    cert = x509.load_pem_x509_certificate((certs / "good" / "node-1.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {node_dns_name("1"), NODES_NAME, "localhost"} <= set(
        names.get_values_for_type(x509.DNSName)
    )
    assert stat.S_IMODE(os.stat(certs / "good" / "node-1.key").st_mode) == 0o600
    assert load(certs, "good", "1").name == "1"
    with pytest.raises(FileExistsError):
        make_dev_ca(str(certs / "good"))
    with pytest.raises(ValueError):
        make_node_cert(str(certs / "good"), "../etc")


@pytest_twisted.inlineCallbacks
def test_nodes_with_certificates_from_one_ca_talk_amp(certs: Path) -> Any:
    """Node 2 dials node 1 over mutual TLS; both sides see each other's certificate."""
    from twisted.internet import reactor

    port = yield serve(load(certs, "good", "1"))
    try:
        creds = load(certs, "good", "2")
        host = port.getHost()
        endpoint = client_endpoint(reactor, "127.0.0.1", host.port, creds, node_dns_name("1"))
        answer = yield call(endpoint)
        assert answer == {"value": "hi", "peer": "2"}
        alice = TLSCredentials.load(TLSFiles.for_client(str(certs / "good"), "alice"))
        endpoint = client_endpoint(reactor, "127.0.0.1", host.port, alice, NODES_NAME)
        answer = yield call(endpoint)
        assert answer["peer"] == "alice"
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_client_without_a_certificate_is_refused_and_logged(
    certs: Path, captured: Captured
) -> Any:
    """A TLS client that presents no certificate is refused in the handshake; the node logs it."""
    from twisted.internet import reactor, ssl

    port = yield serve(load(certs, "good", "1"))
    try:
        ca = load(certs, "good", "2").ca
        options = ssl.optionsForClientTLS(node_dns_name("1"), trustRoot=ca)
        bare = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        yield refused(bare)
        yield until_logged(captured, "refused TLS connection from 127.0.0.1")
        assert any("did not return a certificate" in line for line in captured.lines())
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_certificate_from_another_ca_is_refused_both_ways(certs: Path, captured: Captured) -> Any:
    """An intruder's certificate from another CA is refused by the node, and the node by it."""
    from twisted.internet import reactor

    port = yield serve(load(certs, "good", "1"))
    evil = load(certs, "evil", "2")
    try:
        endpoint = client_endpoint(
            reactor, "127.0.0.1", port.getHost().port, evil, node_dns_name("1")
        )
        yield refused(endpoint)
        yield until_logged(captured, "refused TLS connection from 127.0.0.1")
    finally:
        yield port.stopListening()
    impostor = yield serve(evil)  # a fake node 2 with the wrong CA
    try:
        good = load(certs, "good", "1")
        endpoint = client_endpoint(
            reactor, "127.0.0.1", impostor.getHost().port, good, node_dns_name("2")
        )
        error = yield refused(endpoint)
        assert error is not None
    finally:
        yield impostor.stopListening()


@pytest_twisted.inlineCallbacks
def test_the_peer_port_refuses_client_certificates(certs: Path, captured: Captured) -> Any:
    """A port for nodes only refuses a valid client certificate, and says why in the log."""
    from twisted.internet import reactor

    port = yield serve(load(certs, "good", "1"), roles=("node",))
    try:
        alice = TLSCredentials.load(TLSFiles.for_client(str(certs / "good"), "alice"))
        endpoint = client_endpoint(
            reactor, "127.0.0.1", port.getHost().port, alice, node_dns_name("1")
        )
        yield refused(endpoint)
        yield until_logged(captured, "has role 'client', this port accepts node")
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_node_checks_the_peer_id_in_the_certificate(certs: Path) -> Any:
    """Dialing node 2's address but reaching node 1 fails: the certificate names the node."""
    from twisted.internet import reactor

    port = yield serve(load(certs, "good", "1"))
    try:
        endpoint = client_endpoint(
            reactor, "127.0.0.1", port.getHost().port, load(certs, "good", "2"), node_dns_name("2")
        )
        yield refused(endpoint)
    finally:
        yield port.stopListening()


def test_refusal_factory_needs_a_role() -> None:
    """An empty role list is a configuration error."""
    with pytest.raises(ValueError):
        RefusalLoggingFactory(EchoFactory(), ())


def _alpn_request(port: int, certs: Path, request: bytes) -> tuple[str | None, bytes]:
    """Connect as curl does (ALPN offering h2 and http/1.1); send ``request``; read the answer."""
    import socket
    import ssl

    good = certs / "good"
    context = ssl.create_default_context(cafile=str(good / "ca.pem"))
    context.load_cert_chain(str(good / "client-alice.pem"), str(good / "client-alice.key"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    with raw, context.wrap_socket(raw, server_hostname="localhost") as conn:
        chosen = conn.selected_alpn_protocol()
        if not request:
            return chosen, b""
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return chosen, answer


@pytest_twisted.ensureDeferred
async def test_an_alpn_client_gets_http_1_1_from_the_http_port(certs: Path) -> None:
    """A client offering ALPN h2 + http/1.1 (curl) is served HTTP/1.1, not a TLS alert."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThread

    from leeky_twisted.api.http_server import JSONRPCHTTPFactory

    rpc = type("RPC", (), {"max_body_bytes": 1024})()
    factory = JSONRPCHTTPFactory(rpc, lambda: {"role": "leader"})
    endpoint = MutualTLSServerEndpoint(reactor, 0, load(certs, "good", "1"), "127.0.0.1")
    port = await endpoint.listen(factory)
    try:
        request = b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        chosen, answer = await deferToThread(_alpn_request, port.getHost().port, certs, request)
    finally:
        await port.stopListening()
    assert chosen == "http/1.1"
    assert answer.startswith(b"HTTP/1.1 200") and b'"leader"' in answer


@pytest_twisted.ensureDeferred
async def test_an_alpn_client_is_accepted_without_a_protocol_on_the_amp_port(
    certs: Path,
) -> None:
    """A port that names no ALPN protocol completes the handshake and chooses none."""
    from twisted.internet.threads import deferToThread

    port = await serve(load(certs, "good", "1"))
    try:
        chosen, _ = await deferToThread(_alpn_request, port.getHost().port, certs, b"")
    finally:
        await port.stopListening()
    assert chosen is None
