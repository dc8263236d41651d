"""This node's state for the dashboard: sampled from the outside a few times a second.

:class:`Recorder` reads ``node.status()`` every :data:`SAMPLE_SECONDS` (on the
reactor, so it never races the node), feeds the :class:`Timeline`, and once a
second keeps a point of history: committed entries per second, write latency
p50/p99, client requests by kind and outcome, and the Raft messages sent to
each peer by kind. :meth:`Recorder.local_state` is what ``/dashboard/local``
answers and what the other members' dashboards gather.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from leeky_twisted.dashboard.meter import RequestMeter, percentile
from leeky_twisted.dashboard.timeline import Timeline
from leeky_twisted.dashboard.traffic import MessageCounter
from leeky_twisted.interfaces import IRaftNode

__all__ = ["HISTORY_POINTS", "SAMPLE_SECONDS", "Recorder", "folder_bytes"]

#: how often the node's status is read
SAMPLE_SECONDS = 0.2
#: one history point every this many samples (a second)
SAMPLES_PER_POINT = 5
#: history points kept (five minutes)
HISTORY_POINTS = 300
#: seconds between two measures of the data folder's size
SIZE_EVERY = 5.0


def folder_bytes(path: str) -> int:
    """Return the bytes of every file below ``path`` (0 when it cannot be read)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _delta(new: dict[str, int], old: dict[str, int]) -> dict[str, int]:
    return {k: v - old.get(k, 0) for k, v in new.items() if v != old.get(k, 0)}


class Recorder:
    """Samples one node; keeps its timeline and the last minutes of history."""

    def __init__(
        self,
        clock: IReactorTime,
        node: IRaftNode,
        counter: MessageCounter | None = None,
        meter: RequestMeter | None = None,
        last_heard: Callable[[str], float | None] | None = None,
        data_dir: str | None = None,
    ) -> None:
        self.clock = clock
        self.node = node
        self.counter = counter or MessageCounter()
        self.meter = meter or RequestMeter(clock)
        self.last_heard = last_heard
        self.data_dir = data_dir
        self.timeline = Timeline(str(node.node_id))
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.status: dict[str, Any] = {}
        self.data_bytes: int | None = None
        self._size_at = -SIZE_EVERY
        self._point_at: float | None = None
        self._samples = 0
        self._commit = 0
        self._counts: dict[str, int] = {}
        self._sent: dict[str, dict[str, int]] = {}
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        """Sample now and every :data:`SAMPLE_SECONDS`."""
        self._loop.start(SAMPLE_SECONDS, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> None:
        """Read the status, feed the timeline, and keep a point once a second."""
        now = self.clock.seconds()
        self.status = self.node.status().to_json()
        self.timeline.observe(self.status, now)
        if self.data_dir is not None and now - self._size_at >= SIZE_EVERY:
            self._size_at = now
            self._measure_folder(self.data_dir)
        if self._point_at is None:
            self._point_at = now
            self._commit = int(self.status.get("commit_index") or 0)
            self._counts = dict(self.meter.counts)
            self._sent = self.counter.totals()
        else:
            self._samples += 1
            if self._samples % SAMPLES_PER_POINT == 0:
                self._add_point(now)

    def _measure_folder(self, path: str) -> None:
        """Measure the data folder off the reactor thread when the clock is a real reactor."""
        pool = getattr(self.clock, "getThreadPool", None)
        if pool is None:  # a test clock: measure here
            self.data_bytes = folder_bytes(path)
            return
        d = threads.deferToThreadPool(self.clock, pool(), folder_bytes, path)
        d.addCallback(lambda size: setattr(self, "data_bytes", size))
        d.addErrback(lambda _: None)

    def _add_point(self, now: float) -> None:
        assert self._point_at is not None
        elapsed, self._point_at = max(now - self._point_at, 1e-6), now
        commit = int(self.status.get("commit_index") or 0)
        counts, sent = dict(self.meter.counts), self.counter.totals()
        latencies = self.meter.take_latencies()
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        self.history.append(
            {
                "t": now,
                "commits": max(0, commit - self._commit) / elapsed,
                "requests": {k: v / elapsed for k, v in _delta(counts, self._counts).items()},
                "p50_ms": None if p50 is None else p50 * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
                "sent": {
                    peer: _delta(kinds, self._sent.get(peer, {})) for peer, kinds in sent.items()
                },
            }
        )
        self._commit, self._counts, self._sent = commit, counts, sent

    def followers(self) -> dict[str, dict[str, Any]]:
        """Return the leader's view of each follower (empty unless this node leads)."""
        if self.status.get("role") != "leader":
            return {}
        last = int(self.status.get("last_index") or 0)
        now = self.clock.seconds()
        out = {}
        for nid, pr in self.node.progress().items():
            if nid == self.node.node_id:
                continue
            heard = self.last_heard(nid) if self.last_heard is not None else None
            out[str(nid)] = {
                "match": pr.match,
                "next": pr.next,
                "state": pr.state,
                "inflight": pr.inflight,
                "max_inflight": pr.max_inflight,
                "lag": max(0, last - pr.match),
                "last_contact": None if heard is None else round(now - heard, 3),
            }
        return out

    def members(self) -> list[dict[str, Any]]:
        """Return the node's ``members()`` (Raft role, gossip state), or []."""
        return list(self.node.members())

    def local_state(self, history: bool = False) -> dict[str, Any]:
        """Return this node's state: status, followers, members, timeline, history."""
        return {
            "id": str(self.node.node_id),
            "now": self.clock.seconds(),
            "status": self.status,
            "data_bytes": self.data_bytes,
            "followers": self.followers(),
            "members": self.members(),
            "timeline": list(self.timeline.events)[-50:],
            "last_point": self.history[-1] if self.history else None,
            "history": list(self.history) if history else None,
        }
