"""The leader's view of each follower's log (§5.3 nextIndex/matchIndex)."""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    """How the leader currently replicates to a follower."""

    PROBE = "probe"  #: one AppendEntries at a time until the follower's log matches
    REPLICATE = "replicate"  #: pipelined, up to the in-flight window
    SNAPSHOT = "snapshot"  #: waiting for an InstallSnapshot to land


class Progress:
    """Replication state of one follower, kept by the leader."""

    __slots__ = (
        "abstaining",
        "commit_sent",
        "eager",
        "heard_tick",
        "inflight",
        "match",
        "max_inflight",
        "named",
        "named_at",
        "next",
        "pending_snapshot",
        "probe_sent",
        "read_ack",
        "recent_active",
        "snapshot_sent_tick",
        "state",
        "storage_id",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()
        self.max_inflight = max_inflight
        self.pending_snapshot = 0
        self.snapshot_sent_tick = 0
        self.recent_active = False
        #: the leader's tick when this follower last answered (-1: never)
        self.heard_tick = -1
        self.read_ack = 0
        #: the highest commit index an append or heartbeat carried to it
        self.commit_sent = 0
        #: its last answer asked for each new commit index at once (it has watchers)
        self.eager = False
        #: the follower's storage identity its answers carry (0: none heard yet)
        self.storage_id = 0
        #: whether its last answer said it abstains (unknown: assume so)
        self.abstaining = True
        #: the log's last index when we learned ``storage_id``: an append names
        #: that identity (``to_storage``) only once our commit index is past it
        self.named_at = 0
        #: whether an append named ``storage_id`` yet; a named identity gives way
        #: only to a storage that says it abstains (a really new one)
        self.named = False

    def is_paused(self) -> bool:
        """Return True when no further AppendEntries may be sent now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def become_probe(self, next_index: int) -> None:
        """Fall back to probing from ``next_index`` (never at or below match)."""
        self.state = ProgressState.PROBE
        self.next = max(next_index, self.match + 1)
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        """Start pipelining right after the matched index."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int, tick: int) -> None:
        """Wait for the follower to install the snapshot at ``index`` sent at ``tick``."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_sent_tick = tick
        self.probe_sent = False
        self.inflight.clear()

    def update_match(self, index: int) -> bool:
        """Record that the follower holds everything up to ``index``; True if it grew."""
        grew = index > self.match
        if grew:
            self.match = index
            self.probe_sent = False
        if self.next <= index:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return grew

    def free_one(self) -> None:
        """Free the oldest slot of the window (its answer may be lost)."""
        if self.inflight:
            self.inflight.popleft()

    def forget_match(self, last: int) -> None:
        """The follower's log now ends at ``last``, below match: probe from there."""
        last = max(0, last)
        self.match = min(self.match, last)
        self.become_probe(last + 1)

    def sent(self, last_index: int) -> None:
        """Record an AppendEntries whose last entry is ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
            f"inflight={len(self.inflight)})"
        )
