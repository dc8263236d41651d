"""Raft messages sent to each peer, counted by kind, for the animated view.

:class:`CountingTransport` wraps the node's peer transport and counts every
message the node sends (one dictionary update per message); the dashboard
samples the counters once a second and the page draws the differences as
dots flowing from this node to each peer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from zope.interface import implementer

from leeky_twisted.interfaces import IPeerTransport

__all__ = ["KINDS", "CountingTransport", "MessageCounter", "kind_of"]

#: message class name -> the kind the page shows (a reply has the "_reply" suffix)
KINDS = {
    "RequestVote": "vote",
    "RequestVoteResponse": "vote_reply",
    "AppendEntries": "append",
    "AppendEntriesResponse": "append_reply",
    "Heartbeat": "heartbeat",
    "HeartbeatResponse": "heartbeat_reply",
    "InstallSnapshot": "snapshot",
    "TimeoutNow": "timeout_now",
    "ReadIndexRequest": "read_index",
    "ReadIndexResponse": "read_index_reply",
}


def kind_of(message: object) -> str:
    """Return the page's kind of a core message; a pre-vote is ``prevote``."""
    kind = KINDS.get(type(message).__name__, "other")
    if kind.startswith("vote") and getattr(message, "pre_vote", False):
        return "pre" + kind
    return kind


class MessageCounter:
    """Counts of messages sent, keyed by (recipient, kind); never reset."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str], int] = {}

    def count(self, message: object) -> None:
        """Count one message on its way to ``message.recipient``."""
        key = (str(getattr(message, "recipient", "?")), kind_of(message))
        self.sent[key] = self.sent.get(key, 0) + 1

    def totals(self) -> dict[str, dict[str, int]]:
        """Return ``{peer: {kind: count}}`` of every message sent so far."""
        out: dict[str, dict[str, int]] = {}
        for (peer, kind), n in self.sent.items():
            out.setdefault(peer, {})[kind] = n
        return out


@implementer(IPeerTransport)
class CountingTransport:
    """A peer transport that counts each message in ``counter``, then sends it."""

    def __init__(self, inner: Any, counter: MessageCounter) -> None:
        self.inner = inner
        self.counter = counter
        self.close = inner.close
        self.set_receiver: Callable[[Any], None] = inner.set_receiver
        flush = getattr(inner, "flush", None)
        if flush is not None:
            self.flush = flush
        set_after_read = getattr(inner, "set_after_read", None)
        if set_after_read is not None:
            self.set_after_read = set_after_read
        disconnect = getattr(inner, "disconnect", None)
        if disconnect is not None:  # the node forgets a removed peer with it
            self.disconnect = disconnect
        defer_to_end_of_read = getattr(inner, "defer_to_end_of_read", None)
        if defer_to_end_of_read is not None:
            self.defer_to_end_of_read = defer_to_end_of_read
        set_peer_gone = getattr(inner, "set_peer_gone", None)
        if set_peer_gone is not None:  # a dead leader is replaced sooner
            self.set_peer_gone = set_peer_gone
        inner_send = inner.send
        count = counter.count

        def send(message: Any) -> None:
            count(message)
            inner_send(message)

        self.send = send
        inner_send_batch = getattr(inner, "send_batch", None)
        if inner_send_batch is not None:

            def send_batch(messages: Sequence[Any]) -> None:
                for message in messages:
                    count(message)
                inner_send_batch(messages)

            self.send_batch = send_batch
