"""Notices between peers that are not Raft messages: the core never sees them.

A :class:`RemovedNotice` tells a node that asked for votes that the sender has
applied the configuration change removing it. The node (not the core) sends
and reads it: ``server/node.py`` answers a (pre-)vote request from a node its
applied configuration removed, and a node that is told so, and whose own log
ends before that change, stops campaigning. The peer transport delivers it
only from a peer that proved its identity (cluster key or TLS) in its Hello.
"""

from __future__ import annotations

from dataclasses import dataclass

from leeky_twisted.core.messages import NodeId

__all__ = ["RemovedNotice"]


@dataclass(frozen=True, slots=True)
class RemovedNotice:
    """``sender`` applied the configuration change at ``index`` that removed ``recipient``."""

    sender: NodeId
    recipient: NodeId
    index: int
