"""Review findings on seats (docs/core.md, "A node that lost its storage"): each test
reproduces one problem the review found; each is fixed and the test keeps it so."""

from __future__ import annotations

import random

import pytest

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    Message,
    NodeId,
    Role,
)
from leeky_twisted.core.raft import RaftCore, bootstrap_entries

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
S1, S2, S3 = 1_000, 2_000, 3_000


def seated_log(seats: dict[NodeId, int]) -> list[Entry]:
    """The bootstrap entries of n1..n3, then one entry binding each seat, at term 1."""
    entries = bootstrap_entries([(nid, b"") for nid in (N1, N2, N3)])
    for nid, storage in sorted(seats.items()):
        change = ConfChange.bind(nid, storage)
        entries.append(Entry(len(entries) + 1, 1, EntryKind.CONFIG, change.encode()))
    return entries


def make(
    nid: NodeId,
    storage: int,
    entries: list[Entry],
    *,
    fresh: bool = False,
    seed: int = 1,
    pre_vote: bool = True,
    check_quorum: bool = True,
) -> RaftCore:
    """A core holding ``entries`` (all committed), or an empty one when ``fresh``."""
    hs = HardState(1, None, 0 if fresh else len(entries), fresh, storage)
    return RaftCore(
        CoreConfig(
            nid, election_ticks=10, heartbeat_ticks=2, pre_vote=pre_vote, check_quorum=check_quorum
        ),
        random.Random(seed),
        hs,
        None,
        [] if fresh else entries,
        fresh=fresh,
    )


class Net:
    """Deliver every message at once, in order, between the cores that are up."""

    def __init__(self, *cores: RaftCore) -> None:
        self.cores = {c.id: c for c in cores}
        self.down: set[NodeId] = set()
        self.deaf: set[NodeId] = set()  # receive nothing, but still send

    def flush(self) -> None:
        for _ in range(1000):
            out: list[Message] = []
            for c in self.cores.values():
                while c.has_ready():
                    rd = c.ready()
                    out += list(rd.messages) + list(rd.messages_after_persist)
                    c.advance(rd)
            if not out:
                return
            for m in out:
                live = m.sender not in self.down and m.recipient not in self.down | self.deaf
                if live and m.recipient in self.cores:
                    self.cores[m.recipient].step(m)
        raise AssertionError("messages never stopped")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for nid, c in self.cores.items():
                if nid not in self.down:
                    c.tick()
            self.flush()

    def leader(self) -> RaftCore | None:
        up = [c for nid, c in self.cores.items() if nid not in self.down]
        leaders = [c for c in up if c.role is Role.LEADER]
        return max(leaders, key=lambda c: c.term) if leaders else None


# ----------------------------------------------- 1. a replacement with a smaller id


def test_a_replacement_storage_with_a_smaller_identity_is_seated_again():
    """n2's seat names S2; its disk is wiped and its clock went back, so its new storage
    gets an identity below S2. The leader (elected after the loss, so it never heard S2
    speak) must still bring n2 back into the counted majority."""
    entries = seated_log({N1: S1, N2: S2, N3: S3})
    n1 = make(N1, S1, entries, seed=1)
    n3 = make(N3, S3, entries, seed=3)
    replaced = S2 - 500  # a later folder, created under an earlier clock
    n2 = make(N2, replaced, entries, fresh=True, seed=2)
    net = Net(n1, n2, n3)
    net.run(300)
    leader = net.leader()
    assert leader is not None
    seat = leader.log.config().storage_of(N2)
    assert seat == n2.storage_id, f"seat {seat}, n2 answers from {n2.storage_id}"
    assert leader.commit >= leader.log.config_index()


# ---------------------------- 2. a restart that saved "abstaining" past its bind


def test_a_restarted_node_whose_committed_seat_names_it_stops_abstaining():
    """A follower restarts with "abstaining" saved (a crash between the two hard-state writes
    whose caught_up check fails, or a graceful stop racing it) while its saved commit
    already covers the committed entry binding its storage; the leader is idle."""
    entries = seated_log({N1: S1, N2: S2, N3: S3})
    n1 = make(N1, S1, entries, seed=1)
    n2 = make(N2, S2, entries, seed=2)
    n3 = make(N3, S3, entries, seed=3)
    net = Net(n1, n2, n3)
    net.run(60)
    leader = net.leader()
    assert leader is not None
    old = next(c for c in (n2, n3) if c is not leader)
    assert old.commit == leader.commit
    restarted = RaftCore(
        CoreConfig(old.id, election_ticks=10, heartbeat_ticks=2),
        random.Random(2),
        HardState(old.term, old.voted_for, old.commit, True, old.storage_id),  # abstaining
        None,
        old.log.slice(1, old.log.last_index() + 1),
    )
    assert restarted.log.config_at(restarted.commit).storage_of(old.id) == old.storage_id
    net.cores[old.id] = restarted
    net.run(60)  # idle: nothing new is proposed
    assert net.leader() is leader
    assert not restarted.abstaining


