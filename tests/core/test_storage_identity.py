"""Storage identities: a leader tells a lost storage's answers from its replacement's,
and an abstaining voter's grant needs one grant more (docs/core.md, "A node that lost
its storage")."""

from __future__ import annotations

import random

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from leeky_twisted.core.quorum import vote_result
from leeky_twisted.core.raft import RaftCore, bootstrap_entries

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
BOOT = bootstrap_entries([(N1, b""), (N2, b""), (N3, b"")])
OLD, NEW, OTHER = 100, 200, 300


def drain(core: RaftCore) -> list[Message]:
    """Persist and send everything the core has ready; return the messages."""
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out += list(rd.messages) + list(rd.messages_after_persist)
        core.advance(rd)
    return out


def leader(storage: dict[NodeId, int] | None = None) -> RaftCore:
    """n1 elected by n2 and n3, which answered with the given storage identities."""
    return elect(storage)[0]


def elect(storage: dict[NodeId, int] | None = None) -> tuple[RaftCore, list[Message]]:
    """Return the elected leader and the messages it sent once elected."""
    storage = storage if storage is not None else {N2: OLD, N3: OTHER}
    core = RaftCore(
        CoreConfig(N1, election_ticks=10, heartbeat_ticks=2),
        random.Random(1),
        HardState(1, None, len(BOOT), storage_id=1),
        None,
        BOOT,
    )
    for _ in range(100):
        if core.role is Role.LEADER:
            break
        core.tick()
        for m in drain(core):
            if isinstance(m, RequestVote):
                vote = RequestVoteResponse(
                    m.recipient, N1, m.term, True, m.pre_vote, storage.get(m.recipient, 0)
                )
                core.step(vote)
    assert core.role is Role.LEADER
    return core, drain(core)


