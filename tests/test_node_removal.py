"""A node removed while it was away is told so by the members that applied its removal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from leeky_twisted.api.amp_api import KeyValueFrontend
from leeky_twisted.api.jsonrpc_api import REMOVED, KeyValueJSONRPC
from leeky_twisted.core.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    Heartbeat,
    NodeId,
    RequestVote,
)
from leeky_twisted.dashboard.traffic import CountingTransport, MessageCounter
from leeky_twisted.membership.contact import ContactTracker, ContactTrackingTransport
from leeky_twisted.protocol.commands import CLIENT_ERRORS
from leeky_twisted.protocol.errors import Removed
from leeky_twisted.server.node import RaftNode
from leeky_twisted.statemachine.commands import Get
from leeky_twisted.storage.memory import MemorySnapshotStore
from leeky_twisted.testing.apifakes import FakeRaftNode
from leeky_twisted.transport.notices import RemovedNotice
from tests.test_node import make_node, outcome, run

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


def removed_then_added_back() -> list[Entry]:
    """The leader's entries 4-6: its no-op, N3's removal, N3 added back as a learner."""
    return [
        Entry(4, 2, EntryKind.NOOP),
        config_entry(5, ConfChangeOp.REMOVE, N3),
        config_entry(6, ConfChangeOp.ADD_LEARNER, N3),
    ]


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
    from_leader(node, removed_then_added_back(), commit=6)
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


# ------------------------------------------------- a removed node refuses clients


def assert_refused_as_removed(d: Any, index: int) -> None:
    """``d`` already failed with Removed, saying what happened and what to do."""
    out = outcome(d)
    assert len(out) == 1, "refused at once, not after waiting for a leader"
    error = out[0].value
    assert isinstance(error, Removed)
    text = str(error)
    assert f"node 3 was removed from the cluster (configuration change at {index})" in text
    assert "use another node" in text and "add-server 3" in text and "wipe" in text


def removed_by_its_own_log() -> tuple[RaftNode, Any]:
    """Node 3, a follower of leader 2, that applied its own removal at 5."""
    node, clock, _, _ = make_node(["1", "2", "3"], me="3")
    entries = [Entry(4, 2, EntryKind.NOOP), config_entry(5, ConfChangeOp.REMOVE, N3)]
    from_leader(node, entries, commit=5)
    run(clock, 0.1)
    assert node.removed_at == 5
    return node, clock


@pytest.mark.parametrize("how", ["told", "applied"])
def test_a_removed_node_refuses_every_client_request_at_once(how):
    """Writes, linearizable and stale reads, config changes and transfers: Removed at once."""
    if how == "told":
        node, _, _ = removed_node_told(index=6)
        index = 6
    else:
        node, _ = removed_by_its_own_log()
        index = 5
    assert node.role_name() == "removed"
    assert_refused_as_removed(node.propose(b"x", 5.0), index)
    assert_refused_as_removed(node.read(Get("z"), True, 5.0), index)
    assert_refused_as_removed(node.read(Get("z"), False, 5.0), index)
    change = ConfChange(ConfChangeOp.ADD_VOTER, N4)
    assert_refused_as_removed(node.propose_config_change(change, 5.0), index)
    with pytest.raises(Removed):
        node.transfer_leadership(N1)
    assert isinstance(node.removed(), Removed)


def test_a_removed_node_added_back_serves_again():
    """Told it was removed at 5, then the leader's entries add it back: no longer refused."""
    node, clock, _ = removed_node_told(index=5)
    assert isinstance(node.removed(), Removed)
    from_leader(node, removed_then_added_back(), commit=6)
    run(clock, 0.1)
    assert node.removed() is None
    out = outcome(node.propose(b"x", 5.0))
    assert not isinstance(out[0].value, Removed)  # NotLeader: it forwards, as any learner


def test_a_member_is_not_removed():
    """A plain follower answers NotLeader (to be forwarded), never Removed."""
    node, _, _, _ = make_node(["1", "2", "3"], me="3")
    assert node.removed() is None
    out = outcome(node.propose(b"x", 5.0))
    assert not isinstance(out[0].value, Removed)


# ----------------------------------------------------- the frontends answer at once


def test_the_frontend_answers_removed_at_once_for_every_kind_of_request():
    """Hot paths, slow paths (delete, lease keepalive) and watches: no wait for a leader."""
    node, clock, _ = removed_node_told(index=6)
    frontend = KeyValueFrontend(node, clock)
    calls = [
        frontend.get_now("z"),
        frontend.put_now("z", "v"),
        Deferred.fromCoroutine(frontend.get("z", stale=True)),
        Deferred.fromCoroutine(frontend.delete("z")),
        Deferred.fromCoroutine(frontend.lease_grant(10)),
        Deferred.fromCoroutine(frontend.lease_keepalive(1)),
        Deferred.fromCoroutine(frontend.register_session()),
        Deferred.fromCoroutine(
            frontend.txn({"success": [{"type": "put", "key": "a", "value": "b"}]})
        ),
        Deferred.fromCoroutine(frontend.poll_watch("z", wait=0)),
    ]
    for d in calls:
        assert_refused_as_removed(d, 6)
    with pytest.raises(Removed):
        frontend.start_watch("z", None, False, None, object())  # type: ignore[arg-type]
    frontend.close()


