"""TLS wired through the peer transport, the client library, twistd options and the CLI.

The transport and client tests run over real loopback TLS (pytest-twisted, with
deadlines); the option and CLI tests need no reactor.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, task
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python import usage

from leeky_twisted import cli
from leeky_twisted.client.library import LeekyClient, client_tls_connector, tls_connector
from leeky_twisted.core.messages import Heartbeat, NodeId
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.errors import Unavailable
from leeky_twisted.security.certs import (
    NODE_ROLE,
    make_client_cert,
    make_dev_ca,
    make_node_cert,
    node_dns_name,
)
from leeky_twisted.security.tls import (
    ALL_ROLES,
    MutualTLSServerEndpoint,
    TLSCredentials,
    TLSFiles,
    client_endpoint,
)
from leeky_twisted.server.service import _EndpointListener, load_node_credentials
from leeky_twisted.server.tap import Options
from leeky_twisted.transport.peer_protocol import certificate_node_id
from leeky_twisted.transport.peers import AMPPeerTransport

DEADLINE = 10.0
N1, N2 = NodeId("1"), NodeId("2")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good/: the cluster CA, nodes 1-3, client alice. evil/: another CA. mixed/: both."""
    d = tmp_path_factory.mktemp("wiring")
    good, evil, mixed = d / "good", d / "evil", d / "mixed"
    make_dev_ca(str(good))
    for node_id in ("1", "2", "3"):
        make_node_cert(str(good), node_id)
    make_client_cert(str(good), "alice")
    make_dev_ca(str(evil), name="Some other CA")
    make_client_cert(str(evil), "mallory")
    mixed.mkdir()
    shutil.copy(good / "ca.pem", mixed / "ca.pem")
    for suffix in ("pem", "key"):
        shutil.copy(evil / f"client-mallory.{suffix}", mixed / f"client-mallory.{suffix}")
    return d


class Captured:
    """Warnings and errors logged anywhere while a test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


@pytest.fixture
def captured() -> Iterator[Captured]:
    c = Captured()
    globalLogPublisher.addObserver(c)
    yield c
    globalLogPublisher.removeObserver(c)


def node_creds(certs: Path, node_id: str) -> TLSCredentials:
    return TLSCredentials.load(TLSFiles.for_node(str(certs / "good"), node_id))


@defer.inlineCallbacks
def until(check: Any, what: str) -> Any:
    """Poll ``check`` on the reactor until it is true, within DEADLINE."""
    from twisted.internet import reactor

    for _ in range(int(DEADLINE / 0.01)):
        if check():
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


# -------------------------------------------------------------- peer transport


def tls_peer(reactor: Any, creds: TLSCredentials, node_id: NodeId, book: dict) -> AMPPeerTransport:
    """Return a peer transport that dials and accepts with mutual TLS."""
    return AMPPeerTransport(
        reactor,
        "c1",
        node_id,
        book,
        lambda n: n in book,
        lambda meta: None,
        lambda meta, data: None,
        rng=random.Random(1),
        initial_backoff=0.05,
        max_backoff=0.2,
        connect_endpoint=lambda host, port, peer: client_endpoint(
            reactor, host, port, creds, node_dns_name(peer), timeout=DEADLINE
        ),
        authenticate=certificate_node_id,
    )


@defer.inlineCallbacks
def listen_peer(reactor: Any, transport: AMPPeerTransport, creds: TLSCredentials) -> Any:
    endpoint = MutualTLSServerEndpoint(
        reactor, 0, creds, interface="127.0.0.1", allowed_roles=(NODE_ROLE,)
    )
    port = yield endpoint.listen(transport.server_factory())
    return port


@pytest_twisted.inlineCallbacks
def test_two_nodes_exchange_raft_messages_over_mutual_tls(certs: Path, captured: Captured) -> Any:
    """Node 1 dials node 2 over TLS (checking its id); node 2 checks node 1's Hello."""
    from twisted.internet import reactor

    book: dict[NodeId, tuple[str, int]] = {}
    one = tls_peer(reactor, node_creds(certs, "1"), N1, book)
    two = tls_peer(reactor, node_creds(certs, "2"), N2, book)
    received: list[Any] = []
    two.set_receiver(received.append)
    port = yield listen_peer(reactor, two, node_creds(certs, "2"))
    book[N1] = ("127.0.0.1", 1)
    book[N2] = ("127.0.0.1", port.getHost().port)
    try:
        for commit in range(1, 4):
            one.send(Heartbeat(N1, N2, 1, commit))
        yield until(lambda: len(received) == 3, "three heartbeats")
        assert [m.commit for m in received] == [1, 2, 3]
        assert one.peer_status()[N2]["connected"] is True
        assert not any("refused" in line for line in captured.lines())
    finally:
        yield one.close()
        yield two.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_node_certificate_cannot_say_hello_as_another_node(
    certs: Path, captured: Captured
) -> Any:
    """Node 3's valid certificate claiming to be node 1 is refused after the handshake."""
    from twisted.internet import reactor

    book: dict[NodeId, tuple[str, int]] = {}
    impostor = tls_peer(reactor, node_creds(certs, "3"), N1, book)  # says Hello as 1
    two = tls_peer(reactor, node_creds(certs, "2"), N2, book)
    received: list[Any] = []
    two.set_receiver(received.append)
    port = yield listen_peer(reactor, two, node_creds(certs, "2"))
    book[N1] = ("127.0.0.1", 1)
    book[N2] = ("127.0.0.1", port.getHost().port)
    try:
        impostor.send(Heartbeat(N1, N2, 1, 1))
        yield until(
            lambda: any("certificate names node '3'" in line for line in captured.lines()),
            "the refusal in the log",
        )
        line = next(x for x in captured.lines() if "certificate names node '3'" in x)
        assert "refused peer connection" in line and "claims node '1'" in line
        assert received == []
    finally:
        yield impostor.close()
        yield two.close()
        yield port.stopListening()