def ack(sender: NodeId, term: int, match: int, storage: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(sender, N1, term, True, match, storage=storage)


# ----------------------------------------------------------------- the leader


def test_a_late_acknowledgement_from_a_lost_storage_is_not_counted():
    """n2 acknowledged an entry, then lost its disk; the answer arrives after n2's new
    storage spoke. It must not commit the entry (n3 is silent): only the leader holds it."""
    core = leader()
    index, term = core.propose(b"acked by a disk that is gone")
    drain(core)
    core.step(HeartbeatResponse(N2, N1, term, 0, len(BOOT), NEW))  # the new, empty storage
    core.step(ack(N2, term, index, OLD))  # the old storage's answer, delivered late
    drain(core)
    assert core.commit < index
    assert core.progress[N2].match < index


def test_a_new_storage_makes_the_leader_forget_what_the_old_one_held():
    """Acknowledged by the old storage first: once the new one answers, match starts over
    (commit, never lowered, keeps what was committed)."""
    core = leader()
    index, term = core.propose(b"x")
    drain(core)
    core.step(ack(N2, term, index, OLD))
    drain(core)
    assert core.commit == index  # n1 and n2 (old storage) held it
    core.step(HeartbeatResponse(N2, N1, term, 0, len(BOOT), NEW))
    assert core.progress[N2].match == 0 and core.progress[N2].storage_id == NEW
    assert core.commit == index


def test_the_leader_learns_storage_identities_from_votes_and_names_them_in_appends():
    """Its first appends carry each voter's identity as the votes told it."""
    _, sent = elect()
    appends = [m for m in sent if isinstance(m, AppendEntries)]
    assert {(m.recipient, m.to_storage) for m in appends} == {(N2, OLD), (N3, OTHER)}


def test_an_answer_with_a_new_identity_is_followed_by_an_append_naming_it():
    """An idle cluster still tells a replaced follower its identity is known."""
    core = leader()
    term = core.term
    core.step(ack(N2, term, core.log.last_index(), OLD))
    drain(core)
    core.step(ack(N2, term, core.log.last_index(), NEW))
    appends = [m for m in drain(core) if isinstance(m, AppendEntries) and m.recipient == N2]
    assert appends and appends[-1].to_storage == NEW


# --------------------------------------------------------------- the follower


def follower(abstaining: bool = True, storage_id: int = NEW) -> RaftCore:
    return RaftCore(
        CoreConfig(N2, election_ticks=10, heartbeat_ticks=2),
        random.Random(2),
        HardState(2, None, len(BOOT), abstaining, storage_id),
        None,
        BOOT,
    )


def append_noop(to_storage: int, term: int = 2) -> AppendEntries:
    noop = Entry(len(BOOT) + 1, term, EntryKind.NOOP, b"")
    return AppendEntries(N1, N2, term, len(BOOT), 1, (noop,), len(BOOT), to_storage)


def test_abstention_ends_only_on_an_append_naming_this_storage():
    """A leader that still names the lost storage may yet count its late answers."""
    core = follower()
    core.step(append_noop(to_storage=0))
    assert core.abstaining
    core.step(append_noop(to_storage=NEW))
    assert not core.abstaining


def test_ending_abstention_counts_our_vote_as_given_to_the_leader():
    """The lost storage may have voted in this term: never grant a second vote in it."""
    core = follower()
    core.step(append_noop(to_storage=NEW))
    assert core.voted_for == N1
    drain(core)
    core.step(RequestVote(N3, N2, 2, 99, 2))
    granted = [m for m in drain(core) if isinstance(m, RequestVoteResponse) and m.granted]
    assert granted == []


def test_an_abstaining_follower_takes_an_identity_above_the_one_the_leader_knows():
    """A clock that went back made the new storage's identity smaller than the lost one's:
    it takes a larger one, saved before its answer leaves, so the leader adopts it."""
    core = follower(storage_id=50)
    core.step(append_noop(to_storage=OLD))
    rd = core.ready()
    assert rd.hard_state is not None and rd.hard_state.storage_id == OLD + 1
    answers = [m for m in rd.messages_after_persist if isinstance(m, AppendEntriesResponse)]
    assert answers and answers[0].storage == OLD + 1
    assert not rd.messages  # nothing leaves before the identity is durable


def test_an_abstaining_voter_grants_and_says_so():
    """An abstainer answers like any voter, marking its grant."""
    core = follower()
    core.step(RequestVote(N3, N2, 3, 99, 2))
    votes = [m for m in drain(core) if isinstance(m, RequestVoteResponse)]
    assert len(votes) == 1 and votes[0].granted and votes[0].abstaining


# ------------------------------------------------------------------- counting


def test_a_grant_from_an_abstainer_needs_one_grant_more():
    """With one lost storage at a time, the other grants must still overlap every majority."""
    three = [N1, N2, N3]
    assert vote_result(three, {N1: True, N2: True}) is True
    assert vote_result(three, {N1: True, N2: True}, {N2}) is None
    assert vote_result(three, {N1: True, N2: True, N3: True}, {N2}) is True
    assert vote_result(three, {N1: True, N2: True, N3: False}, {N2}) is False
    assert vote_result(three, {N1: True, N2: True}, {N1}) is None  # an abstaining candidate
    five = [NodeId(f"v{i}") for i in range(5)]
    grants = {v: True for v in five[:3]}
    assert vote_result(five, grants, {five[0]}) is None
    assert vote_result(five, {**grants, five[3]: True}, {five[0], five[1]}) is True


def test_the_honest_grants_must_be_a_majority_even_in_an_even_configuration():
    """Four voters: three grants, one an abstainer's, are not enough. The candidate may
    lack a removal that made the other three a configuration in which the abstainer and
    the fourth voter were a majority (simulation seed 166)."""
    four = [N1, N2, N3, NodeId("s2")]
    assert vote_result(four, {N3: True, N2: True, N1: True}, {N1}) is None
    assert vote_result(four, {N3: True, N2: True, N1: True, NodeId("s2"): True}, {N1}) is True
    assert vote_result([N1, N2], {N1: True, N2: True}, {N2}) is False
    assert vote_result([N1], {N1: True}, {N1}) is True  # a lone voter decides alone