def test_removed_has_its_own_code_on_both_apis():
    """AMP carries it as REMOVED (rebuilt as Removed); JSON-RPC as -32006."""
    assert CLIENT_ERRORS[Removed] == b"REMOVED"
    resource = KeyValueJSONRPC(KeyValueFrontend(FakeRaftNode(), Clock()), 1 << 20)
    error = resource.error_for(Failure(Removed("node 3 was removed")), "get")
    assert error["code"] == REMOVED == -32006
    assert "node 3 was removed" in error["message"]


# ------------------------------------------- the members forget the removed peer


def test_applying_a_peers_removal_tells_the_transport_to_forget_it():
    """Its queue goes and it is no longer dialled; a re-addition is not a removal."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    forgotten: list[NodeId] = []

    def disconnect(peer: NodeId) -> Deferred[None]:
        forgotten.append(peer)
        return succeed(None)

    transport.disconnect = disconnect
    from_leader(node, removed_then_added_back(), commit=6)
    run(clock, 0.1)
    assert forgotten == [N3]


def test_the_wrappers_around_the_peer_transport_pass_disconnect_through():
    """In a service the node's transport is wrapped twice: disconnect must reach the real one."""
    inner = Mock(spec=["send", "close", "set_receiver", "flush", "set_after_read", "disconnect"])
    counting = CountingTransport(inner, MessageCounter())
    tracked = ContactTrackingTransport(counting, ContactTracker(Clock()))
    assert tracked.disconnect is inner.disconnect


def test_the_wrappers_pass_the_per_turn_sending_through_and_count_each_message():
    """send_batch and defer_to_end_of_read reach the real transport through both wrappers
    (else the node falls back to a send and a flush per message); each message is counted."""
    inner = Mock(
        spec=["send", "close", "set_receiver", "flush", "send_batch", "defer_to_end_of_read"]
    )
    counter = MessageCounter()
    counting = CountingTransport(inner, counter)
    tracked = ContactTrackingTransport(counting, ContactTracker(Clock()))
    assert tracked.defer_to_end_of_read is inner.defer_to_end_of_read
    messages = [Heartbeat(sender="n1", recipient=f"n{i}", term=1, commit=0) for i in (2, 3)]
    tracked.send_batch(messages)
    inner.send_batch.assert_called_once_with(messages)
    assert sum(counter.sent.values()) == 2


# --------------------------------------------- open watches end when the node learns it


class _Sink:
    """A watch sink that records what the hub tells it."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def events(self, watcher: Any, events: list[Any]) -> None:
        pass

    def progress(self, watcher: Any, revision: int) -> None:
        pass

    def cancelled(self, watcher: Any, reason: str) -> None:
        self.ended.append(reason)


@pytest.mark.parametrize("how", ["told", "applied"])
def test_open_watches_end_with_removed_when_the_node_learns_it_was_removed(how):
    """Watches taken on before the removal: a pushed watch ends with the removed node's
    error (as its reason, after ``removed: ``), a waiting long poll fails with Removed,
    instead of waiting in silence on a node whose state no longer moves."""
    node, clock, _, _ = make_node(["1", "2", "3"], me="3")
    if how == "told":
        run(clock, 1.5)  # campaigning: a notice is believed
    frontend = KeyValueFrontend(node, clock)
    sink = _Sink()
    frontend.start_watch("z", None, False, None, sink)  # type: ignore[arg-type]
    poll = Deferred.fromCoroutine(frontend.poll_watch("z", wait=30))
    assert frontend.watches is not None and len(frontend.watches.watchers()) == 2
    if how == "told":
        node.receive(RemovedNotice(N1, N3, 6))
        index = 6
    else:
        entries = [Entry(4, 2, EntryKind.NOOP), config_entry(5, ConfChangeOp.REMOVE, N3)]
        from_leader(node, entries, commit=5)
        run(clock, 0.1)
        index = 5
    assert sink.ended == [f"removed: {node.removed()}"]
    assert (
        f"node 3 was removed from the cluster (configuration change at {index})" in (sink.ended[0])
    )
    assert_refused_as_removed(poll, index)
    assert frontend.watches.watchers() == []
    frontend.close()


def test_a_node_tells_its_removal_observers_once_per_removal():
    """on_removed observers hear the error each time the node learns of a removal."""
    node, _, _ = removed_node_told(index=6)
    heard: list[Exception] = []
    node.on_removed(heard.append)
    node.receive(RemovedNotice(N2, N3, 6))  # the same removal, said again
    assert heard == []
    node2, clock2, _, _ = make_node(["1", "2", "3"], me="3")
    node2.on_removed(heard.append)
    run(clock2, 1.5)
    node2.receive(RemovedNotice(N1, N3, 6))
    assert len(heard) == 1 and heard[0] is node2.removed()