# ---------------------------------------------------------------- client library


class StatusLocator(amp.CommandLocator):
    """Answer Status with a fixed status."""

    @cc.Status.responder
    def status(self) -> dict[str, str]:
        return {"status": json.dumps({"id": "1", "role": "leader"})}


@defer.inlineCallbacks
def status_server(reactor: Any, certs: Path) -> Any:
    endpoint = MutualTLSServerEndpoint(
        reactor, 0, node_creds(certs, "1"), interface="127.0.0.1", allowed_roles=ALL_ROLES
    )
    factory = protocol.Factory.forProtocol(lambda: amp.AMP(locator=StatusLocator()))
    port = yield endpoint.listen(factory)
    return port


@pytest_twisted.inlineCallbacks
def test_client_with_a_client_certificate_talks_to_a_node(certs: Path) -> Any:
    """LeekyClient with client_tls_connector gets an answer over mutual TLS."""
    from twisted.internet import reactor

    port = yield status_server(reactor, certs)
    client = LeekyClient(
        reactor,
        [("127.0.0.1", port.getHost().port)],
        timeout=DEADLINE,
        connect=client_tls_connector(reactor, str(certs / "good"), "alice"),
    )
    try:
        status = yield client.status()
        assert status == {"id": "1", "role": "leader"}
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_that_distrusts_the_node_fails_the_handshake(certs: Path, captured: Captured) -> Any:
    """A client from another CA cannot verify the node: Unavailable naming the handshake."""
    from twisted.internet import reactor

    port = yield status_server(reactor, certs)
    evil = TLSCredentials.load(TLSFiles.for_client(str(certs / "evil"), "mallory"))
    client = LeekyClient(
        reactor,
        [("127.0.0.1", port.getHost().port)],
        timeout=DEADLINE,
        connect=tls_connector(reactor, evil),
        retry_delay=0.01,
    )
    try:
        with pytest.raises(Unavailable, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed"):
            yield client.status()
        yield until(
            lambda: any("refused TLS connection" in line for line in captured.lines()),
            "the node's refusal in the log",
        )
    finally:
        yield client.close()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_client_whose_certificate_the_node_refuses_fails_fast(
    certs: Path, captured: Captured
) -> Any:
    """A certificate from another CA, refused by the node, ends the call at once: Unavailable."""
    from twisted.internet import reactor

    port = yield status_server(reactor, certs)
    started = reactor.seconds()
    client = LeekyClient(
        reactor,
        [("127.0.0.1", port.getHost().port)],
        timeout=DEADLINE,
        connect=client_tls_connector(reactor, str(certs / "mixed"), "mallory"),
        retry_delay=0.01,
    )
    try:
        with pytest.raises(Unavailable, match="TLS"):
            yield client.status()
        assert reactor.seconds() - started < DEADLINE / 2
        yield until(
            lambda: any("certificate verify failed" in line for line in captured.lines()),
            "the node's refusal in the log",
        )
    finally:
        yield client.close()
        yield port.stopListening()


def test_client_tls_connector_fails_early_on_missing_files(tmp_path: Path) -> None:
    """Missing certificate files raise at construction, not on the first call."""
    with pytest.raises(OSError):
        client_tls_connector(None, str(tmp_path), "nobody")


# ------------------------------------------------------------- node and options


def test_node_credentials_must_name_the_node(certs: Path, tmp_path: Path) -> None:
    """node-2.pem holding node 3's certificate is refused at start."""
    assert load_node_credentials(str(certs / "good"), "2").name == "2"
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    shutil.copy(certs / "good" / "ca.pem", swapped / "ca.pem")
    for suffix in ("pem", "key"):
        shutil.copy(certs / "good" / f"node-3.{suffix}", swapped / f"node-2.{suffix}")
    with pytest.raises(ValueError, match="certificate of '3'"):
        load_node_credentials(str(swapped), "2")


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_twistd_tls_dir_option_reaches_the_node_options(certs: Path, tmp_path: Path) -> None:
    """--tls-dir is validated (certificates load) and handed to the service."""
    base = ["--id", "1", "--peers", "1=127.0.0.1:7101", "--data-dir", str(tmp_path)]
    assert parse(*base).node_options.tls_dir is None
    tls_dir = str(certs / "good")
    assert parse(*base, "--tls-dir", tls_dir).node_options.tls_dir == tls_dir
    with pytest.raises(usage.UsageError, match="--tls-dir"):
        parse(*base, "--tls-dir", str(tmp_path / "nowhere"))
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"tls_dir": tls_dir}))
    assert parse(*base, "--config", str(config)).node_options.tls_dir == tls_dir


