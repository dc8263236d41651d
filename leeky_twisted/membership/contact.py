"""The leader's own evidence: when this node last heard each peer over the Raft transport.

The autopilot removes a voter only when the leader itself has had no message
from it for the grace period (issue 19). Gossip can be forged by whoever holds
the cluster key; this evidence cannot be forged in the harmful direction: a
member that keeps answering the leader never looks silent. (Without TLS, a
third party that says Hello as X can make a silent X look alive, which only
delays its removal.) :class:`ContactTracker` wraps the node's
receive callback and records the reactor time of every message, per sender;
:class:`ContactTrackingTransport` is the peer transport decorated so that
whatever receiver the node installs, and whenever, goes through the tracker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from leeky_twisted.core.messages import NodeId
from leeky_twisted.interfaces import IPeerTransport


class ContactTracker:
    """Record ``clock.seconds()`` of the last message received from each peer."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._last: dict[NodeId, float] = {}

    def wrap(self, receive: Callable[[Any], None]) -> Callable[[Any], None]:
        """Return a receiver that notes ``message.sender`` then calls ``receive(message)``.

        Install it with ``transport.set_receiver(tracker.wrap(node.receive))``;
        the peer transport has already checked the sender against the
        connection's Hello (and its certificate, with TLS).
        """

        def receiver(message: Any) -> None:
            self._last[NodeId(message.sender)] = self.clock.seconds()
            receive(message)

        return receiver

    def last_heard(self, node_id: NodeId) -> float | None:
        """Return when a message from ``node_id`` last arrived, or None if never."""
        return self._last.get(node_id)


@implementer(IPeerTransport)
class ContactTrackingTransport:
    """A peer transport whose receiver always goes through a :class:`ContactTracker`.

    Give it to the node instead of ``inner``: every receiver the node sets
    (in its constructor or later) is wrapped, so the leader's evidence cannot
    be bypassed by a change in the node. Sending, flushing and closing are
    ``inner``'s own bound methods: no extra call on the hot path.
    """

    def __init__(self, inner: Any, tracker: ContactTracker) -> None:
        self.inner = inner
        self.tracker = tracker
        self.send = inner.send
        self.close = inner.close
        flush = getattr(inner, "flush", None)
        if flush is not None:
            self.flush = flush
        set_after_read = getattr(inner, "set_after_read", None)
        if set_after_read is not None:
            self.set_after_read = set_after_read
        disconnect = getattr(inner, "disconnect", None)
        if disconnect is not None:  # the node forgets a removed peer with it
            self.disconnect = disconnect
        for name in ("send_batch", "defer_to_end_of_read", "set_peer_gone"):
            method = getattr(inner, name, None)
            if method is not None:
                setattr(self, name, method)

    def set_receiver(self, receiver: Callable[[Any], None]) -> None:
        """Install ``receiver`` on the inner transport, behind the tracker."""
        self.inner.set_receiver(self.tracker.wrap(receiver))
