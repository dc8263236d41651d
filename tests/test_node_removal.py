"""A node removed while it was away is told so by the members that applied its removal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from leeky_twisted.core.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    NodeId,
    RequestVote,
)
from leeky_twisted.server.node import RaftNode
from leeky_twisted.storage.memory import MemorySnapshotStore
from leeky_twisted.transport.notices import RemovedNotice
from tests.test_node import make_node, run

N1, N2, N3, N4 = NodeId("1"), NodeId("2"), NodeId("3"), NodeId("4")


def config_entry(index: int, op: ConfChangeOp, nid: NodeId) -> Entry:
    return Entry(index, 2, EntryKind.CONFIG, ConfChange(op, nid).encode())


def from_leader(node: RaftNode, entries: list[Entry], commit: int) -> None:
    """Deliver ``entries`` (term 2, right after the node's last entry) from leader 2."""
    core = node.core
    prev = entries[0].index - 1
    node.receive(
        AppendEntries(N2, node.node_id, 2, prev, core.log.term_at(prev), tuple(entries), commit)
    )


def vote_request(sender: NodeId, recipient: NodeId, pre_vote: bool = True) -> RequestVote:
    return RequestVote(sender, recipient, 9, 1, 1, pre_vote=pre_vote)


def notices(transport: Any) -> list[RemovedNotice]:
    return [m for m in transport.sent if isinstance(m, RemovedNotice)]


@pytest.fixture
def capture_node_logs() -> Iterator[list[str]]:
    """Collect the formatted lines every logger writes during the test."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


# ------------------------------------------------------------------- the members


def test_a_member_that_applied_the_removal_tells_the_removed_node():
    """Member 1 applied "remove 3" at 4: it answers 3's pre-vote with a notice, not a vote."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    from_leader(node, [config_entry(4, ConfChangeOp.REMOVE, N3)], commit=4)
    run(clock, 0.1)
    assert node.addresses.removed_at("3") == 4
    term = node.core.term
    transport.sent.clear()
    node.receive(vote_request(N3, N1, pre_vote=False))
    assert notices(transport) == [RemovedNotice(N1, N3, 4)]
    assert node.core.term == term  # the request never reached the core


@pytest.mark.parametrize("holds_the_addition", [False, True])
def test_a_lagging_member_that_has_not_applied_the_addition_says_nothing(holds_the_addition):
    """4 was added, and asks member 1 for a vote; 1 has not applied "add 4" (it has not
    received it, or holds it uncommitted): 4 is not in its configuration, yet no notice."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    if holds_the_addition:
        from_leader(node, [config_entry(4, ConfChangeOp.ADD_LEARNER, N4)], commit=3)
    run(clock, 0.1)
    transport.sent.clear()
    node.receive(vote_request(N4, N1))
    assert notices(transport) == []
    assert node.addresses.removed_at("4") is None


def test_a_member_that_applied_a_removal_but_holds_the_readdition_says_nothing():
    """Removed at 4, added back at 5 (not yet applied): 3 is a member again, no notice."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    from_leader(node, [config_entry(4, ConfChangeOp.REMOVE, N3)], commit=4)
    from_leader(node, [config_entry(5, ConfChangeOp.ADD_LEARNER, N3)], commit=4)
    run(clock, 0.1)
    assert node.addresses.removed_at("3") == 4
    transport.sent.clear()
    node.receive(vote_request(N3, N1))
    assert notices(transport) == []


def test_an_applied_readdition_clears_the_mark():
    """Once "add 3 back" is applied, nobody is told 3 was removed."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    from_leader(node, [config_entry(4, ConfChangeOp.REMOVE, N3)], commit=4)
    from_leader(node, [config_entry(5, ConfChangeOp.ADD_LEARNER, N3)], commit=5)
    run(clock, 0.1)
    assert node.addresses.removed_at("3") is None


def test_the_removal_mark_survives_a_snapshot_and_a_restart():
    """The entry is compacted away; a node restarted on the same stores still knows."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    from_leader(node, [config_entry(4, ConfChangeOp.REMOVE, N3)], commit=4)
    from_leader(node, [Entry(5, 2, EntryKind.NOOP)], commit=5)
    run(clock, 0.1)
    assert node.snapshot_now(trailing=0)
    run(clock, 0.1)
    assert node.log_store.first_index() > 4  # the removal entry is gone from the log
    again = RaftNode(
        clock,
        node.core.cfg,
        node.log_store,
        node.stable_store,
        node.snapshot_store,
        transport,
        type(node.local_state_machine())(),
        node.settings,
    )
    assert isinstance(again.snapshot_store, MemorySnapshotStore)
    assert again.addresses.removed_at("3") == 4
    transport.sent.clear()
    again.receive(vote_request(N3, N1))
    assert notices(transport) == [RemovedNotice(N1, N3, 4)]


# ---------------------------------------------------------------- the removed node


def removed_node_told(index: int = 6) -> tuple[RaftNode, Any, Any]:
    """Node 3 of {1, 2, 3}, campaigning alone, told by 1 it was removed at ``index``."""
    node, clock, transport, _ = make_node(["1", "2", "3"], me="3")
    run(clock, 1.5)
    assert any(isinstance(m, RequestVote) for m in transport.sent)
    node.receive(RemovedNotice(N1, N3, index))
    return node, clock, transport


def test_a_told_node_shows_removed_and_stops_campaigning(capture_node_logs):
    """Role removed, one warning saying what to do, and no vote request after it."""
    node, clock, transport = removed_node_told()
    assert node.status().role == "removed"
    transport.sent.clear()
    node.receive(RemovedNotice(N2, N3, 6))  # said again: logged once
    run(clock, 5.0)
    assert not any(isinstance(m, RequestVote) for m in transport.sent)
    assert node.status().role == "removed"
    warnings = [line for line in capture_node_logs if "was removed from the cluster" in line]
    assert len(warnings) == 1
    assert "wipe its data folder" in warnings[0] and "add-server 3" in warnings[0]


def test_a_told_node_that_is_added_back_campaigns_again():
    """The leader's entries carry its log past the removal: it is a member again."""
    node, clock, _ = removed_node_told(index=5)
    entries = [
        Entry(4, 2, EntryKind.NOOP),
        config_entry(5, ConfChangeOp.REMOVE, N3),
        config_entry(6, ConfChangeOp.ADD_LEARNER, N3),
    ]
    from_leader(node, entries, commit=6)
    run(clock, 0.1)
    assert node.status().role == "learner"
    assert not node.removal.silenced()


def test_a_notice_about_a_change_the_node_already_holds_is_ignored(capture_node_logs):
    """Its log holds configuration changes up to 3: a notice of removal at 3 is stale news
    (said once in the log, however often it comes)."""
    node, clock, transport = removed_node_told(index=3)
    node.receive(RemovedNotice(N2, N3, 3))
    assert node.status().role == "candidate"
    assert sum("notice that this node was removed" in line for line in capture_node_logs) == 1
    transport.sent.clear()
    run(clock, 2.0)
    assert any(isinstance(m, RequestVote) for m in transport.sent)


def test_a_notice_from_a_node_outside_the_configuration_is_ignored():
    """Only a member of its own configuration may tell a node it was removed."""
    node, clock, _, _ = make_node(["1", "2", "3"], me="3")
    run(clock, 1.5)
    node.receive(RemovedNotice(NodeId("9"), N3, 6))
    assert node.status().role == "candidate"