def test_endpoint_listener_fails_start_when_it_cannot_listen() -> None:
    """A TLS port that cannot be bound stops the node, to exit with status 1, as a plain
    port does (tests/integration/test_port_in_use.py); an endpoint with no reactor to
    stop fails startService instead."""

    class Reactor:
        def __init__(self) -> None:
            self.triggers: list[tuple[Any, ...]] = []
            self.when_running: list[Any] = []

        def addSystemEventTrigger(self, *args: Any) -> None:
            self.triggers.append(args)

        def callWhenRunning(self, f: Any) -> None:
            self.when_running.append(f)

        def stop(self) -> None:
            pass

    class Busy:
        def __init__(self, reactor: Any = None) -> None:
            if reactor is not None:
                self.reactor = reactor

        def listen(self, factory: Any) -> Any:
            return fail(CannotListenError("127.0.0.1", 7001, OSError("in use")))

    reactor = Reactor()
    listener = _EndpointListener(Busy(reactor), protocol.Factory(), what="the peer port")  # type: ignore[arg-type]
    listener.startService()
    assert listener.listening is None
    assert reactor.when_running == [reactor.stop]
    assert [t[:2] + t[3:] for t in reactor.triggers] == [("after", "shutdown", 1)]
    bare = _EndpointListener(Busy(), protocol.Factory(), what="the peer port")  # type: ignore[arg-type]
    with pytest.raises(CannotListenError):
        bare.startService()


# ------------------------------------------------------------------------ CLI


def test_cli_certs_creates_a_ca_and_certificates_and_keeps_them(tmp_path: Path) -> None:
    """`leekyraft certs` makes the CA once, then node and client certificates, kept on rerun."""
    folder = tmp_path / "certs"
    args = cli.build_parser().parse_args(
        ["certs", "--dir", str(folder), "--nodes", "1,2", "--clients", "alice"]
    )
    out, err = io.StringIO(), io.StringIO()
    assert cli.run_certs(args, out, err) == 0, err.getvalue()
    names = sorted(os.listdir(folder))
    assert names == sorted(
        ["ca.pem", "ca.key"]
        + [f"node-{n}.{s}" for n in "12" for s in ("pem", "key")]
        + ["client-alice.pem", "client-alice.key"]
    )
    assert load_node_credentials(str(folder), "2").name == "2"
    before = (folder / "node-1.pem").read_bytes()
    args = cli.build_parser().parse_args(["certs", "--dir", str(folder), "--nodes", "1,3"])
    out = io.StringIO()
    assert cli.run_certs(args, out, io.StringIO()) == 0
    assert (folder / "node-1.pem").read_bytes() == before
    assert "using the CA" in out.getvalue() and "kept" in out.getvalue()
    assert (folder / "node-3.pem").exists()


