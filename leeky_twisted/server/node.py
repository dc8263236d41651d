"""RaftNode: drives one RaftCore on a Twisted reactor.

The node owns the core and is the only code that calls it. It ticks the core
with a LoopingCall, feeds it peer messages and client requests, and handles
each Ready in the order the design requires: send ``messages`` at once, make
entries and hard state durable on the disk thread, then send
``messages_after_persist``, apply committed entries to the state machine (and
answer the requests waiting on them), serve reads, and ``advance``. Only one
Ready is in flight at a time, so every request that arrives while the disk is
busy joins the next batch: that is group commit.

The loop is thin; each other job has a collaborator of its own module, given
or built when the node is:

- :mod:`~leeky_twisted.server.writes`: where and in what order a Ready is
  written (disk thread or inline; hard state before entries);
- :mod:`~leeky_twisted.server.pending`: requests waiting on the log, and
  their deadlines;
- :mod:`~leeky_twisted.server.applier` (local state machine) or
  :mod:`~leeky_twisted.server.executor_applier` (remote executor): what
  applies committed entries and answers queries;
- :mod:`~leeky_twisted.server.snapshots`: when to snapshot, and how;
- :mod:`~leeky_twisted.server.addresses`: the address book.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted import defaults
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    MAX_STORAGE_ID,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    NodeId,
    Ready,
    RequestVote,
    Role,
    SnapshotMeta,
)
from leeky_twisted.core.raft import (
    ConfigChangeInProgressError,
    InconsistentStateError,
    NotLeaderError,
    RaftCore,
    TransferInProgressError,
    bootstrap_entries,
)
from leeky_twisted.interfaces import (
    FollowerProgress,
    ILogStore,
    IPeerTransport,
    IRaftNode,
    ISnapshotStore,
    IStableStore,
    IStateMachine,
    NodeStatus,
    NodeView,
)
from leeky_twisted.protocol.errors import (
    LeekyError,
    NotLeader,
    Removed,
    Unavailable,
    removed_message,
)
from leeky_twisted.server.addresses import AddressBook
from leeky_twisted.server.admin import Admin, check_peer_address
from leeky_twisted.server.applier import Applier, LocalApplier
from leeky_twisted.server.pending import PendingRequests
from leeky_twisted.server.removal import Removal
from leeky_twisted.server.snapshots import Snapshots, decode_snapshot, encode_snapshot
from leeky_twisted.server.writes import INLINE_PERSIST_BYTES, DiskWriter
from leeky_twisted.transport.codec import PeerMessage
from leeky_twisted.transport.notices import RemovedNotice

__all__ = [
    "INLINE_PERSIST_BYTES",
    "NodeHooks",
    "NodeSettings",
    "RaftNode",
    "UnrecoverableStateError",
    "check_peer_address",
    "decode_snapshot",
    "encode_snapshot",
    "new_storage_id",
]

log = Logger()


@dataclass
class NodeSettings:
    """Timing and limits of a node (seconds and counts)."""

    tick_interval: float = defaults.TICK_SECONDS
    #: take a snapshot after this many applied entries
    snapshot_entries: int = defaults.SNAPSHOT_ENTRIES
    #: also take one once the entries applied since the last snapshot hold this
    #: many bytes of data (large values must not grow the log to gigabytes)
    snapshot_bytes: int = defaults.SNAPSHOT_BYTES
    #: entries kept behind a snapshot for slow followers
    snapshot_trailing: int = defaults.SNAPSHOT_TRAILING
    addresses: dict[str, dict[str, str]] = field(default_factory=dict)
    unsafe_stale_reads: bool = False  #: testing only: skip ReadIndex (not linearizable)
    request_timeout: float = defaults.REQUEST_TIMEOUT
    #: write small batches on the reactor thread while recent writes took less
    #: than this many seconds (0: every write goes to the disk thread)
    inline_persist_seconds: float = defaults.INLINE_WRITE_BUDGET
    #: a remote executor that has kept the feed waiting this many seconds is down:
    #: its node, if leader, refuses new requests and hands leadership on
    executor_down_after: float = 3.0
    #: seconds after a commit before the leader tells idle followers the new
    #: commit index (their reads and watches wait for it); an append sent
    #: meanwhile tells them for free, so a steady load sends no extra message
    commit_notice_seconds: float = defaults.COMMIT_NOTICE_SECONDS
    #: the voters (id, address context) a brand-new cluster starts with, written
    #: as its first log entries when the storage is empty; empty for a joiner
    bootstrap: list[tuple[str, bytes]] = field(default_factory=list)


class UnrecoverableStateError(Exception):
    """The node's durable state is impossible; it must not run on it.

    The message names the cause and the recovery: move the data folder away
    and start the node again, empty. A node whose storage starts empty never
    votes until it has caught up with a leader (see docs/core.md), so it comes
    back safely as the same member.
    """

    def __init__(self, node_id: str, cause: str) -> None:
        super().__init__(
            f"node {node_id} refuses to run on its data: {cause}. To recover, move the "
            "data folder away and start the node again with the same options: it starts "
            "empty, does not vote until it has caught up with the leader, and is brought "
            "back by the cluster."
        )


@dataclass(frozen=True)
class NodeHooks:
    """Observers of a node's work, given at construction; each may be None."""

    #: sees each Ready before it is handled (the simulation's checks)
    on_ready: Callable[[Ready], None] | None = None
    #: ``(seconds, entries)`` of each write; called on the disk thread
    on_persist: Callable[[float, int], None] | None = None
    #: ``(peer, seconds)`` of each heartbeat round trip (leader only)
    on_peer_rtt: Callable[[str, float], None] | None = None
    #: asked when a write fails: why the storage is gone (e.g. its folder was
    #: deleted), or None; its answer is the reason the node gives for stopping
    storage_check: Callable[[], str | None] | None = None
    #: told the reason once the node stopped itself (the process exits non-zero)
    on_fail_stop: Callable[[str], None] | None = None


