"""Autopilot: on the leader, turn gossip's view into safe configuration changes.

Every ``interval`` seconds, if this node leads and no change is in flight, ask
:func:`~leeky_twisted.membership.reconciler.next_change` for the one next
change (add a discovered node as learner, promote a caught-up learner, remove
a long-dead member while quorum stays healthy) and propose it through the log.
Gossip only advises: every change is a Raft log entry, and a removal needs the
leader's own evidence: ``last_heard(node_id)`` (see
:class:`~leeky_twisted.membership.contact.ContactTracker`) must show no message
from the member over the Raft transport for the whole grace period, counted
from when this node became leader at the earliest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from leeky_twisted.core.messages import NodeId, Role
from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.membership.reconciler import (
    ReconcilerSettings,
    health_from_gossip,
    next_change,
)

log = Logger()


class Autopilot:
    """Drive membership changes from gossip on whichever node is leader."""

    def __init__(
        self,
        reactor: Any,
        node: IRaftNode,
        gossip_core: Any,
        tick_seconds: float,
        last_heard: Callable[[NodeId], float | None],
        settings: ReconcilerSettings | None = None,
        interval: float = 1.0,
    ) -> None:
        self.reactor = reactor
        self.last_heard = last_heard
        self._leader_since: float | None = None  #: when we were first seen leading
        self._leader_term = -1  #: ... in this term
        self.node = node
        self.gossip = gossip_core
        self.tick_seconds = tick_seconds
        self.settings = settings or ReconcilerSettings()
        self.interval = interval
        self._busy = False
        self._loop: task.LoopingCall | None = None
        self.changes = 0

    def start(self) -> None:
        """Check every ``interval`` seconds."""
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """Stop checking."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """Propose the next change, if this node leads and one is due."""
        core = self.node.view()
        if self.node.stopped or core.role is not Role.LEADER:
            self._leader_since = None
            return
        now = self.reactor.seconds()
        if self._leader_since is None or self._leader_term != core.term:
            # a new term of leadership (even one won between two checks): count afresh
            self._leader_since, self._leader_term = now, core.term
        if self._busy:
            return
        decision = next_change(
            self.node.node_id,
            core.configuration,
            health_from_gossip(self.gossip.members(), self.tick_seconds),
            {nid: pr.match for nid, pr in core.progress.items()},
            core.last_index,
            self.gossip.now * self.tick_seconds,
            self.settings,
            change_pending=core.config_change_pending,
            silence=self.silence(core.configuration.members(), now),
        )
        if decision is None:
            return
        log.info(
            "autopilot: {op} {node}: {reason}",
            op=decision.change.op.name,
            node=decision.change.node_id,
            reason=decision.reason,
        )
        self._busy = True
        d = self.node.propose_config_change(decision.change, 10.0)

        def done(result: object) -> None:
            self._busy = False
            self.changes += 1

        def failed(failure: Any) -> None:
            self._busy = False
            log.info("autopilot change not made: {why}", why=failure.getErrorMessage())

        d.addCallbacks(done, failed)

    def silence(self, members: Any, now: float) -> dict[NodeId, float]:
        """Return, per member, seconds without a Raft message from it since we lead."""
        assert self._leader_since is not None
        quiet = {}
        for nid in members:
            heard = self.last_heard(nid)
            since = self._leader_since if heard is None else max(heard, self._leader_since)
            quiet[nid] = max(0.0, now - since)
        return quiet
