"""Decide the next Raft configuration change from gossip, on the leader.

In the spirit of Consul's autopilot, but as a pure function: the leader calls
:func:`next_change` with what gossip says (who is alive, suspect, dead or
left, and since when), the current configuration, and how far each member's
log has caught up; it gets back at most one :class:`Decision` to propose
through the log, or None. Gossip advises; only the committed change alters
who votes. The leader is never removed.

The leader's own evidence decides removals (issue 19): ``silence`` gives, for
each member of the configuration, how long the leader has had no message from
it over the Raft transport. Gossip may name a suspect early; only a member the
leader itself has not heard from for ``dead_grace`` is removed, and only
members the leader hears from (within ``contact_window``) are promoted or count
toward a healthy quorum. A forged "dead" or "left" record therefore changes
nothing while the member answers the leader.

Rules, tried in this order (the first that applies wins):

1. Nothing while a configuration change is still uncommitted.
2. Remove a voter that gossip reports DEAD or LEFT and that the leader has not
   heard from for ``dead_grace`` or more, if the voters left are at least
   ``min_voters`` and a majority of them are healthy (the leader counts as
   healthy). The longest silent goes first.
3. Promote a learner that has been ALIVE for ``stabilization_time``, that the
   leader heard from within ``contact_window``, and whose match index is within
   ``max_lag`` entries of the leader's last index, while there are fewer than
   ``max_voters`` voters. The most caught up goes first.
4. Remove a learner that gossip reports DEAD or LEFT and that the leader has not
   heard from for ``dead_grace`` or more.
5. Add an ALIVE member that gossip knows and the configuration does not, as
   a learner, if it advertises a Raft ``peer`` address; its metadata becomes
   the change's context (JSON) so every replica learns its addresses. (Gossip
   members are authenticated by the cluster key; see docs/security.md.)

A member is *healthy* when gossip has it ALIVE and the leader heard from it
within ``contact_window``. Members missing from the gossip view or from
``silence``, and SUSPECT members, are neither healthy nor removable: they are
never removed, promoted or added, and never count toward a healthy quorum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, Configuration, NodeId
from leeky_twisted.membership.gossip_core import Member, MemberState


@dataclass(frozen=True)
class ReconcilerSettings:
    """The reconciler's knobs. Times are in the unit of ``now`` (seconds by convention)."""

    max_lag: int = 250  #: entries a learner may trail the leader's last index and be promoted
    stabilization_time: float = 10.0  #: how long a learner must have been alive to be promoted
    dead_grace: float = 30.0  #: how long a member must have been dead/left to be removed
    min_voters: int = 3  #: never remove a voter below this many
    max_voters: int = 5  #: never promote past this many
    #: a member the leader heard from (over Raft) this recently is reachable
    contact_window: float = 5.0

    def __post_init__(self) -> None:
        if self.max_lag < 0 or self.stabilization_time < 0 or self.dead_grace < 0:
            raise ValueError("max_lag, stabilization_time and dead_grace must be >= 0")
        if self.contact_window <= 0:
            raise ValueError("contact_window must be positive")
        if self.min_voters < 1:
            raise ValueError("min_voters must be at least 1")
        if self.max_voters < self.min_voters:
            raise ValueError("max_voters must be at least min_voters")


@dataclass(frozen=True)
class MemberHealth:
    """What the reconciler needs of one gossip member."""

    state: MemberState
    since: float  #: when ``state`` began, on the same clock as ``now``
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def peer_address(self) -> str | None:
        """Return the advertised Raft peer address, if any."""
        return self.metadata.get("peer")


@dataclass(frozen=True)
class Decision:
    """One configuration change to propose, and why (for the log)."""

    change: ConfChange
    reason: str


def health_from_gossip(
    members: Mapping[NodeId, Member], tick_seconds: float
) -> dict[NodeId, MemberHealth]:
    """Return gossip members as MemberHealth, with ``since`` in seconds of gossip time.

    Pass ``now = core.now * tick_seconds`` to :func:`next_change` with it.
    """
    return {
        nid: MemberHealth(m.state, m.since * tick_seconds, dict(m.metadata))
        for nid, m in members.items()
    }


