"""At most one log line per connection: AMP's and Factory's own lines are silenced."""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from leeky_twisted.protocol.connection import _PooledAMP, connect_quietly
from leeky_twisted.transport.peer_protocol import PeerProtocol


def logged_while(action) -> list[str]:
    """Run ``action``; return every line logged meanwhile, through any logging API."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        action()
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(e) for e in events]


def open_and_close(protocol) -> None:
    protocol.makeConnection(StringTransport())
    protocol.connectionLost(Failure(ConnectionDone()))


def test_a_pooled_client_connection_logs_nothing_when_it_opens_and_closes():
    """A follower's forwarding connection to the leader adds no line per connection."""
    assert logged_while(lambda: open_and_close(_PooledAMP(lambda p: None, Clock()))) == []


def test_a_dialled_peer_connection_logs_nothing_when_it_opens_and_closes():
    """AMP's "connection established" and "connection lost" lines are gone for peers."""
    from twisted.logger import Logger

    assert logged_while(lambda: open_and_close(PeerProtocol(None, Logger()))) == []


class RecordingEndpoint:
    """An endpoint that builds the protocol as a real connection would, and starts its factory."""

    def connect(self, factory):
        factory.doStart()
        protocol = factory.buildProtocol(None)
        factory.doStop()
        return succeed(protocol)


def test_connecting_quietly_logs_no_factory_lines():
    """Unlike connectProtocol, no "Starting factory"/"Stopping factory" per connection."""
    proto = _PooledAMP(lambda p: None, Clock())
    got = []
    lines = logged_while(
        lambda: connect_quietly(RecordingEndpoint(), proto).addCallback(got.append)
    )
    assert (got, lines) == ([proto], [])


def http_factory_lines(pool) -> list[str]:
    """Return what one connection's factory of ``pool`` logs as it starts and stops."""
    factory = pool._factory(lambda protocol: None, "endpoint")
    return logged_while(lambda: (factory.doStart(), factory.doStop()))


def test_the_dashboards_http_client_logs_no_factory_lines():
    """The dashboard asks every member over HTTP: no "Starting factory
    <twisted.web.client._HTTP11ClientFactory ...>" pair in the node's log per connection."""
    from leeky_twisted.dashboard.gather import treq_fetch

    assert http_factory_lines(treq_fetch(Clock()).pool) == []


def test_the_remote_executors_http_client_logs_no_factory_lines():
    """The node's JSON-RPC client of a remote executor is quiet too."""
    from leeky_twisted.statemachine.remote import RemoteStateMachineExecutor

    executor = RemoteStateMachineExecutor(Clock(), "http://127.0.0.1:1/", "cluster/1")
    assert http_factory_lines(executor._pool) == []


def test_twisteds_own_pool_would_log_them():
    """The check above can fail: Twisted's default pool logs both lines."""
    from twisted.web.client import HTTPConnectionPool

    lines = http_factory_lines(HTTPConnectionPool(Clock()))
    assert any(line.startswith("Starting factory") for line in lines)
