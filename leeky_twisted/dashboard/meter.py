"""Client requests as the node sees them: counts by kind and outcome, write latency.

:class:`MeteredNode` stands between the client frontend and the node: it
passes everything through and times each ``propose`` (a write: from the
request to its commit and apply) and ``read``. A request the node refuses
because it is not the leader (the frontend then forwards it) is counted as
``refused``, not as an error.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.protocol.errors import NotLeader, Unavailable

__all__ = ["MAX_SAMPLES", "MeteredNode", "RequestMeter", "percentile"]

#: latency samples kept between two samples of the recorder (the rest are counted only)
MAX_SAMPLES = 4096


def percentile(values: list[float], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) of ``values`` (nearest rank), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class RequestMeter:
    """Cumulative request counts by ``kind:outcome`` and recent write latencies."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.latencies: list[float] = []

    def watch(self, kind: str, d: Deferred[Any]) -> Deferred[Any]:
        """Count ``d``'s outcome under ``kind`` when it fires; time it when a write."""
        start = self.clock.seconds()

        def done(result: Any) -> Any:
            if isinstance(result, Failure):
                outcome = "refused" if result.check(NotLeader, Unavailable) else "error"
            else:
                outcome = "ok"
                if kind == "write" and len(self.latencies) < MAX_SAMPLES:
                    self.latencies.append(self.clock.seconds() - start)
            key = f"{kind}:{outcome}"
            self.counts[key] = self.counts.get(key, 0) + 1
            return result

        return d.addBoth(done)

    def take_latencies(self) -> list[float]:
        """Return the write latencies since the last call and forget them."""
        out, self.latencies = self.latencies, []
        return out


@implementer(IRaftNode)
class MeteredNode:
    """The node, with ``propose`` and ``read`` counted and timed in ``meter``."""

    def __init__(self, node: Any, meter: RequestMeter) -> None:
        self._node = node
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def propose(self, command: bytes, timeout: float) -> Deferred[Any]:
        """Propose through the node; count and time it as a write."""
        return self._meter.watch("write", self._node.propose(command, timeout))

    def read(self, request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        """Read through the node; count it as a read (or a stale read)."""
        kind = "read" if linearizable else "stale_read"
        return self._meter.watch(kind, self._node.read(request, linearizable, timeout))
