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


def abstaining_ack(sender: NodeId, term: int, match: int, storage: int) -> AppendEntriesResponse:
    return AppendEntriesResponse(sender, N1, term, True, match, storage=storage, abstaining=True)


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
    # a new storage always says it abstains (a late answer of a lost one need not)
    core.step(HeartbeatResponse(N2, N1, term, 0, len(BOOT), NEW, abstaining=True))
    assert core.progress[N2].match == 0 and core.progress[N2].storage_id == NEW
    assert core.commit == index


def test_the_leader_learns_identities_from_votes_and_names_them_once_it_committed():
    """Its first appends name nobody; once its no-op is committed (the followers saying
    they abstain, all three acknowledgements are needed), an append names each voter's
    identity as its vote told it."""
    core, sent = elect()
    appends = [m for m in sent if isinstance(m, AppendEntries)]
    assert appends and all(m.to_storage == 0 for m in appends)
    noop = core.log.last_index()
    core.step(abstaining_ack(N2, core.term, noop, OLD))
    assert core.commit < noop  # an abstainer's acknowledgement needs one more
    core.step(abstaining_ack(N3, core.term, noop, OTHER))
    assert core.commit == noop
    named = {(m.recipient, m.to_storage) for m in drain(core) if isinstance(m, AppendEntries)}
    assert {(N2, OLD), (N3, OTHER)} <= named


def test_a_new_identity_is_named_only_after_a_commit_past_learning_it():
    """n2 answers from a new storage (abstaining): until an entry appended after that is
    committed without it, no append names the new identity."""
    core = leader()
    term = core.term
    core.step(ack(N2, term, core.log.last_index(), OLD))
    core.step(ack(N3, term, core.log.last_index(), OTHER))
    drain(core)
    core.step(abstaining_ack(N2, term, len(BOOT), NEW))
    assert core.progress[N2].storage_id == NEW and core.progress[N2].match == len(BOOT)
    index, _ = core.propose(b"x")
    to_n2 = [m for m in drain(core) if isinstance(m, AppendEntries) and m.recipient == N2]
    assert to_n2 and all(m.to_storage == 0 for m in to_n2)
    core.step(ack(N3, term, index, OTHER))
    assert core.commit == index
    core.tick()
    core.tick()
    for m in drain(core):
        if m.recipient == N2 and not isinstance(m, AppendEntries):
            core.step(HeartbeatResponse(N2, N1, term, 0, len(BOOT), NEW, True))
    later = [m for m in drain(core) if isinstance(m, AppendEntries) and m.recipient == N2]
    assert later and later[-1].to_storage == NEW


def test_a_stale_leader_neither_commits_with_a_new_storage_nor_ends_its_abstention():
    """Review finding F1: a wiped n2 no longer knows the higher term; a deposed leader
    reaches it. Its acknowledgements need one more (n3 is gone to the new term), and
    the leader, unable to commit, never names its storage."""
    core = leader()
    term = core.term
    core.step(ack(N2, term, core.log.last_index(), OLD))
    drain(core)
    committed = core.commit
    core.step(abstaining_ack(N2, term, len(BOOT), NEW))
    index, _ = core.propose(b"only on the stale leader")
    for m in drain(core):
        if isinstance(m, AppendEntries) and m.recipient == N2:
            assert m.to_storage == 0
    core.step(abstaining_ack(N2, term, index, NEW))
    core.tick()
    sent = drain(core)
    assert core.commit == committed
    assert all(m.to_storage == 0 for m in sent if isinstance(m, AppendEntries))


def test_a_named_identity_is_not_replaced_by_a_late_answer_that_does_not_abstain():
    """Review finding F2: the leader knows n2's new storage (a smaller identity: the clock
    went back) and named it; the lost storage's late answer, larger and not abstaining,
    is dropped instead of counted."""
    core = leader({N2: 50, N3: OTHER})
    term = core.term
    core.step(ack(N2, term, core.log.last_index(), 50))
    core.step(ack(N3, term, core.log.last_index(), OTHER))
    drain(core)
    core.propose(b"y")
    drain(core)
    assert core.progress[N2].named
    index, _ = core.propose(b"z")
    drain(core)
    core.step(ack(N2, term, index, OLD))  # late, from the lost storage (id 100)
    assert core.progress[N2].storage_id == 50
    assert core.commit < index


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
    assert vote_result([N1], {N1: True}, {N1}) is True  # a lone founder decides alone
    assert vote_result([N1], {N1: True}, {N1}, alone_counts=False) is False


def test_acknowledgements_from_an_abstainer_need_one_more():
    """Commit and read rounds count like votes: with an abstainer among them, a majority
    plus one."""
    from leeky_twisted.core.quorum import committed_index

    three = [N1, N2, N3]
    assert committed_index(three, {N1: 9, N2: 9, N3: 4}) == 9
    assert committed_index(three, {N1: 9, N2: 9, N3: 4}, {N2}) == 4
    assert committed_index(three, {N1: 9, N2: 9, N3: 4}, {N3}) == 9  # not among them
    assert committed_index(three, {N1: 9, N2: 7, N3: 8}, {N3}) == 7
    assert committed_index([N1], {N1: 5}, {N1}) == 5


def test_a_lone_voter_that_joined_and_abstains_does_not_elect_itself():
    """Review finding F3: a wiped member of a cluster founded as one voter rejoins; its log
    holds only the first entry (a configuration of itself alone). It must not elect itself
    over the larger cluster's committed entries; a lone founder may."""
    boot = bootstrap_entries([(N1, b"")])
    for founder, expected in ((False, False), (True, True)):
        core = RaftCore(
            CoreConfig(N1, election_ticks=10, heartbeat_ticks=2),
            random.Random(3),
            HardState(1, None, 1, abstaining=True, storage_id=5),
            None,
            boot,
            sole_founder=founder,
        )
        for _ in range(60):
            core.tick()
            drain(core)
        assert (core.role is Role.LEADER) is expected
