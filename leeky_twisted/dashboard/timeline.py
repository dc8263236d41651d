"""The events of a node's life the dashboard lists, derived from its status.

:class:`Timeline` is given the node's ``status()`` a few times a second and
turns each change it sees into an event: a campaign (this node became a
candidate), a leader change (who leads which term), a leader lost, members
joining or leaving the configuration, a snapshot taken or installed. Nothing
in the node has to report them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_EVENTS", "Timeline"]

#: events kept per node (older ones are forgotten)
MAX_EVENTS = 200


class Timeline:
    """A bounded list of events, each ``{seq, t, node, kind, term, text}``."""

    def __init__(self, node_id: str, max_events: int = MAX_EVENTS) -> None:
        self.node_id = node_id
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._seq = 0
        self._last: Mapping[str, Any] | None = None
        #: called after each new event (the dashboard pushes the cluster at once)
        self.on_event: Callable[[], None] | None = None

    def add(self, t: float, kind: str, text: str, term: int = 0, **extra: Any) -> None:
        """Record one event at time ``t`` (seconds since the epoch)."""
        self._seq += 1
        event = {"seq": self._seq, "t": t, "node": self.node_id, "kind": kind, "term": term}
        event.update(extra, text=text)
        self.events.append(event)
        if self.on_event is not None:
            self.on_event()

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Return the events with a sequence number above ``seq``, oldest first."""
        return [e for e in self.events if e["seq"] > seq]

    def observe(self, st: Mapping[str, Any], t: float) -> None:
        """Compare ``st`` (a ``status()``) with the previous one; record what changed."""
        last, self._last = self._last, st
        me = self.node_id
        term = int(st.get("term") or 0)
        if last is None:
            self.add(t, "start", f"{me} started: {st.get('role')} in term {term}", term)
            return
        leader = st.get("leader")
        # the node counts its campaigns (not pre-votes): one can start and end between
        # two samples, the counter still shows it
        if int(st.get("elections") or 0) > int(last.get("elections") or 0):
            self.add(t, "campaign", f"{me} campaigns for term {term}", term, candidate=me)
        if leader != last.get("leader") or (leader and term != last.get("term")):
            if leader:
                how = "won the election" if leader == me else "is the leader"
                self.add(t, "leader", f"{leader} {how}: term {term}", term, leader=leader)
            else:
                gone = last.get("leader")
                self.add(t, "leader_lost", f"{me} lost its leader {gone} (term {term})", term)
        self._membership(last, st, t, term)
        snap, old_snap = int(st.get("snapshot_index") or 0), int(last.get("snapshot_index") or 0)
        if snap > old_snap:
            if (
                int(last.get("applied_index") or 0) < snap
                and int(last.get("last_index") or 0) < snap
            ):
                text = f"{me} installed a snapshot from the leader up to index {snap}"
                self.add(t, "snapshot_installed", text, term, index=snap)
            else:
                self.add(
                    t, "snapshot", f"{me} took a snapshot up to index {snap}", term, index=snap
                )

    def _membership(
        self, last: Mapping[str, Any], st: Mapping[str, Any], t: float, term: int
    ) -> None:
        old = {n: "voter" for n in last.get("voters") or ()}
        old.update({n: "learner" for n in last.get("learners") or ()})
        new = {n: "voter" for n in st.get("voters") or ()}
        new.update({n: "learner" for n in st.get("learners") or ()})
        for n in sorted(set(new) - set(old)):
            self.add(t, "join", f"{n} joined as a {new[n]}", term, member=n)
        for n in sorted(set(old) - set(new)):
            self.add(t, "leave", f"{n} left the configuration", term, member=n)
        for n in sorted(set(old) & set(new)):
            if old[n] != new[n]:
                self.add(t, "join", f"{n} is now a {new[n]}", term, member=n)