def new_storage_id(now: float, rng: random.Random) -> int:
    """Return an identity for storage created at ``now`` (seconds since the epoch).

    Milliseconds in the high bits, so a data folder created later has a larger
    identity (a clock that went back is repaired by the leader: see
    ``RaftCore``); 16 random bits below, so two created in one millisecond differ.
    """
    ms = max(0, int(now * 1000))
    return min(((ms << 16) | rng.getrandbits(16)) or 1, MAX_STORAGE_ID)


@implementer(IRaftNode)
class RaftNode:
    """One Raft replica running on a reactor."""

    def __init__(
        self,
        reactor: Any,
        core_config: CoreConfig,
        log_store: ILogStore,
        stable_store: IStableStore,
        snapshot_store: ISnapshotStore,
        transport: IPeerTransport,
        state_machine: IStateMachine,
        settings: NodeSettings | None = None,
        rng: random.Random | None = None,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
        executor: Any = None,
        monotonic: Callable[[], float] | None = None,
        *,
        applier: Applier | None = None,
        addresses: AddressBook | None = None,
        hooks: NodeHooks | None = None,
        membership: Any = None,
        timer: Callable[[], float] | None = None,
        last_heard: Callable[[NodeId], float | None] | None = None,
    ) -> None:
        """Build a node on its durable state; it starts with :meth:`start`.

        The applier is chosen here, once: ``applier`` when given, else an
        :class:`~leeky_twisted.server.executor_applier.ExecutorApplier` for
        ``executor`` (an IAsyncStateMachine, a remote process), else a
        :class:`~leeky_twisted.server.applier.LocalApplier` of ``state_machine``.
        ``addresses`` is the address book (default: one made of
        ``settings.addresses``); ``membership`` the IMembership (gossip) the
        node reports in ``members()``; ``hooks`` observe its work; ``timer``
        times each write; ``last_heard(id)`` is the reactor time this node last
        heard that peer over Raft (None: never), for ``members()``.
        ``monotonic`` is the clock ticks are counted on (default
        ``time.monotonic``): a stalled reactor still ticks once per interval
        that passed.

        Raises UnrecoverableStateError when the durable state is impossible.
        """
        self.reactor = reactor
        self.executor = executor
        self.node_id = core_config.node_id
        self.settings = settings or NodeSettings()
        self.log_store = log_store
        self.stable_store = stable_store
        self.snapshot_store = snapshot_store
        self.transport = transport
        self.state_machine = state_machine
        self.membership = membership
        self.last_heard = last_heard
        self.hooks = hooks or NodeHooks()
        self.addresses = (
            addresses
            if addresses is not None
            else AddressBook(self.node_id, self.settings.addresses)
        )
        if applier is None:
            applier = _applier_for(state_machine, executor)
        self.applier = applier
        self.pending = PendingRequests()
        self.monotonic = monotonic or time.monotonic
        self._last_tick_at = 0.0
        self._tick_carry = 0.0
        self._deferred_last = False  #: the last catch-up deferred elections and checks
        #: the index the state machine (or the executor's base) reflects
        self.applied_index = 0
        self.failure: str | None = None  #: why the node stopped itself, if it did
        applier.attach(self)
        self.core = self._recover(core_config, rng)
        self.snapshots = Snapshots(
            reactor,
            self.settings,
            self.core,
            log_store,
            snapshot_store,
            self.addresses,
            applier,
            self.on_disk,
            lambda: self.stopped,
            lambda: self.applied_index,
        )
        self.admin = Admin(
            self.node_id,
            self.core,
            self.settings,
            reactor,
            self.addresses,
            self.propose_config_change,
            self.transfer_leadership,
            membership,
            last_heard,
        )
        self._scheduled = False
        self._scheduled_call: Any = None  #: the pending call of _process, if any
        self._processing = False  #: inside _process (process_received waits its turn)
        self._commit_notice: Any = None  #: the pending call of _notify_commit
        #: the index of the applied configuration change that removed this node, if any
        self.removed_at: int | None = None
        #: removal notices: answering removed nodes, and being told (``server/removal.py``)
        self.removal = Removal(self.node_id, self.core, self.addresses, self.transport.send)
        #: what every client request gets while this node is removed (see :meth:`removed`)
        self._removed: Removed | None = None
        self._removed_index = 0  #: the removal that ``_removed`` names
        #: told each removal this node learns of (see :meth:`on_removed`)
        self._removal_observers: list[Callable[[Exception], None]] = []
        self._inflight = False
        self._ticker: task.LoopingCall | None = None
        self.stats = {
            "readies": 0,
            "persists": 0,
            "entries_persisted": 0,
            "applied": 0,
            "persist_seconds": 0.0,
            "messages_sent": 0,
            "commit_notices": 0,
            "follower_reads": 0,  #: linearizable reads taken on while following (index asked)
            "leader_gone": 0,  #: times told the leader's process was gone, and campaigning soon
        }
        self.writer = DiskWriter(
            log_store,
            stable_store,
            snapshot_store,
            HardState(
                self.core.term,
                self.core.voted_for,
                0,
                self._loaded_abstaining,
                self.core.storage_id,
            ),
            self.stats,
            self.settings,
            run_blocking,
            timer,
            self.hooks.on_persist,
        )
        self.leader_changes = 0
        self.elections = 0
        self._last_leader: NodeId | None = None
        self.stopped = False
        self._heartbeats_out: dict[tuple[str, int], float] = {}
        transport.set_receiver(self.receive)
        #: True while the transport delivers a read whose end calls process_received
        self._held_by_read: Callable[[], bool] | None = None
        set_after_read = getattr(transport, "set_after_read", None)
        if set_after_read is not None:
            set_after_read(self.process_received)
            self._held_by_read = getattr(transport, "defer_to_end_of_read", None)
        set_peer_gone = getattr(transport, "set_peer_gone", None)
        if set_peer_gone is not None:  # a dead leader is replaced without a full timeout
            set_peer_gone(self.peer_gone)
        #: sends a whole batch and writes it at once (else: ``send`` each, then ``flush``)
        self._send_batch: Callable[[Sequence[Message]], None] | None = getattr(
            transport, "send_batch", None
        )

    # ------------------------------------------------------------ lifecycle

    def _recover(self, cfg: CoreConfig, rng: random.Random | None) -> RaftCore:
        hs = self.stable_store.load()
        assert isinstance(hs, HardState)
        meta = self.snapshot_store.latest()
        # No term was ever saved: the storage is new (a log without one can
        # only be a bootstrap cut short by a crash, which starts over).
        fresh = meta is None and (hs.term, hs.voted_for, hs.commit) == (0, None, 0)
        storage_id = hs.storage_id
        if not storage_id:
            # Given a seeded rng (a simulation), stay deterministic without
            # drawing from the stream the core's timeouts use.
            now = self.reactor.seconds()
            source = random.Random(f"{self.node_id}@{now!r}") if rng else random.SystemRandom()
            storage_id = new_storage_id(now, source)
        if fresh and self.settings.bootstrap:
            voters = [(NodeId(nid), ctx) for nid, ctx in self.settings.bootstrap]
            boot = bootstrap_entries(voters)
            self.log_store.append(boot)
            hs = HardState(1, None, len(boot), True, storage_id)
            self.stable_store.save(hs)
            log.info("bootstrapped a new cluster of {n} voters", n=len(boot))
        elif hs.storage_id != storage_id:
            hs = replace(hs, abstaining=hs.abstaining or fresh, storage_id=storage_id)
            self.stable_store.save(hs)
        self._loaded_abstaining = hs.abstaining
        if fresh:
            log.warn(
                "storage started empty: this node abstains until it has caught up "
                "with a leader (its votes and acknowledgements need one more)"
            )
        if meta is not None:
            assert isinstance(meta, SnapshotMeta)
            addresses, state = decode_snapshot(self.snapshot_store.open(meta.index))
            self.addresses.restore(addresses)
            self.applier.restore_base(meta.index, state)
            self.applied_index = meta.index
        first, last = self.log_store.first_index(), self.log_store.last_index()
        start = meta.index if meta is not None else 0
        entries: list[Entry] = []
        if first > start + 1:
            # Entries up to first - 1 were compacted into a snapshot we cannot
            # read (also when the log is empty): running on would forget them.
            raise UnrecoverableStateError(
                self.node_id,
                f"the log starts at {first} but the newest readable snapshot ends at "
                f"{start} (a snapshot is missing or corrupt)",
            )
        if last >= start + 1:
            entries = self.log_store.entries(start + 1, last + 1)
        elif meta is not None and last < start:
            # A snapshot was received and stored, and the node stopped before
            # the log was cut to begin after it: do that now, or the next
            # entry (start + 1) would leave a gap in the log store.
            self.log_store.reset(start + 1)
        log.info(
            "recovered term={term} commit={commit} snapshot={snap} entries={n}",
            term=hs.term,
            commit=hs.commit,
            snap=start,
            n=len(entries),
        )
        try:
            return RaftCore(
                cfg,
                rng or random.Random(),
                hs,
                meta,
                entries,
                logger=self._core_log,
                fresh=fresh,
                sole_founder=[nid for nid, _ in self.settings.bootstrap] == [self.node_id],
            )
        except InconsistentStateError as e:
            raise UnrecoverableStateError(self.node_id, str(e)) from None

    def _core_log(self, line: str) -> None:
        log.debug("{line}", line=line)

    def start(self) -> None:
        """Start ticking."""
        self._last_tick_at = self.monotonic()
        self._ticker = task.LoopingCall(self.tick)
        self._ticker.clock = self.reactor
        self._ticker.start(self.settings.tick_interval, now=False)
        self.applier.start()
        self._schedule()

    def stop(self) -> Deferred[None]:
        """Stop ticking and fail every waiting request; persist the commit index.

        A node that stopped itself (:meth:`fail_stop`) writes nothing more:
        its storage is in doubt.
        """
        if self.failure is not None:
            self.stopped = True
            return self.applier.stop()
        self.stopped = True
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._cancel_commit_notice()
        self.pending.fail_all("node is shutting down")
        # Save only a commit index the durable log backs: entries past
        # log.stable may still be in flight to the disk (or never get there).
        # The disk thread runs jobs in order, so this lands after any write in flight.
        core = self.core
        term, voted_for, storage_id = core.term, core.voted_for, core.storage_id
        commit, abstaining = min(core.commit, core.log.stable), core.abstaining

        writer = self.writer

        def save() -> None:
            # Run after the writes in flight: their result decides abstention.
            synced = writer.synced
            self.stable_store.save(
                HardState(
                    term,
                    voted_for,
                    commit,
                    abstaining or synced.abstaining,
                    storage_id,
                    synced.caught_up if synced.abstaining else 0,
                )
            )

        d = self.on_disk(save)
        applier_stopped = self.applier.stop()
        d.addCallback(lambda _: applier_stopped)
        return d

    def tick(self) -> None:
        """Tick the core once per interval that passed; time out overdue requests.

        A reactor that stalled for several intervals ticks the core once for
        each (up to one election timeout, which expires any lease), so leases
        and election timers follow real time instead of counting one tick for
        the whole stall.
        """
        self._catch_up(at_least=1)
        self.pending.expire(self.reactor.seconds())
        self.applier.tick()
        self._schedule()

    def _catch_up(self, at_least: int = 0) -> None:
        """Tick the core for every whole interval that passed since the last tick."""
        now = self.monotonic()
        owed = (now - self._last_tick_at) / self.settings.tick_interval + self._tick_carry
        ticks = max(at_least, int(owed))
        if ticks == 0:
            return
        self._last_tick_at = now
        self._tick_carry = min(max(owed - ticks, 0.0), 1.0)
        # One election timeout of ticks expires any lease; more would let a
        # leader run two quorum checks with no message read in between, and
        # step down although its followers never stopped answering. Ticks owed
        # from a stall run before the reactor reads what arrived meanwhile, so
        # they may not start an election or a quorum check: the next regular
        # tick does, after those messages (a stalled leader is not deposed by
        # answers it has not read yet).
        # Only one catch-up in a row defers: a reactor that is late at every
        # tick (overloaded) still campaigns and checks its quorum.
        core = self.core
        missed = ticks > 1 and not self._deferred_last
        self._deferred_last = missed
        if self.removal.silenced():
            return  # told it was removed: its election timer stops (server/removal.py)
        for _ in range(min(ticks, core.cfg.election_ticks)):
            core.tick(missed)

    # --------------------------------------------------------------- inputs

    def _note_heartbeats(self, messages: Sequence[Message]) -> None:
        now = self.reactor.seconds()
        out = self._heartbeats_out
        for m in messages:
            if isinstance(m, Heartbeat):
                out[(m.recipient, m.read_round)] = now
        if len(out) > 4096:  # answers that never came (a peer is down)
            for key in sorted(out, key=out.__getitem__)[:2048]:
                del out[key]

    def receive(self, message: PeerMessage) -> None:
        """Feed a peer's message to the core (a removal notice goes to ``self.removal``)."""
        if self.stopped:
            return
        if type(message) is RequestVote and self.removal.answer(message):
            return
        if isinstance(message, RemovedNotice):
            self.removal.hear(message)
            self._note_removed()
            self._schedule()
            return
        on_peer_rtt = self.hooks.on_peer_rtt
        if on_peer_rtt is not None and isinstance(message, HeartbeatResponse):
            sent = self._heartbeats_out.pop((message.sender, message.read_round), None)
            if sent is not None:
                on_peer_rtt(message.sender, self.reactor.seconds() - sent)
        try:
            self.core.step(message)
        except Exception as e:
            self._fail_stop(f"message {message!r} broke the core: {e}")
            return
        self._schedule()

    def peer_gone(self, peer: NodeId) -> None:
        """The transport saw the process of ``peer`` go: its connections closed
        and a dial was refused. A follower of that leader campaigns once it has
        heard nothing from it for a heartbeat interval and a tick
        (``RaftCore.leader_gone``), instead of a whole election timeout."""
        if self.stopped or self._removed is not None:
            return
        if self.core.leader_gone(peer):
            self.stats["leader_gone"] += 1
            self._schedule()

    def _refusal(self) -> LeekyError | None:
        """Return the error for a new request this node cannot serve now, or None."""
        if self.failure is not None:
            return Unavailable(f"node {self.node_id} stopped itself: {self.failure}")
        if self._removed is not None:  # the hot path reads only this attribute
            return self.removed()
        return self.applier.refusal()

    def removed(self) -> Removed | None:
        """Return the error every client request gets since this node was removed, or None.

        Removed: it applied its own removal, or a member told it so (``server/removal.py``).
        A removed node knows no leader and never will: a request would only wait
        for one, so it is refused at once and the client tries another node.
        """
        if self._removed is not None:
            self._note_removed()  # it may have been added back since
        return self._removed

    def _note_removed(self) -> None:
        """Set or clear the error :meth:`removed` returns, from what this node knows now."""
        index = self.removed_at
        if index is None and self.removal.silenced():
            told = self.removal.told
            index = told.index if told is not None else None
        if index is None:
            self._removed = None
        elif self._removed is None or self._removed_index != index:
            self._removed = error = Removed(removed_message(self.node_id, index))
            self._removed_index = index
            for observer in list(self._removal_observers):
                try:
                    observer(error)
                except Exception:
                    log.failure("a removal observer failed")

    def on_removed(self, observer: Callable[[Exception], None]) -> None:
        """Call ``observer(error)`` each time this node learns it was removed.

        ``error`` is what :meth:`removed` returns from then on; the API ends the
        watches open on this node with it (they would wait in silence: a removed
        node's state no longer moves).
        """
        self._removal_observers.append(observer)

    def propose(self, command: bytes, timeout: float) -> Deferred[Any]:
        """Replicate ``command``; fire with the state machine's result once applied."""
        down = self._refusal()
        if down is not None:
            return defer.fail(down)
        try:
            index, term = self.core.propose(command)
        except NotLeaderError as e:
            return defer.fail(self._not_leader(e.leader))
        except TransferInProgressError as e:
            return defer.fail(Unavailable(str(e)))
        d = self.pending.wait_for(index, term, self.reactor.seconds() + timeout)
        self._schedule()
        return d

    def propose_config_change(self, change: ConfChange, timeout: float) -> Deferred[Any]:
        """Replicate a membership change; fire once it is applied.

        While another change is uncommitted (the leader binds seats by itself,
        docs/core.md) or the leader has not yet committed in its term, try
        again every tick until ``timeout``.
        """
        return self._propose_config_change(change, self.reactor.seconds() + timeout)

    def _propose_config_change(self, change: ConfChange, deadline: float) -> Deferred[Any]:
        down = self._refusal()
        if down is not None:
            return defer.fail(down)
        try:
            index, term = self.core.propose_config_change(change)
        except NotLeaderError as e:
            return defer.fail(self._not_leader(e.leader))
        except ConfigChangeInProgressError as e:
            wait = self.settings.tick_interval
            if self.stopped or self.reactor.seconds() + wait >= deadline:
                return defer.fail(Unavailable(str(e)))
            retried: Deferred[Any] = Deferred()

            def again() -> None:
                self._propose_config_change(change, deadline).chainDeferred(retried)

            self.reactor.callLater(wait, again)
            return retried
        except TransferInProgressError as e:
            return defer.fail(Unavailable(str(e)))
        except ValueError as e:
            return defer.fail(e)
        d = self.pending.wait_for(index, term, deadline)
        self._schedule()
        return d

    def read(self, request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        """Answer a query; with ``linearizable``, only after a ReadIndex round."""
        down = self._refusal()
        if down is not None:
            return defer.fail(down)
        if not linearizable or self.settings.unsafe_stale_reads:
            return self.applier.query(request)
        # A lease is judged on the ticks of real time: count any the reactor missed.
        self._catch_up()
        ctx = self.pending.next_read_id()
        core = self.core
        try:
            core.read_index(ctx)
        except NotLeaderError as e:
            return defer.fail(self._not_leader(e.leader))
        if core.role is not Role.LEADER:
            self.stats["follower_reads"] += 1  # its leader gives the read index
        d = self.pending.add_read(ctx, request, self.reactor.seconds() + timeout)
        self._schedule()
        return d

    def want_eager_commits(self, wanted: bool) -> None:
        """Say whether consumers on this node (watches) wait for each commit.

        While wanted, this node's answers to its leader ask for each new commit
        index at once (an empty append in the batch where the index grows),
        instead of ``commit_notice_seconds`` later or with the next append.
        """
        self.core.eager_commits = wanted

    def transfer_leadership(self, target: NodeId) -> None:
        """Ask the core to hand leadership to ``target``."""
        removed = self.removed()
        if removed is not None:
            raise removed
        try:
            self.core.transfer_leadership(target)
        except NotLeaderError as e:
            raise self._not_leader(e.leader) from None
        self._schedule()

    # ----------------------------------------------------------- ready loop

    def poke(self) -> None:
        """Handle whatever the core has to do (after a caller stepped it directly)."""
        self._schedule()

    def _schedule(self) -> None:
        """Handle the core's work on the next turn, or at the end of the read under way.

        During a read of peer messages no call is made: the transport's
        ``after_read`` (:meth:`process_received`) follows, in this turn.
        """
        if self._scheduled or self.stopped:
            return
        self._scheduled = True
        held = self._held_by_read
        if held is not None and held():
            return
        self._scheduled_call = self.reactor.callLater(0, self._process)

    def process_received(self) -> None:
        """Handle now, in this reactor turn, what the messages of one read asked for.

        The peer transport calls it once a read's messages are all delivered
        (its ``after_read``): they form one batch as before, but the
        follower's write and answer, or the leader's commit and reply, do not
        wait for another turn of the reactor (one ``epoll_wait`` and its timer
        run, on each side of a sequential put's round trip). Not re-entrant:
        the transport never reads while the node handles a Ready.
        """
        if not self._scheduled or self.stopped:
            return
        call = self._scheduled_call
        if self._processing:  # its turn comes next (never when the read held it)
            if call is None:
                self._scheduled_call = self.reactor.callLater(0, self._process)
            return
        if call is not None and call.active():
            call.cancel()
        self._process()

    def _process(self) -> None:
        self._processing = True
        try:
            self._process_ready()
        finally:
            self._processing = False

    def _process_ready(self) -> None:
        self._scheduled = False
        self._scheduled_call = None
        if self.stopped:
            return
        if self._inflight:
            # The disk is busy with the previous batch: still send what the
            # leader may send at once (new entries to followers), so
            # replication overlaps our own fsync.
            self._send_now(self.core.take_messages())
            return
        if not self.core.has_ready():
            return
        rd = self.core.ready()
        self._inflight = True
        hooks = self.hooks
        if hooks.on_ready is not None:
            hooks.on_ready(rd)
        stats = self.stats
        stats["readies"] += 1
        stats["messages_sent"] += len(rd.messages) + len(rd.messages_after_persist)
        self._send_now(rd.messages)
        if hooks.on_peer_rtt is not None:
            self._note_heartbeats(rd.messages)
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        writer = self.writer
        if not writer.needs_disk(rd):
            self._after_persist(rd)
        elif writer.inline(rd, self.core.role is Role.LEADER):
            try:
                writer.persist(rd)
            except Exception:
                self._persist_failed(Failure())
                return
            self._after_persist(rd)
        else:
            d = writer.on_disk(lambda: writer.persist(rd))
            # The committed entries are durable on a majority already (the leader
            # counts itself only once its own write is): apply them, and answer
            # their clients, while the disk writes this batch's new entries,
            # rather than one fsync later. A snapshot to install goes first.
            # Only entries already on this node's disk (older than this batch's:
            # a follower may learn an entry and its commit in one batch), and
            # only into the local state machine: an executor keeps what it
            # applied, so it must never be ahead of this node's durable log.
            committed = rd.committed_entries
            early = (
                rd.snapshot is None
                and bool(committed)
                and not self.stopped
                and self.executor is None
                and (not rd.entries or committed[-1].index < rd.entries[0].index)
            )
            if early:
                self._apply_committed(rd.committed_entries)
            d.addCallbacks(lambda _: self._after_persist(rd, early), self._persist_failed)

    def on_disk(self, job: Callable[[], Any]) -> Deferred[Any]:
        """Run ``job`` on the disk thread, after the writes before it."""
        return self.writer.on_disk(job)

    def _forget_peer(self, peer: NodeId) -> None:
        """A peer left the configuration: drop what is queued for it and stop dialling it.

        What this batch sent it is written already (``_send_now`` writes a Ready's
        messages before its entries are applied); what is still queued is stale, and
        would tell it, once reachable, that it still follows. A later send (a removal
        notice, or entries once it is added back) dials it again.
        """
        disconnect = getattr(self.transport, "disconnect", None)
        if disconnect is not None:
            disconnect(peer).addErrback(
                lambda f: log.failure("closing the link to removed peer {peer}", f, peer=peer)
            )

    def _send_now(self, messages: Sequence[Message]) -> None:
        """Hand ``messages`` to the transport and have them written in this turn."""
        if not messages:
            return
        send_batch = self._send_batch
        if send_batch is not None:
            send_batch(messages)
            return
        send = self.transport.send
        for m in messages:
            send(m)
        flush = getattr(self.transport, "flush", None)
        if flush is not None:
            flush()

    def _persist_failed(self, failure: Any) -> None:
        check = self.hooks.storage_check
        lost = check() if check is not None else None
        self._fail_stop(lost or f"persisting failed: {failure.getErrorMessage()}")

    def fail_stop(self, why: str) -> None:
        """Stop serving at once (no votes, acknowledgements or reads) and stop the reactor.

        Logs one critical line with ``why``; a second call does nothing.
        """
        self._fail_stop(why)

    def _fail_stop(self, why: str) -> None:
        """Stop at once, with one error naming the cause: safety over availability."""
        if self.failure is not None:
            return
        self.failure = why
        log.critical("node {id} stopped itself to protect safety: {why}", id=self.node_id, why=why)
        self.stopped = True
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._cancel_commit_notice()
        self.pending.fail_all("node stopped")
        on_fail_stop = self.hooks.on_fail_stop
        if on_fail_stop is not None:
            on_fail_stop(why)
        if hasattr(self.reactor, "stop") and getattr(self.reactor, "running", False):
            with contextlib.suppress(ReactorNotRunning):  # already shutting down
                self.reactor.stop()

    def _apply_committed(self, committed: Sequence[Entry]) -> None:
        """Apply committed entries in order and answer the requests waiting on them."""
        for e in committed:
            self._apply(e)
            self.applied_index = e.index
        self.stats["applied"] += len(committed)
        self.snapshots.note_applied(sum(len(e.data) for e in committed))
        self.applier.committed(committed)

    def _after_persist(self, rd: Ready, applied: bool = False) -> None:
        """Finish ``rd`` once it is durable (``applied``: its committed entries already are)."""
        if self.stopped:
            return
        self._send_now(rd.messages_after_persist)
        if rd.snapshot is not None:
            self._install_snapshot(rd.snapshot)
        if not applied:
            self._apply_committed(rd.committed_entries)
        applier = self.applier
        pending = self.pending
        for ctx in rd.dropped_reads:
            pending.fail_read(cast(int, ctx), self._not_leader(self.core.leader_id))
        for rs in rd.read_states:
            pending.read_ready(rs.index, cast(int, rs.context))
            applier.read_ready(rs.index)
        self.core.advance(rd)
        if rd.committed_entries and self._commit_notice is None and self.core.role is Role.LEADER:
            self._commit_notice = self.reactor.callLater(
                self.settings.commit_notice_seconds, self._notify_commit
            )
        self.serve_reads()
        self._inflight = False
        self.snapshots.maybe_snapshot()
        # Anything that stepped the core since this Ready was taken scheduled
        # its own turn; only what this Ready left over needs one (not a call
        # per Ready that finds nothing to do).
        if not self._scheduled and self.core.has_ready():
            self._schedule()

    def _notify_commit(self) -> None:
        """Tell followers that hold every entry the commit index they lack."""
        self._commit_notice = None
        if not self.stopped:
            self.stats["commit_notices"] += self.core.notify_commit()
            self._schedule()

    def _cancel_commit_notice(self) -> None:
        if self._commit_notice is not None and self._commit_notice.active():
            self._commit_notice.cancel()
        self._commit_notice = None

    def _on_soft_state(self, rd: Ready) -> None:
        soft = rd.soft_state
        assert soft is not None
        if soft.role is Role.CANDIDATE:
            self.elections += 1
        if soft.role is Role.LEADER and soft.leader != self._last_leader:
            self._announce()
        if soft.leader != self._last_leader:
            self.leader_changes += 1
            self._last_leader = soft.leader
            log.info(
                "leader is now {leader} (term {term}, I am {role})",
                leader=soft.leader,
                term=soft.term,
                role=soft.role.value,
            )

    # ---------------------------------------------------------------- apply

    def _apply(self, e: Entry) -> None:
        if e.kind is EntryKind.NORMAL:
            self.applier.apply(e)
            return
        if e.kind is EntryKind.CONFIG:
            self._apply_config(e)
        elif e.data:
            self.addresses.apply_announcement(e.data)
        self.pending.answer(e.index, e.term, None)

    def _announce(self) -> None:
        """Put this leader's addresses in the log so followers can forward to it."""
        data = self.addresses.announcement()
        if data is None:
            return  # nothing to tell (a node without client addresses, as in tests)
        try:
            self.core.propose(data, EntryKind.NOOP)
        except Exception:
            log.failure("could not announce addresses")

    def _apply_config(self, e: Entry) -> None:
        try:
            change = ConfChange.decode(e.data)
        except ValueError:
            return
        self.addresses.apply_config_context(change.node_id, change.context)
        if change.op is ConfChangeOp.BIND_STORAGE:
            storage = change.context.decode("ascii", "replace")
            log.info(
                "configuration change at {index}: the seat of {node} {what}",
                index=e.index,
                node=change.node_id,
                what=f"counts storage {storage}" if storage != "0" else "is vacant",
            )
            return
        log.info(
            "configuration change {op} {node} applied at {index}",
            op=change.op.name,
            node=change.node_id,
            index=e.index,
        )
        self.removal.applied(change, e.index)
        if change.node_id != self.node_id:
            if change.op is ConfChangeOp.REMOVE:
                self._forget_peer(change.node_id)
            return
        if change.op is ConfChangeOp.REMOVE:
            self.removed_at = e.index
            self._note_removed()
            log.warn(
                "this node ({node}) was removed from the cluster (configuration change at "
                "{index}): it no longer votes, replicates or serves; stop it, or add it back "
                "with `leekyraft add-server {node} PEER-ADDRESS`",
                node=self.node_id,
                index=e.index,
            )
        else:
            self.removed_at = None
            self._note_removed()

    def serve_reads(self) -> None:
        """Answer the safe reads the applied state now reaches."""
        pending = self.pending
        if pending.ready_reads:
            # The state machine's own index, not the core's: a snapshot received
            # but not yet restored moves the core's applied index ahead of the state.
            applier = self.applier
            pending.serve_reads(applier.readable_index(self.applied_index), applier.answer_into)

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        addresses, state = decode_snapshot(self.writer.take_installed())
        self.addresses.restore(addresses)
        self.applier.install(meta.index, state)
        self.applied_index = meta.index
        self.snapshots.installed()
        log.info("installed snapshot at {index}", index=meta.index)

    def snapshot_now(self, trailing: int | None = None) -> bool:
        """Start a snapshot of the state at the applied index; False if one can't start now.

        ``trailing`` entries (default: the settings') stay in the log behind it.
        """
        return self.snapshots.snapshot_now(trailing)

    # -------------------------------------------------------------- helpers

    def _not_leader(self, leader: NodeId | None) -> NotLeader:
        if leader is None:
            return NotLeader(None, None)
        return NotLeader(leader, self.addresses.get(leader, {}).get("client"))

    # ------------------------------------------------------------ membership

    def add_server(self, node_id: str, address: str | None, voter: bool) -> Deferred[Any]:
        """Add ``node_id`` as learner, or as voter; leader only (see :mod:`.admin`)."""
        return self.admin.add_server(node_id, address, voter)

    def remove_server(self, node_id: str) -> Deferred[Any]:
        """Remove ``node_id`` from the configuration; leader only."""
        return self.admin.remove_server(node_id)

    def transfer_leader(self, node_id: str) -> None:
        """Start handing leadership to ``node_id``; raise NotLeader or InvalidRequest."""
        self.admin.transfer_leader(node_id)

    def members(self) -> list[dict[str, Any]]:
        """Return every node this node knows of (see :meth:`.admin.Admin.members`)."""
        return self.admin.members()

    def view(self) -> NodeView:
        """Return the node's Raft state as an immutable value object."""
        core = self.core
        st = core.status()
        return NodeView(
            node_id=self.node_id,
            role=st.role,
            term=st.term,
            leader=st.leader,
            commit=st.commit,
            applied=st.applied,
            first_index=st.first_index,
            last_index=st.last_index,
            configuration=core.configuration,
            config_change_pending=core.log.config_index() > core.commit,
            progress=self.progress(),
        )

    def progress(self) -> dict[NodeId, FollowerProgress]:
        """Return the leader's view of each member (itself too); empty unless leading."""
        if self.core.role is not Role.LEADER:
            return {}
        return {
            nid: FollowerProgress(
                pr.match, pr.next, pr.state.value, len(pr.inflight), pr.max_inflight
            )
            for nid, pr in self.core.progress.items()
        }

    def local_state_machine(self) -> IStateMachine | None:
        """Return the in-process state machine, or None when an executor applies."""
        return self.applier.local_state_machine()

    def address_of(self, nid: NodeId) -> dict[str, str]:
        """Return what is known of a node's addresses (peer, client, http)."""
        return self.addresses.address_of(nid)

    def role_name(self) -> str:
        """Return the role as users see it: leader, follower, candidate, learner or removed."""
        core = self.core
        if self.removal.silenced():
            return "removed"  # as a member that applied the removal told it
        if self.node_id not in core.configuration.members():
            index = core.log.config_index()
            if (
                self.removed_at is not None
                or self.node_id in core.log.config_at(index - 1).members()
            ):
                return "removed"  # by the latest change in its log (committed or not)
        if core.role is Role.LEADER:
            return "leader"
        if core.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            return "candidate"
        if self.node_id in core.configuration.learners:
            return "learner"
        return "follower"

    def status(self) -> NodeStatus:
        """Return this node's status (``to_json()`` gives what ``leekyraft status`` shows)."""
        core = self.core
        st = core.status()
        book = self.addresses
        mine = book.get(self.node_id, {})
        leader_addr = book.get(st.leader, {}) if st.leader else {}
        return NodeStatus(
            node_id=self.node_id,
            address=mine.get("peer"),
            client_address=mine.get("client"),
            http_address=mine.get("http"),
            role=self.role_name(),
            term=st.term,
            leader=st.leader,
            leader_address=leader_addr.get("client"),
            commit_index=st.commit,
            applied_index=st.applied,
            first_index=st.first_index,
            last_index=st.last_index,
            log_entries=st.last_index - st.first_index + 1,
            snapshot_index=core.snapshot_meta.index if core.snapshot_meta else 0,
            voters=tuple(sorted(st.voters)),
            learners=tuple(sorted(st.learners)),
            storage_id=core.storage_id,
            abstaining=core.abstaining,
            seats=dict(core.configuration.storage),
            leader_changes=self.leader_changes,
            elections=self.elections,
            pending_requests=len(self.pending.waiters),
            pending_reads=len(self.pending.reads),
            stats=dict(self.stats),
            executor=self.applier.status(),
        )


def _applier_for(state_machine: IStateMachine, executor: Any) -> Applier:
    """Return the applier of a node: the remote ``executor`` when given, else the state machine."""
    if executor is None:
        return LocalApplier(state_machine)
    from leeky_twisted.server.executor_applier import ExecutorApplier

    return ExecutorApplier(executor)
