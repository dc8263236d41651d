"""Seats: the configuration names the storage whose votes and acknowledgements count
for each voter; a replaced storage's seat is vacated, then bound to the new storage
(docs/core.md, "A node that lost its storage")."""

from __future__ import annotations

import random

import pytest

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.log import RaftLog
from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
)
from leeky_twisted.core.raft import RaftCore, bootstrap_entries
from leeky_twisted.storage.files import _decode_snapshot_meta, _encode_snapshot_header
from leeky_twisted.transport.codec import CodecError, decode, encode

N1, N2, N3, N4 = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("n4")
S1, S2, S3, S2_NEW = 11, 22, 33, 44
THREE = frozenset({N1, N2, N3})


def seated_log(seats: dict[NodeId, int], voters: tuple[NodeId, ...] = (N1, N2, N3)) -> list[Entry]:
    """The bootstrap entries, then one entry binding each seat, all at term 1."""
    entries = bootstrap_entries([(nid, b"") for nid in voters])
    for nid, storage in sorted(seats.items()):
        change = ConfChange.bind(nid, storage)
        entries.append(Entry(len(entries) + 1, 1, EntryKind.CONFIG, change.encode()))
    return entries


def core(nid: NodeId, storage: int, entries: list[Entry], commit: int | None = None) -> RaftCore:
    commit = len(entries) if commit is None else commit
    return RaftCore(
        CoreConfig(nid, election_ticks=10, heartbeat_ticks=2, pre_vote=False),
        random.Random(1),
        HardState(1, None, commit, storage_id=storage),
        None,
        entries,
    )


def drain(c: RaftCore) -> list[Message]:
    out: list[Message] = []
    while c.has_ready():
        rd = c.ready()
        out += list(rd.messages) + list(rd.messages_after_persist)
        c.advance(rd)
    return out


def campaign(c: RaftCore) -> list[Message]:
    sent: list[Message] = []
    for _ in range(40):
        c.tick()
        sent += drain(c)
        if c.role is Role.CANDIDATE:
            return sent
    raise AssertionError("did not campaign")


# ------------------------------------------------------------ the configuration


def test_a_seat_is_bound_vacated_and_bound_again_never_swapped():
    cfg = Configuration(THREE)
    assert cfg.storage_of(N2) is None  # unbound
    bound = cfg.apply(ConfChange.bind(N2, S2))
    assert bound.storage_of(N2) == S2
    with pytest.raises(ValueError, match="vacate"):
        bound.apply(ConfChange.bind(N2, S2_NEW))  # the two majorities need not overlap
    vacant = bound.apply(ConfChange.bind(N2, 0))
    assert vacant.storage_of(N2) == 0
    assert vacant.apply(ConfChange.bind(N2, S2_NEW)).storage_of(N2) == S2_NEW
    with pytest.raises(ValueError, match="already bound"):
        bound.apply(ConfChange.bind(N2, S2))
    with pytest.raises(ValueError, match="not a voter"):
        cfg.apply(ConfChange.bind(N4, 1))
    removed = bound.apply(ConfChange(ConfChangeOp.REMOVE, N2))
    assert removed.storage_of(N2) is None and removed.storage == ()


@pytest.mark.parametrize("context", [b"", b"-1", b"abc", b"1" * 21, str(2**63).encode()])
def test_a_malformed_seat_change_is_ignored_the_same_way_everywhere(context):
    change = ConfChange(ConfChangeOp.BIND_STORAGE, N2, context)
    with pytest.raises(ValueError):
        Configuration(THREE).apply(change)
    log = RaftLog(0, 0, None, seated_log({}))
    log.append([Entry(4, 1, EntryKind.CONFIG, change.encode())])
    assert log.config() == Configuration(THREE)


def test_seats_travel_with_a_snapshot_on_the_wire_and_on_disk():
    cfg = Configuration(THREE, frozenset({N4}), ((N1, S1), (N2, 0), (N3, S3)))
    meta = SnapshotMeta(9, 2, cfg)
    decoded = decode(encode(InstallSnapshot(N1, N2, 3, meta)))
    assert isinstance(decoded, InstallSnapshot) and decoded.meta == meta
    header = _encode_snapshot_header(meta)
    assert _decode_snapshot_meta(header[12:], "snap") == meta  # after magic and length


def test_a_seat_for_a_node_that_is_no_voter_is_refused_on_the_wire():
    cfg = Configuration(frozenset({N1}), frozenset({N4}), ((N4, 5),))
    with pytest.raises(CodecError, match="not a voter"):
        decode(encode(InstallSnapshot(N1, N2, 3, SnapshotMeta(9, 2, cfg))))


# -------------------------------------------------------------- counting


def test_a_grant_from_another_storage_than_the_seats_is_not_counted():
    """Regression (the double vote after a lost disk): n2's storage S2 voted in this term
    and was then lost; its replacement, caught up from an older leader, grants again. The
    candidate's configuration seats S2: the second grant must not count."""
    candidate = core(N1, S1, seated_log({N1: S1, N2: S2, N3: S3}))
    votes = [m for m in campaign(candidate) if isinstance(m, RequestVote)]
    assert {m.recipient for m in votes} == {N2, N3}
    term = candidate.term
    candidate.step(RequestVoteResponse(N2, N1, term, True, False, S2_NEW, False))
    drain(candidate)
    assert candidate.role is Role.CANDIDATE
    candidate.step(RequestVoteResponse(N3, N1, term, True, False, S3, False))
    assert candidate.role is Role.LEADER


