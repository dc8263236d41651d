"""Lease expiry: decided by the leader, committed as a log entry.

The state machine holds which leases exist and their keys, never a clock.
The leader's :class:`LeaseKeeper` holds a deadline per lease: ``ttl``
seconds after its grant or its last keepalive. When one passes, it proposes
``LeaseRevoke(expired=True)``; every replica deletes the keys when that entry
applies, and watchers see the deletes.

A node that becomes leader does not know when its predecessor last heard a
keepalive: it gives every lease ``ttl + extension`` from the moment it saw
itself leader (``extension`` is an election timeout, as etcd does), so it
never expires a lease that its predecessor would have kept. A leader whose
own checks were held up for longer than that (the process was stopped or
starved: keepalives sent meanwhile could not reach it) does the same.

The bound: keys of a lease whose holder stopped sending keepalives (crashed,
partitioned) are deleted at most ``ttl + extension + election timeout +
check interval`` seconds, plus the revoke's commit time, after the last
keepalive the leader acknowledged (assuming the leader's clock runs at the
rate of real time, give or take a little). A holder must in turn count its
lease as lost ``ttl`` seconds after it *sent* its last acknowledged
keepalive, whatever its own clock says later.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from leeky_twisted import defaults
from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.protocol.errors import InvalidRequest, NotLeader
from leeky_twisted.statemachine import commands as kv

__all__ = ["LeaseKeeper"]

_log = Logger()


class LeaseKeeper:
    """The leader's lease deadlines; proposes the expiry of each lease once it passes.

    :param machine: the node's key-value state machine (its ``leases()``).
    :param extension: seconds a new leader adds to every lease (an election timeout).
    :param interval: seconds between checks.
    """

    def __init__(
        self,
        clock: IReactorTime,
        node: IRaftNode,
        machine: Any,
        *,
        extension: float,
        interval: float = 0.25,
        timeout: float = defaults.REQUEST_TIMEOUT,
    ) -> None:
        self.clock = clock
        self.node = node
        self.machine = machine
        self.extension = extension
        self.interval = interval
        self.timeout = timeout
        self._deadlines: dict[int, float] = {}
        self._expiring: set[int] = set()
        self._leading = False
        self._last: float | None = None
        self._loop: LoopingCall | None = None
        self.expired = 0  #: expiries proposed (a metric)

    def start(self) -> None:
        """Check the deadlines every ``interval`` seconds."""
        if self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        """Stop checking."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def is_leader(self) -> bool:
        """Return whether this node leads now."""
        return self.node.role_name() == "leader"

    def not_leader(self) -> NotLeader:
        """Return the NotLeader error naming the leader, as far as this node knows it."""
        status = self.node.status()
        leader = status.leader
        return NotLeader(leader, status.leader_address) if leader else NotLeader()

    def check(self) -> None:
        """Follow leadership; propose the expiry of each lease past its deadline."""
        now = self.clock.seconds()
        stalled = self._last is not None and now - self._last > self.interval + self.extension
        self._last = now
        if not self.is_leader():
            self._leading = False
            self._deadlines.clear()
            return
        if stalled:  # this process was stopped (or starved): keepalives may have waited on it
            self._leading = False
        live = dict(self.machine.leases())
        if not self._leading:  # just became leader: the predecessor may have kept them alive
            self._leading = True
            self._deadlines = {lease: now + ttl + self.extension for lease, ttl in live.items()}
        deadlines = self._deadlines
        for lease in [lease for lease in deadlines if lease not in live]:
            del deadlines[lease]
        for lease, ttl in live.items():
            deadlines.setdefault(lease, now + ttl)  # granted since (its grant applied here)
        for lease, deadline in list(deadlines.items()):
            if deadline <= now and lease not in self._expiring:
                self._expire(lease)

    def _expire(self, lease: int) -> None:
        self._expiring.add(lease)
        self.expired += 1
        data = kv.encode_command(kv.LeaseRevoke(lease, None, True))
        d = self.node.propose(data, self.timeout)

        def done(_: object) -> None:
            self._expiring.discard(lease)

        d.addBoth(done)

    def keepalive(self, lease: int) -> Deferred[int]:
        """Renew ``lease`` for its ttl from now; fire with the ttl. Leader only.

        The lease is looked up with a linearizable (ReadIndex) read first, so
        a revoke committed before the keepalive (even one a previous leader
        proposed) is seen: a keepalive is never acknowledged for a lease that
        is already gone. Fails with NotLeader elsewhere, InvalidRequest when
        the lease does not exist (expired or revoked).
        """
        if not self.is_leader():
            return fail(self.not_leader())
        d: Deferred[Any] = self.node.read(kv.LeaseInfo(lease), True, self.timeout)

        def found(info: tuple[int, list[str]] | None) -> int:
            if info is None or lease in self._expiring:
                raise InvalidRequest(f"lease {lease} not found (expired or revoked)")
            if not self.is_leader():
                raise self.not_leader()
            self.check()  # learn of a lease granted since the last check
            self._deadlines[lease] = self.clock.seconds() + info[0]
            return int(info[0])

        return d.addCallback(found)

    def ttl(self, lease: int) -> Deferred[dict[str, Any]]:
        """Fire with ``{"id", "ttl", "remaining", "keys"}`` of ``lease``. Leader only."""
        if not self.is_leader():
            return fail(self.not_leader())
        d: Deferred[Any] = self.node.read(kv.LeaseInfo(lease), True, self.timeout)

        def found(info: tuple[int, list[str]] | None) -> dict[str, Any]:
            if info is None:
                raise InvalidRequest(f"lease {lease} not found (expired or revoked)")
            self.check()
            remaining = max(0.0, self._deadlines.get(lease, 0.0) - self.clock.seconds())
            return {"id": lease, "ttl": info[0], "remaining": round(remaining, 3), "keys": info[1]}

        return d.addCallback(found)
