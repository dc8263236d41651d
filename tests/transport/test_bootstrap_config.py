"""Nodes whose bootstrap configurations differ refuse each other in the Hello."""

from __future__ import annotations

import json

from test_peer_protocol import N1, N2, Server, dial, result_of
from test_peers import Node, book, hb
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import ConnectionCompleter

from leeky_twisted.core.messages import Heartbeat
from leeky_twisted.transport.bootstrap_config import MAX_DESCRIPTION_BYTES, BootstrapConfig
from leeky_twisted.transport.peer_protocol import HELLO_FRAME_BYTES, frame_message


def config(peers: str) -> BootstrapConfig:
    """Return the configuration a node started with ``--peers peers`` states (as the service)."""
    voters = [part.split("=") for part in peers.split(",")]
    made = BootstrapConfig.of(
        [(nid, json.dumps({"peer": addr}).encode()) for nid, addr in voters], peers
    )
    assert made is not None
    return made


OURS = config("n1=h:1,n2=h:2,n3=h:3")
MORE = config("n1=h:1,n2=h:2,n3=h:3,n4=h:4")


def test_the_digest_covers_ids_addresses_and_order() -> None:
    """Equal entries, equal digest; another id, address or order, another digest; none: None."""
    assert config("n1=h:1,n2=h:2,n3=h:3") == OURS
    others = ["n1=h:1,n2=h:2,n4=h:3", "n1=h:1,n2=h:2,n3=h:9", "n2=h:2,n1=h:1,n3=h:3", "n1=h:1"]
    digests = {config(p).digest for p in others} | {OURS.digest, MORE.digest}
    assert len(digests) == len(others) + 2
    assert BootstrapConfig.of([], "") is None
    assert len(config(",".join(f"n{i}=host{i}:1" for i in range(200))).description.encode()) <= (
        MAX_DESCRIPTION_BYTES
    )


def test_a_hello_with_another_configuration_is_refused_naming_both(capture) -> None:
    """The refusal names the dialler's and our configuration; its messages are never delivered."""
    server = Server(capture)
    server.inbox.bootstrap = OURS
    client, _, pump, hello = dial(server, capture, bootstrap=MORE)
    client.write_frames([frame_message(Heartbeat(N1, N2, 7, 0))])
    pump.flush()
    assert result_of(hello) is False
    assert server.received == []
    (line,) = [e for e in capture.errors() if "refused peer connection" in e]
    assert "another bootstrap configuration (n1=h:1,n2=h:2,n3=h:3,n4=h:4)" in line
    assert "than ours (n1=h:1,n2=h:2,n3=h:3)" in line and "same --peers" in line


def test_the_same_configuration_or_none_is_accepted(capture) -> None:
    """Our own configuration passes, and so does a joiner's Hello, which states none."""
    for stated in (OURS, None):
        server = Server(capture)
        server.inbox.bootstrap = OURS
        client, _, pump, hello = dial(server, capture, bootstrap=stated)
        client.write_frames([frame_message(Heartbeat(N1, N2, 7, 0))])
        pump.flush()
        assert result_of(hello) is True and len(server.received) == 1


def test_a_joiner_accepts_any_configuration(capture) -> None:
    """A node without a configuration of its own (``--join``) accepts the cluster's."""
    server = Server(capture)
    _, _, _, hello = dial(server, capture, bootstrap=MORE)
    assert result_of(hello) is True


def test_a_long_configuration_still_fits_the_hello(capture) -> None:
    """The description is cut to fit: a 200-voter Hello stays under the pre-Hello box bound."""
    big = config(",".join(f"n{i}=a-rather-long-host-name-{i}.example:7000" for i in range(200)))
    server = Server(capture)
    server.inbox.bootstrap = big
    _, _, _, hello = dial(server, capture, bootstrap=big)
    assert result_of(hello) is True
    assert MAX_DESCRIPTION_BYTES + 64 + 256 < HELLO_FRAME_BYTES


def nodes(capture, first: BootstrapConfig | None, second: BootstrapConfig | None):
    """Return a reactor and two transports n1, n2 stating these configurations."""
    reactor = MemoryReactorClock()
    a = Node(reactor, N1, book(), capture, bootstrap=first)
    b = Node(reactor, N2, book(), capture, bootstrap=second)
    return reactor, a, b


def test_two_nodes_with_different_configurations_never_exchange_a_message(capture) -> None:
    """Each refuses the other's Hello, in both directions, and logs why; nothing is delivered."""
    reactor, a, b = nodes(capture, OURS, MORE)
    completer = ConnectionCompleter(reactor)
    for _ in range(3):
        a.transport.send(hb(1))
        b.transport.send(hb(1, sender=N2, recipient=N1))
        while reactor.tcpClients:
            completer.succeedOnce().flush()
        reactor.advance(2.0)
    assert a.received == [] and b.received == []
    refusals = [e for e in capture.errors() if "another bootstrap configuration" in e]
    assert any(
        "(n1=h:1,n2=h:2,n3=h:3) than ours (n1=h:1,n2=h:2,n3=h:3,n4=h:4)" in e for e in refusals
    )
    assert any(
        "(n1=h:1,n2=h:2,n3=h:3,n4=h:4) than ours (n1=h:1,n2=h:2,n3=h:3)" in e for e in refusals
    )


def test_a_bootstrapped_node_and_a_joiner_talk(capture) -> None:
    """A dynamic cluster: the --bootstrap node states its one-voter configuration; joiners none."""
    reactor, a, b = nodes(capture, config("n1=h:1"), None)
    completer = ConnectionCompleter(reactor)
    a.transport.send(hb(1))
    b.transport.send(hb(2, sender=N2, recipient=N1))
    while reactor.tcpClients:
        completer.succeedOnce().flush()
    assert b.received == [hb(1)] and a.received == [hb(2, sender=N2, recipient=N1)]
    assert capture.errors() == []


def test_equal_configurations_talk(capture) -> None:
    """The same --peers on both nodes: messages flow both ways."""
    reactor, a, b = nodes(capture, OURS, config("n1=h:1,n2=h:2,n3=h:3"))
    completer = ConnectionCompleter(reactor)
    a.transport.send(hb(1))
    b.transport.send(hb(2, sender=N2, recipient=N1))
    while reactor.tcpClients:
        completer.succeedOnce().flush()
    assert b.received == [hb(1)] and a.received == [hb(2, sender=N2, recipient=N1)]