def test_cli_certs_reports_bad_names(tmp_path: Path) -> None:
    """An unsuitable node id is an error, not a traceback."""
    args = cli.build_parser().parse_args(["certs", "--dir", str(tmp_path), "--nodes", "../x"])
    err = io.StringIO()
    assert cli.run_certs(args, io.StringIO(), err) == 1
    assert "unsuitable name" in err.getvalue()


def test_cli_tls_options_come_from_flags_or_environment(certs: Path, tmp_path: Path) -> None:
    """--tls-dir/--tls-name win over the environment; the only client cert is the default."""
    parser = cli.build_parser()
    good = str(certs / "good")
    args = parser.parse_args(["get", "k"])
    assert cli.tls_from(args, {}) is None
    assert cli.tls_from(args, {cli.TLS_DIR_ENV: good}) == (good, "alice")
    env = {cli.TLS_DIR_ENV: "elsewhere", cli.TLS_NAME_ENV: "bob"}
    args = parser.parse_args(["--tls-dir", good, "--tls-name", "alice", "get", "k"])
    assert cli.tls_from(args, env) == (good, "alice")
    with pytest.raises(ValueError, match="needs --tls-dir"):
        cli.tls_from(parser.parse_args(["--tls-name", "alice", "get", "k"]), {})
    with pytest.raises(ValueError, match="give --tls-name"):
        cli.tls_from(parser.parse_args(["--tls-dir", str(tmp_path), "get", "k"]), {})


def test_cli_with_missing_client_certificate_exits_no_input(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --tls-name with no such certificate exits 66 (an input file cannot be read, the
    CLI's one rule for unreadable input files) before connecting anywhere."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--tls-dir", str(certs / "good"), "--tls-name", "nobody", "get", "k"])
    assert exit_info.value.code == cli.EXIT_NO_INPUT
    assert "cannot load the TLS client certificate" in capsys.readouterr().err


@pytest_twisted.inlineCallbacks
def test_a_watch_over_tls_gets_its_events_and_acknowledges_them(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """A watch on a TLS connection: events asking no answer arrive whole, and the client's
    WatchAck brings the node's backlog back to 0 (both ends take TLS's buffered path)."""
    from twisted.internet import reactor

    from leeky_twisted.api.amp_api import make_amp_factory, make_frontend
    from leeky_twisted.client import watch as client_watch
    from leeky_twisted.statemachine.commands import Put, encode_command
    from leeky_twisted.testing.apifakes import FakeRaftNode

    monkeypatch.setattr(client_watch, "WATCH_ACK_DELAY", 3600.0)  # acked below, by hand
    node = FakeRaftNode("1", "127.0.0.1:1")
    frontend = make_frontend(node, reactor)
    endpoint = MutualTLSServerEndpoint(
        reactor, 0, node_creds(certs, "1"), interface="127.0.0.1", allowed_roles=ALL_ROLES
    )
    port = yield endpoint.listen(make_amp_factory(frontend))
    client = LeekyClient(
        reactor,
        [("127.0.0.1", port.getHost().port)],
        timeout=DEADLINE,
        connect=client_tls_connector(reactor, str(certs / "good"), "alice"),
    )
    got: list[Any] = []
    try:
        watch = client.watch("k", got.extend)
        yield until(lambda: len(frontend.watches.watchers()) == 1, "the watch")
        for index in (1, 2, 3):
            node.state_machine.apply(index, encode_command(Put("k", f"v{index}")))
        yield until(lambda: len(got) == 3, "three events")
        assert [e.value for e in got] == ["v1", "v2", "v3"]
        (watcher,) = frontend.watches.watchers()
        assert watch._ack_every > 1 and watcher.backlog == 3  # none answered one by one
        watch._send_ack()
        yield until(lambda: watcher.backlog == 0, "the WatchAck")
    finally:
        yield client.close()
        yield port.stopListening()
        yield frontend.close()