def test_acknowledgements_from_another_storage_than_the_seats_do_not_commit():
    leader = core(N1, S1, seated_log({N1: S1, N2: S2, N3: S3}))
    campaign(leader)
    leader.step(RequestVoteResponse(N2, N1, leader.term, True, False, S2, False))
    assert leader.role is Role.LEADER
    drain(leader)
    index = leader.log.last_index()
    leader.step(AppendEntriesResponse(N2, N1, leader.term, True, index, storage=S2_NEW))
    drain(leader)
    assert leader.commit < index
    leader.step(AppendEntriesResponse(N3, N1, leader.term, True, index, storage=S3))
    assert leader.commit == index


def test_a_replaced_storage_does_not_end_its_abstention_on_an_append_naming_it():
    """The old rule (an append naming this storage from any leader) let a replaced
    storage vote again in a term its lost predecessor had voted in; a seated voter
    waits for a committed configuration naming its storage instead."""
    entries = seated_log({N1: S1, N2: S2, N3: S3})
    fresh = RaftCore(
        CoreConfig(N2, election_ticks=10, heartbeat_ticks=2),
        random.Random(2),
        HardState(5, None, 0, True, S2_NEW),
        None,
        [],
        fresh=True,
    )
    append = AppendEntries(N1, N2, 5, 0, 0, tuple(entries), len(entries), S2_NEW)
    fresh.step(append)
    drain(fresh)
    assert fresh.log.last_index() == len(entries)
    assert fresh.abstaining  # its seat names S2, the lost storage
    vacate = Entry(len(entries) + 1, 5, EntryKind.CONFIG, ConfChange.bind(N2, 0).encode())
    bind = Entry(len(entries) + 2, 5, EntryKind.CONFIG, ConfChange.bind(N2, S2_NEW).encode())
    fresh.step(AppendEntries(N1, N2, 5, len(entries), 1, (vacate, bind), bind.index - 1, S2_NEW))
    assert fresh.abstaining  # bound, but not yet committed
    fresh.step(AppendEntries(N1, N2, 5, bind.index, 5, (), bind.index, S2_NEW))
    assert not fresh.abstaining


def test_a_voter_whose_seat_names_another_storage_does_not_stand_for_election():
    c = core(N2, S2_NEW, seated_log({N1: S1, N2: S2, N3: S3}))
    for _ in range(60):
        c.tick()
        assert not [m for m in drain(c) if isinstance(m, RequestVote)]
    assert c.role is Role.FOLLOWER


def test_a_node_holding_its_own_uncommitted_removal_stands_for_election():
    """Regression (seed 20675): n1 holds the most complete log, whose last entry removes
    n1; it refuses the others (their logs are behind) and, as a non-voter, would never
    campaign: no leader ever. It stands, counted by the new configuration only, commits
    its removal and steps down."""
    entries = bootstrap_entries([(nid, b"") for nid in (N1, N2, N3, N4)])
    removal = Entry(5, 1, EntryKind.CONFIG, ConfChange(ConfChangeOp.REMOVE, N1).encode())
    c = core(N1, S1, [*entries, removal], commit=4)
    votes = [m for m in campaign(c) if isinstance(m, RequestVote)]
    assert {m.recipient for m in votes} == {N2, N3, N4}
    c.step(RequestVoteResponse(N2, N1, c.term, True, False, S2, False))
    c.step(RequestVoteResponse(N3, N1, c.term, True, False, S3, False))
    assert c.role is Role.LEADER
    drain(c)
    last = c.log.last_index()
    c.step(AppendEntriesResponse(N2, N1, c.term, True, last, storage=S2))
    c.step(AppendEntriesResponse(N3, N1, c.term, True, last, storage=S3))
    assert c.commit == last
    assert c.role is Role.FOLLOWER  # removed: it steps down once its removal commits


def test_a_change_leaving_no_counted_majority_is_refused():
    """Regression (seed 303572): with n3's seat vacant, removing n2 would leave {n1, n3},
    whose majority needs the vacant seat: nothing could commit again. Refused; removing
    n3 (which helps) is not."""
    leader = core(N1, S1, seated_log({N1: S1, N2: S2, N3: S3}))
    campaign(leader)
    leader.step(RequestVoteResponse(N2, N1, leader.term, True, False, S2, False))
    drain(leader)
    last = leader.log.last_index()
    for nid, storage in ((N2, S2), (N3, S3)):
        leader.step(AppendEntriesResponse(nid, N1, leader.term, True, last, storage=storage))
    drain(leader)
    assert leader.commit == last
    leader.step(HeartbeatResponse(N3, N1, leader.term, 0, 0, S3 + 1, True))
    drain(leader)  # n3 answers from a new storage: its seat is vacated
    vacate = leader.log.last_index()
    leader.step(AppendEntriesResponse(N2, N1, leader.term, True, vacate, storage=S2))
    drain(leader)
    assert leader.commit == vacate and leader.configuration.storage_of(N3) == 0
    with pytest.raises(ValueError, match="majority"):
        leader.propose_config_change(ConfChange(ConfChangeOp.REMOVE, N2))
    leader.propose_config_change(ConfChange(ConfChangeOp.REMOVE, N3))