def _gone(h: MemberHealth | None) -> bool:
    return h is not None and h.state in (MemberState.DEAD, MemberState.LEFT)


def next_change(
    leader: NodeId,
    configuration: Configuration,
    members: Mapping[NodeId, MemberHealth],
    match_index: Mapping[NodeId, int],
    last_index: int,
    now: float,
    settings: ReconcilerSettings | None = None,
    change_pending: bool = False,
    silence: Mapping[NodeId, float] | None = None,
) -> Decision | None:
    """Return the one configuration change to propose next, or None.

    :param leader: this node, the leader; it is never removed.
    :param members: the gossip view (see :func:`health_from_gossip`).
    :param match_index: the leader's match index of each follower.
    :param last_index: the leader's last log index.
    :param change_pending: True while a configuration entry is uncommitted.
    :param silence: seconds since the leader last heard from each member over
        the Raft transport (counted from when it became leader at most). A
        member missing from it (or None: no evidence at all) is never removed
        nor promoted.
    """
    s = settings or ReconcilerSettings()
    if change_pending:
        return None
    voters, learners = configuration.voters, configuration.learners
    quiet = silence or {}

    def reachable(nid: NodeId) -> bool:
        heard = quiet.get(nid)
        return heard is not None and heard < s.contact_window

    def alive(nid: NodeId) -> bool:
        h = members.get(nid)
        return nid == leader or (h is not None and h.state is MemberState.ALIVE and reachable(nid))

    def dead_for(nid: NodeId) -> float | None:
        """Return how long the leader has not heard from ``nid``, if gossip and that agree."""
        h = members.get(nid)
        heard = quiet.get(nid)
        if nid == leader or h is None or not _gone(h) or heard is None:
            return None
        return heard if heard >= s.dead_grace else None

    # 2. dead voters, if the rest stays a healthy quorum, never below min_voters
    dead_voters = sorted(
        ((age, nid) for nid in voters if (age := dead_for(nid)) is not None),
        key=lambda p: (-p[0], p[1]),
    )
    for age, nid in dead_voters:
        rest = voters - {nid}
        if len(rest) < s.min_voters:
            continue
        healthy = sum(1 for v in rest if alive(v))
        if 2 * healthy <= len(rest):
            continue
        return Decision(
            ConfChange(ConfChangeOp.REMOVE, nid),
            f"voter {nid} {members[nid].state.name} in gossip and silent for {age:g}; "
            f"{healthy} of {len(rest)} remaining voters healthy",
        )

    # 3. promote a stable, caught-up learner while there is room
    if len(voters) < s.max_voters:
        ready = []
        for nid in learners:
            h = members.get(nid)
            if h is None or h.state is not MemberState.ALIVE or not reachable(nid):
                continue
            if now - h.since < s.stabilization_time:
                continue
            match = match_index.get(nid, 0)
            if match < last_index - s.max_lag:
                continue
            ready.append((-match, nid))
        if ready:
            neg_match, nid = min(ready)
            return Decision(
                ConfChange(ConfChangeOp.ADD_VOTER, nid),
                f"learner {nid} alive and caught up (match {-neg_match} of {last_index})",
            )

    # 4. dead learners
    dead_learners = sorted(
        ((age, nid) for nid in learners if (age := dead_for(nid)) is not None),
        key=lambda p: (-p[0], p[1]),
    )
    if dead_learners:
        age, nid = dead_learners[0]
        return Decision(
            ConfChange(ConfChangeOp.REMOVE, nid),
            f"learner {nid} {members[nid].state.name} in gossip and silent for {age:g}",
        )

    # 5. newcomers join as learners
    known = configuration.members()
    newcomers = sorted(
        (h.since, nid)
        for nid, h in members.items()
        if nid not in known and h.state is MemberState.ALIVE and h.peer_address
    )
    if newcomers:
        _, nid = newcomers[0]
        metadata = {str(k): str(v) for k, v in members[nid].metadata.items()}
        context = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()
        return Decision(
            ConfChange(ConfChangeOp.ADD_LEARNER, nid, context),
            f"{nid} discovered by gossip at {metadata['peer']}",
        )
    return None
