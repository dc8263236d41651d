"""RaftNode on a task.Clock with in-memory stores and a recording transport."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from zope.interface import implementer
from zope.interface.verify import verifyObject

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.interfaces import IPeerTransport, IRaftNode
from leeky_twisted.protocol.errors import CommitTimeout, NotLeader, Unavailable
from leeky_twisted.server.node import INLINE_PERSIST_BYTES, NodeSettings, RaftNode
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore


@implementer(IPeerTransport)
class RecordingTransport:
    """Records sent messages, with the events log they share with the stores."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.sent: list[Any] = []
        self.receiver: Any = None

    def send(self, message: Any) -> None:
        self.sent.append(message)
        self.events.append(("send", type(message).__name__))

    def set_receiver(self, receiver: Any) -> None:
        self.receiver = receiver

    def close(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d


class RecordingStableStore(MemoryStableStore):
    """A stable store that notes each save in the shared events log."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__()
        self.events = events

    def save(self, hard_state: object) -> None:
        self.events.append(("save", hard_state))
        super().save(hard_state)


def make_node(
    voters: list[str],
    me: str = "1",
    timeout_ticks: int = 10,
    *,
    transport_type: Callable[[list[Any]], RecordingTransport] = RecordingTransport,
    **extra: Any,
):
    clock = task.Clock()
    events: list[Any] = []
    log_store = MemoryLogStore()
    stable = RecordingStableStore(events)
    entries = bootstrap_entries([(NodeId(v), b"") for v in voters])
    log_store.append(entries)
    stable.save(HardState(1, None, len(entries)))
    events.clear()
    transport = transport_type(events)
    node = RaftNode(
        clock,
        CoreConfig(NodeId(me), election_ticks=timeout_ticks, heartbeat_ticks=2),
        log_store,
        stable,
        MemorySnapshotStore(),
        transport,
        KeyValueStateMachine(),
        NodeSettings(tick_interval=0.05),
        rng=random.Random(1),
        **extra,
    )
    node.start()
    return node, clock, transport, events


def run(clock: task.Clock, seconds: float, step: float = 0.01) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def outcome(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_node_provides_its_interface():
    """RaftNode implements IRaftNode."""
    node, *_ = make_node(["1"])
    assert verifyObject(IRaftNode, node)


def test_single_node_elects_itself_and_applies_a_put():
    """A one-voter cluster elects itself and answers a put with the state machine's result."""
    node, clock, _, _ = make_node(["1"])
    run(clock, 2.0)
    assert node.status().role == "leader"
    got = outcome(node.propose(kv.encode_command(kv.Put("k", "v", None)), timeout=5))
    run(clock, 0.1)
    assert got == [None]
    read = outcome(node.read(kv.Get("k"), linearizable=True, timeout=5))
    run(clock, 0.1)
    assert read == ["v"]


def lead_by_hand(node: RaftNode, clock: task.Clock) -> None:
    """Make ``node`` leader of its 3-voter cluster by delivering votes from 2 and 3."""
    run(clock, 1.5)  # time out and pre-campaign; nobody answers
    for peer in ("2", "3"):
        node.receive(RequestVoteResponse(NodeId(peer), NodeId("1"), node.core.term + 1, True, True))
    run(clock, 0.05)
    for peer in ("2", "3"):
        node.receive(RequestVoteResponse(NodeId(peer), NodeId("1"), node.core.term, True, False))
    run(clock, 0.05)
    assert node.status().role == "leader"


def test_view_and_progress_show_a_leader_and_its_followers():
    """view() is the node's state as a value object; progress() is empty off the lead."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    assert node.progress() == {}
    assert node.view().role is Role.FOLLOWER
    lead_by_hand(node, clock)
    view = node.view()
    assert (view.role, view.leader, view.term) == (Role.LEADER, "1", node.core.term)
    assert view.configuration.voters == {"1", "2", "3"}
    assert set(node.progress()) == {"1", "2", "3"}
    assert view.progress == node.progress()
    assert node.progress()["2"].match == 0
    assert node.local_state_machine() is node.state_machine


def test_uncommittable_write_times_out_with_outcome_unknown():
    """A leader that cannot reach a majority answers CommitTimeout at the deadline."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    got = outcome(node.propose(kv.encode_command(kv.Put("k", "v", None)), timeout=0.3))
    run(clock, 0.2)
    assert got == []
    run(clock, 0.2)
    assert len(got) == 1 and got[0].check(CommitTimeout)
    assert str(got[0].value) == "timed out, outcome unknown"


def test_follower_refuses_writes_with_not_leader():
    """A node that does not lead answers NotLeader at once."""
    node, _clock, _, _ = make_node(["1", "2", "3"])
    got = outcome(node.propose(b"x", timeout=1))
    assert len(got) == 1 and got[0].check(NotLeader)


def test_vote_is_saved_before_the_vote_response_is_sent():
    """The node persists term and vote before the RequestVoteResponse leaves."""
    node, clock, transport, events = make_node(["1", "2", "3"])
    node.receive(RequestVote(NodeId("2"), NodeId("1"), 5, 10, 1, pre_vote=False))
    run(clock, 0.05)
    saves = [i for i, e in enumerate(events) if e[0] == "save" and e[1].voted_for == "2"]
    sends = [i for i, e in enumerate(events) if e == ("send", "RequestVoteResponse")]
    assert saves and sends and saves[0] < sends[0]
    response = next(m for m in transport.sent if isinstance(m, RequestVoteResponse))
    assert response.granted and response.term == 5


def test_stop_fails_pending_requests():
    """Stopping the node answers every waiting write and read instead of leaving them."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    write = outcome(node.propose(kv.encode_command(kv.Put("k", "v", None)), timeout=5))
    read = outcome(node.read(kv.Get("k"), linearizable=True, timeout=5))
    run(clock, 0.1)
    assert write == [] and read == []
    node.stop()
    assert len(write) == 1 and write[0].check(CommitTimeout)  # it may have committed
    assert len(read) == 1 and read[0].check(Unavailable)


def test_leader_sends_new_entries_while_its_own_write_is_in_flight():
    """With the disk busy, proposals still go out to followers (replication overlaps fsync)."""
    pending: list[Deferred[None]] = []

    def slow_disk(fn: Any) -> Deferred[Any]:
        fn()
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    node, clock2, transport, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock2)
    last = node.core.log.last_index()
    for peer in ("2", "3"):  # followers confirm the no-op: replication is pipelined now
        node.receive(AppendEntriesResponse(NodeId(peer), NodeId("1"), node.core.term, True, last))
    run(clock2, 0.02)
    node.writer.run_blocking = slow_disk
    node.settings.inline_persist_seconds = 0  # every write on the disk thread
    node.propose(b"first", timeout=5)
    run(clock2, 0.02)
    assert pending, "the first batch is being written"
    before = len([m for m in transport.sent if type(m).__name__ == "AppendEntries"])
    node.propose(b"second", timeout=5)
    run(clock2, 0.02)
    appends = [m for m in transport.sent if type(m).__name__ == "AppendEntries"][before:]
    assert any(e.data == b"second" for m in appends for e in m.entries)
    assert len(pending) == 1, "the second batch waits for the first write to finish"


class DiskThreadRecorder:
    """A stand-in disk thread: counts the jobs handed to it, finishes them on demand."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Deferred[Any]]] = []

    def __call__(self, fn: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((fn, d))
        return d

    def finish_all(self) -> None:
        while self.jobs:
            fn, d = self.jobs.pop(0)
            d.callback(fn())


class StepTimer:
    """A write timer whose readings advance by ``step`` seconds per reading pair."""

    def __init__(self) -> None:
        self.now = 0.0
        self.write_seconds = 0.0001
        self._start = True

    def __call__(self) -> float:
        if not self._start:
            self.now += self.write_seconds
        self._start = not self._start
        return self.now


def make_follower_on_a_disk_thread():
    node, clock, transport, _events = make_node(["1", "2", "3"])
    disk = DiskThreadRecorder()
    node.writer.run_blocking = disk
    timer = StepTimer()
    node.writer.timer = timer
    return node, clock, transport, disk, timer


def append_from_leader(node: RaftNode, index: int, data: bytes = b"x") -> None:
    """Deliver entry ``index`` (term 2) from leader 2; the bootstrap entries 1-3 are term 1."""
    entry = Entry(index, 2, data=data)
    prev_term = 2 if index > 4 else 1
    node.receive(AppendEntries(NodeId("2"), NodeId("1"), 2, index - 1, prev_term, (entry,), 0))


def answers(transport: RecordingTransport) -> list[AppendEntriesResponse]:
    return [m for m in transport.sent if isinstance(m, AppendEntriesResponse)]


def test_follower_writes_small_batches_inline_and_answers_after_the_write():
    """A follower with a fast disk writes on the reactor thread: no disk-thread job, same order."""
    node, clock, transport, disk, _ = make_follower_on_a_disk_thread()
    first = node.core.log.last_index() + 1
    append_from_leader(node, first)
    run(clock, 0.02)
    assert disk.jobs == []
    assert node.log_store.last_index() == first
    got = answers(transport)
    assert len(got) == 1 and got[0].success and got[0].match_index == first
    assert node.stats["persists"] == 1


def test_a_slow_write_sends_the_next_writes_to_the_disk_thread_until_writes_are_fast_again():
    """One write over the budget moves later writes off the reactor; fast ones bring them back."""
    node, clock, transport, disk, timer = make_follower_on_a_disk_thread()
    index = node.core.log.last_index() + 1
    timer.write_seconds = 0.05  # a 50 ms fsync, done inline before anybody knew
    append_from_leader(node, index)
    run(clock, 0.02)
    assert disk.jobs == [] and len(answers(transport)) == 1
    timer.write_seconds = 0.0001
    on_thread = 0
    for _ in range(30):
        index += 1
        append_from_leader(node, index)
        run(clock, 0.02)
        if disk.jobs:
            on_thread += 1
            assert len(answers(transport)) == index - 4  # not answered before the write
            disk.finish_all()
            run(clock, 0.02)
        assert len(answers(transport)) == index - 3
    # 0.05 * 0.75**k falls under 2 ms after 12 writes; then they are inline again
    assert on_thread == 12
    assert node.log_store.last_index() == index


def test_follower_writes_on_the_disk_thread_while_another_disk_job_runs():
    """The stores have one writer at a time: no inline write beside a running disk job."""
    node, clock, transport, disk, _ = make_follower_on_a_disk_thread()
    busy: Deferred[Any] = node.on_disk(lambda: None)  # e.g. a snapshot being written
    index = node.core.log.last_index() + 1
    append_from_leader(node, index)
    run(clock, 0.02)
    assert len(disk.jobs) == 2 and answers(transport) == []
    disk.finish_all()
    run(clock, 0.02)
    assert busy.called and len(answers(transport)) == 1


def test_big_follower_batches_go_to_the_disk_thread():
    """A batch over INLINE_PERSIST_BYTES is written on the disk thread."""
    node, clock, transport, disk, _ = make_follower_on_a_disk_thread()
    index = node.core.log.last_index() + 1
    append_from_leader(node, index, b"v" * (INLINE_PERSIST_BYTES + 1))
    run(clock, 0.02)
    assert len(disk.jobs) == 1 and answers(transport) == []
    disk.finish_all()
    run(clock, 0.02)
    assert len(answers(transport)) == 1


def test_leader_writes_one_entry_inline_and_batches_on_the_disk_thread():
    """A leader's lone entry is written inline; a batch of several goes to the disk thread."""
    node, clock, _transport, _events = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    disk = DiskThreadRecorder()
    node.writer.run_blocking = disk
    node.writer.timer = StepTimer()
    last = node.core.log.last_index()
    node.propose(b"alone", timeout=5)
    run(clock, 0.02)
    assert disk.jobs == [] and node.log_store.last_index() == last + 1
    node.propose(b"one", timeout=5)
    node.propose(b"two", timeout=5)
    run(clock, 0.02)
    assert len(disk.jobs) == 1 and node.log_store.last_index() == last + 1
    disk.finish_all()
    assert node.log_store.last_index() == last + 3


def test_a_failed_inline_write_stops_the_node():
    """An inline write that raises stops the node, as a failed disk-thread write does."""
    node, clock, transport, _disk, _ = make_follower_on_a_disk_thread()

    def broken(entries: Any) -> None:
        raise OSError("disk on fire")

    node.log_store.append = broken
    append_from_leader(node, node.core.log.last_index() + 1)
    run(clock, 0.02)
    assert node.stopped and answers(transport) == []


def test_committed_entries_are_applied_while_the_next_batch_is_on_the_disk():
    """A leader whose disk is busy with new entries answers the writes a quorum already
    holds at once, not one write later: committed entries are durable on a majority."""
    node, clock, _transport, _events = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    for _ in range(5):  # followers confirm the term's first entries (the leader adds some)
        last = node.core.log.last_index()
        for peer in ("2", "3"):
            node.receive(
                AppendEntriesResponse(NodeId(peer), NodeId("1"), node.core.term, True, last)
            )
        run(clock, 0.02)
        if node.core.log.last_index() == last:
            break
    disk = DiskThreadRecorder()
    node.writer.run_blocking = disk
    node.settings.inline_persist_seconds = 0  # every write on the disk thread
    first = outcome(node.propose(kv.encode_command(kv.Put("a", "1")), timeout=5))
    run(clock, 0.02)
    assert len(disk.jobs) == 1  # "a" is being written
    for peer in ("2", "3"):  # both followers hold "a": committed without the leader's write
        node.receive(
            AppendEntriesResponse(NodeId(peer), NodeId("1"), node.core.term, True, last + 1)
        )
    second = outcome(node.propose(kv.encode_command(kv.Put("b", "2")), timeout=5))
    disk.finish_all()  # "a" is on the leader's disk too; "b" goes to the disk thread next
    run(clock, 0.02)
    assert len(disk.jobs) == 1 and node.log_store.last_index() == last + 1  # "b" not yet
    assert first == [None] and second == []
    assert node.local_state_machine().query(kv.Get("a")) == "1"
    disk.finish_all()
    run(clock, 0.02)
    assert node.log_store.last_index() == last + 2 and second == []  # "b" awaits a quorum


def test_a_follower_applies_an_entry_committed_in_its_own_batch_only_after_writing_it():
    """A follower may learn an entry and that it is committed in one AppendEntries: it
    applies it only once the entry is on its own disk (no early apply of an entry this
    node does not hold durably), so its state never runs ahead of its log."""
    node, clock, _transport, disk, _ = make_follower_on_a_disk_thread()
    node.settings.inline_persist_seconds = 0  # every write on the disk thread
    index = node.core.log.last_index() + 1
    entry = Entry(index, 2, data=kv.encode_command(kv.Put("k", "v")))
    prev_term = node.core.log.last_term()
    node.receive(AppendEntries(NodeId("2"), NodeId("1"), 2, index - 1, prev_term, (entry,), index))
    run(clock, 0.02)
    assert len(disk.jobs) == 1
    assert node.local_state_machine().query(kv.Get("k")) is None  # not yet on this disk
    disk.finish_all()
    run(clock, 0.02)
    assert node.local_state_machine().query(kv.Get("k")) == "v"


# ------------------------------------------ a read's messages handled in the same reactor turn


class ReadingTransport(RecordingTransport):
    """A recording transport that, like the peer transport, says when a read ends."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(events)
        self.after_read: Any = None

    def set_after_read(self, after_read: Any) -> None:
        self.after_read = after_read

    def read(self, *messages: Any) -> None:
        """Deliver ``messages`` as one read: each to the receiver, then the end of the read."""
        for m in messages:
            self.receiver(m)
        self.after_read()


def follower_on(transport_type: Callable[[list[Any]], ReadingTransport]):
    """A follower of 3 voters built on a transport that reports the end of reads (as the
    node is built on the peer transport), a moment after it started."""
    node, clock, transport, _events = make_node(["1", "2", "3"], transport_type=transport_type)
    run(clock, 0.02)
    return node, clock, transport


def test_the_node_registers_for_the_end_of_each_read():
    """A node built on a transport that reports the end of reads asks to be told."""
    node, _clock, transport, _events = make_node(["1", "2", "3"], transport_type=ReadingTransport)
    assert transport.after_read == node.process_received


def test_a_follower_answers_an_append_in_the_reactor_turn_of_its_read():
    """The answer to an append leaves at the end of the read, not a reactor turn later."""
    node, clock, transport = follower_on(ReadingTransport)
    first = node.core.log.last_index() + 1
    entry = Entry(first, 2, data=b"x")
    transport.read(AppendEntries(NodeId("2"), NodeId("1"), 2, first - 1, 1, (entry,), 0))
    # no clock.advance: the same reactor turn
    got = answers(transport)
    assert len(got) == 1 and got[0].success and got[0].match_index == first
    assert node.log_store.last_index() == first
    readies = node.stats["readies"]
    clock.advance(0)  # the turn that was scheduled does nothing more
    assert node.stats["readies"] == readies


def test_the_messages_of_one_read_are_one_batch():
    """Two appends in one read make one write and one Ready, as they did a turn later."""
    node, _clock, transport = follower_on(ReadingTransport)
    first = node.core.log.last_index() + 1
    persists, readies = node.stats["persists"], node.stats["readies"]
    a = Entry(first, 2, data=b"a")
    b = Entry(first + 1, 2, data=b"b")
    transport.read(
        AppendEntries(NodeId("2"), NodeId("1"), 2, first - 1, 1, (a,), 0),
        AppendEntries(NodeId("2"), NodeId("1"), 2, first, 2, (b,), 0),
    )
    assert node.stats["persists"] == persists + 1
    assert node.stats["readies"] == readies + 1
    assert node.log_store.last_index() == first + 1
    assert answers(transport)[-1].match_index == first + 1


# ------------------------------------------- no timer made and cancelled per message or per Ready


class HoldingTransport(ReadingTransport):
    """A reading transport that, like the peer transport, lets a read hold the node's work."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(events)
        self.reading = False

    def defer_to_end_of_read(self) -> bool:
        return self.reading

    def read(self, *messages: Any) -> None:
        self.reading = True
        try:
            for m in messages:
                self.receiver(m)
        finally:
            self.reading = False
        self.after_read()


def process_calls(clock: task.Clock) -> list[Any]:
    """Return the node's pending calls of ``_process`` on ``clock``."""
    return [c for c in clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "_process"]


def counting(clock: task.Clock) -> list[Any]:
    """Record every call ``clock.callLater`` makes from now on (cancelled ones stay listed)."""
    made: list[Any] = []
    call_later = clock.callLater

    def recording(delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        call = call_later(delay, f, *args, **kw)
        made.append(call)
        return call

    clock.callLater = recording  # type: ignore[method-assign]
    return made


def test_a_read_that_holds_the_node_makes_no_timer_for_its_messages():
    """Messages of one read are handled at its end without a callLater(0) to cancel."""
    node, clock, transport = follower_on(HoldingTransport)
    first = node.core.log.last_index() + 1
    made = counting(clock)
    transport.read(
        AppendEntries(NodeId("2"), NodeId("1"), 2, first - 1, 1, (Entry(first, 2, data=b"x"),), 0)
    )
    got = answers(transport)
    assert len(got) == 1 and got[0].success and got[0].match_index == first
    assert [c for c in made if c.func == node._process] == []
    assert not any(c.cancelled for c in made)


def test_a_ready_that_leaves_nothing_to_do_schedules_no_turn():
    """After a Ready that leaves the core idle, no call of ``_process`` is pending."""
    node, clock, transport = follower_on(ReadingTransport)
    first = node.core.log.last_index() + 1
    transport.read(
        AppendEntries(NodeId("2"), NodeId("1"), 2, first - 1, 1, (Entry(first, 2, data=b"x"),), 0)
    )
    assert len(answers(transport)) == 1
    assert not node.core.has_ready()
    assert process_calls(clock) == []


def test_a_read_during_a_ready_still_gets_its_turn():
    """Messages read while the node handles a Ready (never in production) are not lost."""
    node, clock, transport = follower_on(HoldingTransport)
    first = node.core.log.last_index() + 1
    message = AppendEntries(
        NodeId("2"), NodeId("1"), 2, first - 1, 1, (Entry(first, 2, data=b"x"),), 0
    )
    node._processing = True  # as if inside _process
    transport.read(message)
    node._processing = False
    assert answers(transport) == []
    assert len(process_calls(clock)) == 1
    clock.advance(0)
    assert answers(transport)[-1].match_index == first
