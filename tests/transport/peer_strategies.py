"""Hypothesis strategies for core messages within the wire bounds (shared by the transport tests).

Every message drawn here is one a valid peer may send: terms in [0, MAX_TERM],
indexes in [0, MAX_INDEX], entries consecutive after prev_log_index with
non-decreasing terms no later than the message's term.
"""

from __future__ import annotations

from hypothesis import strategies as st

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_READ_REQUEST,
    MAX_STORAGE_ID,
    MAX_TERM,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)

#: Edge values are drawn often: hypothesis favours small integers otherwise.
terms = st.one_of(st.integers(0, MAX_TERM), st.sampled_from([0, 1, MAX_TERM - 1, MAX_TERM]))
indexes = st.one_of(st.integers(0, MAX_INDEX), st.sampled_from([0, 1, MAX_INDEX - 1, MAX_INDEX]))
node_ids = st.text(max_size=12).map(NodeId)
configs = st.builds(
    Configuration, st.frozensets(node_ids, max_size=5), st.frozensets(node_ids, max_size=3)
)


def at_most(limit: int) -> st.SearchStrategy[int]:
    """Integers in [0, limit], edges included."""
    return st.one_of(st.integers(0, limit), st.sampled_from([0, limit]))


@st.composite
def request_votes(draw: st.DrawFn) -> RequestVote:
    """A RequestVote whose last log term is at most its term."""
    term = draw(terms)
    return RequestVote(
        draw(node_ids),
        draw(node_ids),
        term,
        draw(indexes),
        draw(at_most(term)),
        draw(st.booleans()),
        draw(st.booleans()),
    )


#: storage identities, up to the bound a message may carry
storage_ids = st.integers(0, MAX_STORAGE_ID)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    """An AppendEntries with consecutive entries whose terms lie in [prev_log_term, term]."""
    term = draw(terms)
    prev_term = draw(at_most(term))
    count = draw(st.integers(0, 8))
    prev_index = draw(at_most(MAX_INDEX - count))
    entry_terms = sorted(
        draw(st.lists(st.integers(prev_term, term), min_size=count, max_size=count))
    )
    batch = tuple(
        Entry(
            prev_index + 1 + i,
            entry_term,
            draw(st.sampled_from(EntryKind)),
            draw(st.binary(max_size=40)),
        )
        for i, entry_term in enumerate(entry_terms)
    )
    return AppendEntries(
        draw(node_ids),
        draw(node_ids),
        term,
        prev_index,
        prev_term,
        batch,
        draw(indexes),
        draw(storage_ids),
    )


@st.composite
def install_snapshots(draw: st.DrawFn) -> InstallSnapshot:
    """An InstallSnapshot whose snapshot term is at most its term."""
    term = draw(terms)
    meta = SnapshotMeta(draw(indexes), draw(at_most(term)), draw(configs))
    return InstallSnapshot(draw(node_ids), draw(node_ids), term, meta)


read_requests = st.integers(1, MAX_READ_REQUEST)

MESSAGES = {
    RequestVote: request_votes(),
    RequestVoteResponse: st.builds(
        RequestVoteResponse,
        node_ids,
        node_ids,
        terms,
        st.booleans(),
        st.booleans(),
        storage_ids,
        st.booleans(),
    ),
    AppendEntries: append_entries(),
    AppendEntriesResponse: st.builds(
        AppendEntriesResponse,
        node_ids,
        node_ids,
        terms,
        st.booleans(),
        indexes,
        indexes,
        terms,
        indexes,
        storage_ids,
    ),
    Heartbeat: st.builds(Heartbeat, node_ids, node_ids, terms, indexes, indexes),
    HeartbeatResponse: st.builds(
        HeartbeatResponse, node_ids, node_ids, terms, indexes, indexes, storage_ids
    ),
    InstallSnapshot: install_snapshots(),
    TimeoutNow: st.builds(TimeoutNow, node_ids, node_ids, terms),
    ReadIndexRequest: st.builds(ReadIndexRequest, node_ids, node_ids, terms, read_requests),
    ReadIndexResponse: st.builds(
        ReadIndexResponse, node_ids, node_ids, terms, read_requests, indexes
    ),
}
any_message = st.one_of(*MESSAGES.values())
