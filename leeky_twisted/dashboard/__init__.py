"""A live dashboard of the cluster, served by every node on its HTTP port (issue #17).

:func:`make_dashboard` wires the parts: the :class:`~.recorder.Recorder`
samples this node, the :class:`~.gather.Gatherer` asks the other members,
and the resources of :mod:`.web` serve the page and push the cluster to it.
See docs/dashboard.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.web import resource

from leeky_twisted.dashboard.gather import Fetch, Gatherer, treq_fetch
from leeky_twisted.dashboard.meter import MeteredNode, RequestMeter
from leeky_twisted.dashboard.recorder import Recorder
from leeky_twisted.dashboard.traffic import CountingTransport, MessageCounter
from leeky_twisted.dashboard.web import AdminResource, EventStreams, install

__all__ = [
    "PUSH_SECONDS",
    "CountingTransport",
    "DashboardService",
    "MessageCounter",
    "MeteredNode",
    "RequestMeter",
    "make_dashboard",
    "read_token_file",
]

#: how often the cluster is pushed to each open page
PUSH_SECONDS = 0.5


def read_token_file(path: str) -> bytes:
    """Return the admin token in ``path`` (stripped); raise ValueError when unusable."""
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if len(token) < 16:
        raise ValueError(f"{path} must hold a token of at least 16 characters")
    if b"\n" in token or b" " in token:
        raise ValueError(f"{path} must hold one token, without spaces or lines")
    return token


class DashboardService(service.Service):
    """Starts and stops the recorder, the gatherer and the push loop."""

    def __init__(self, recorder: Recorder, gatherer: Gatherer, streams: EventStreams, clock: Any):
        self.recorder = recorder
        self.gatherer = gatherer
        self.streams = streams
        self._push = LoopingCall(streams.broadcast)
        self._push.clock = clock
        self._clock = clock
        self._soon: Any = None
        # an election, a member down or back: pushed at once, not at the next tick
        recorder.timeline.on_event = self.push_soon

    def push_soon(self) -> None:
        """Push the cluster to every page on the next reactor turn (once per burst)."""
        if self._soon is None and self.running and self.streams.streams:
            self._soon = self._clock.callLater(0, self._push_now)

    def _push_now(self) -> None:
        self._soon = None
        self.gatherer.gather()  # ask the others now too (a member already asked is skipped)
        self.streams.broadcast()

    def startService(self) -> None:
        """Start sampling, gathering and pushing."""
        super().startService()
        self.recorder.start()
        self.gatherer.start()
        self._push.start(PUSH_SECONDS, now=False)

    def stopService(self) -> Any:
        """Stop them, close the open streams and the gatherer's connections."""
        super().stopService()
        if self._push.running:
            self._push.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        self.gatherer.stop()
        self.recorder.stop()
        for stream in list(self.streams.streams):
            stream.end()
        pool = getattr(self.gatherer.fetch, "pool", None)
        return pool.closeCachedConnections() if pool is not None else None


def make_dashboard(
    reactor: Any,
    root: resource.Resource,
    node: Any,
    counter: MessageCounter,
    meter: RequestMeter,
    last_heard: Callable[[str], float | None] | None,
    data_dir: str | None,
    admin_token: bytes | None = None,
    fetch: Fetch | None = None,
    gather: bool = True,
    credentials: Any = None,
) -> DashboardService:
    """Add the dashboard to ``root``; return the service to start with the node.

    With ``credentials`` (the node's TLS credentials) the other members are
    gathered over HTTPS; ``gather=False`` shows this node only.
    """
    recorder = Recorder(reactor, node, counter, meter, last_heard, data_dir)

    def own_http() -> str | None:
        return node.addresses.get(node.node_id, {}).get("http")

    if fetch is None and gather:
        fetch = treq_fetch(reactor, credentials)
    gatherer = Gatherer(reactor, recorder, fetch, own_http)
    streams = install(root, gatherer, AdminResource(node, admin_token))
    return DashboardService(recorder, gatherer, streams, reactor)
