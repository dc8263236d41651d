"""Autopilot: on the leader, turn gossip's view into safe configuration changes.

Every ``interval`` seconds, if this node leads and no change is in flight, ask
:func:`~leeky_twisted.membership.reconciler.next_change` for the one next
change (add a discovered node as learner, promote a caught-up learner, remove
a long-dead member while quorum stays healthy) and propose it through the log.
Gossip only advises: every change is a Raft log entry.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.logger import Logger

from leeky_twisted.core.messages import Role
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
        node: Any,
        gossip_core: Any,
        tick_seconds: float,
        settings: ReconcilerSettings | None = None,
        interval: float = 1.0,
    ) -> None:
        self.reactor = reactor
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
        core = self.node.core
        if self._busy or self.node.stopped or core.role is not Role.LEADER:
            return
        status = core.status()
        decision = next_change(
            self.node.node_id,
            core.configuration,
            health_from_gossip(self.gossip.members(), self.tick_seconds),
            {nid: match for nid, (match, _next, _state) in status.progress.items()},
            status.last_index,
            self.gossip.now * self.tick_seconds,
            self.settings,
            change_pending=core.log.config_index() > core.commit,
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