# --------------------------- 3. a removed node that never learns its removal


REMOVED_DISRUPTS = (
    "finding 5: with pre_vote and check_quorum both off, a former leader holding its own "
    "removal that never learns it committed (nobody replicates to a non-member) campaigns "
    "with ever higher terms and deposes every leader, forever (_may_campaign)"
)


@pytest.mark.parametrize(
    ("pre_vote", "check_quorum"),
    [
        (True, True),
        (True, False),
        (False, True),
        pytest.param(False, False),
    ],
)
def test_a_removed_node_cut_off_from_its_removal_does_not_depose_leaders_forever(
    pre_vote: bool, check_quorum: bool
) -> None:
    from leeky_twisted.core.messages import ConfChangeOp

    entries = bootstrap_entries([(nid, b"") for nid in (N1, N2, N3)])
    opts = {"pre_vote": pre_vote, "check_quorum": check_quorum}
    n1 = make(N1, S1, entries, seed=1, **opts)
    n2 = make(N2, S2, entries, seed=2, **opts)
    n3 = make(N3, S3, entries, seed=3, **opts)
    net = Net(n1, n2, n3)
    net.run(60)
    leader = net.leader()
    assert leader is not None
    if leader.id != N3:
        leader.transfer_leadership(N3)
        net.run(5)
    assert n3.role is Role.LEADER
    net.run(5)
    # n3 removes itself; its appends reach n1 and n2, their answers never reach it
    net.deaf = {N3}
    removal, _ = n3.propose_config_change(ConfChange(ConfChangeOp.REMOVE, N3))
    net.flush()
    assert n1.log.config_index() == removal == n2.log.config_index()
    net.down = {N3}  # then it is cut off altogether
    net.run(60)
    successor = net.leader()
    assert successor is not None and successor.id != N3
    assert successor.commit >= removal  # committed without n3
    successor.propose(b"the cluster moves on")
    net.run(10)
    assert n3.commit < removal  # n3 never learned it
    # n3 restarts (a stale leader with both options off would otherwise stay one)
    n3 = RaftCore(
        CoreConfig(N3, election_ticks=10, heartbeat_ticks=2, **opts),
        random.Random(3),
        HardState(n3.term, n3.voted_for, n3.commit, False, S3),
        None,
        n3.log.slice(1, n3.log.last_index() + 1),
    )
    net.cores[N3] = n3
    net.deaf = net.down = set()
    terms = set()
    for _ in range(400):
        net.run(1)
        current = net.leader()
        if current is not None and current.id != N3:
            terms.add(current.term)
    assert len(terms) <= 2, f"{len(terms)} leaders in 400 ticks: the removed node deposes them"


# ------------------------- 4. a transfer to a voter that may not stand for election


def test_a_transfer_to_a_voter_whose_seat_names_another_storage_is_refused():
    """n2 answers from a new storage (its disk was wiped) while its seat still names the
    old one: it would ignore TimeoutNow, so the transfer is refused at once."""
    entries = seated_log({N1: S1, N2: S2, N3: S3})
    n1 = make(N1, S1, entries, seed=1)
    n2 = make(N2, S2, entries, seed=2)
    n3 = make(N3, S3, entries, seed=3)
    net = Net(n1, n2, n3)
    net.run(60)
    leader = net.leader()
    assert leader is not None
    victim, seat = next((n, st) for n, st in ((N2, S2), (N3, S3)) if n != leader.id)
    leader.step(
        HeartbeatResponse(victim, leader.id, leader.term, 0, 0, seat + 500, abstaining=True)
    )
    assert leader.log.config().storage_of(victim) in (seat, 0)  # old, or vacated at once
    with pytest.raises(ValueError, match="seat"):
        leader.transfer_leadership(victim)
