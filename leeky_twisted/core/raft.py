"""RaftCore: the Raft algorithm as a pure, deterministic object.

Inputs: :meth:`RaftCore.tick`, :meth:`RaftCore.step`, :meth:`RaftCore.propose`,
:meth:`RaftCore.read_index`, :meth:`RaftCore.propose_config_change`,
:meth:`RaftCore.transfer_leadership`, :meth:`RaftCore.compact`. Output: a
:class:`~leeky_twisted.core.messages.Ready` batch from :meth:`RaftCore.ready`,
acknowledged with :meth:`RaftCore.advance` once handled.

The structure follows the extended Raft paper and Ongaro's dissertation:
PreVote and CheckQuorum (§9.6, §6.2), single-server membership changes that
take effect when appended (§4.1), ReadIndex (§6.4), leadership transfer
(§3.10). No clock, no I/O, no global randomness: time is ``tick()`` and
randomness comes from the injected ``random.Random``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.log import RaftLog
from leeky_twisted.core.messages import (
    BOOTSTRAP_TERM,
    MAX_READ_REQUEST,
    MAX_STORAGE_ID,
    MAX_TERM,
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    SnapshotMeta,
    SoftState,
    TimeoutNow,
)
from leeky_twisted.core.progress import Progress, ProgressState
from leeky_twisted.core.quorum import committed_index, majority, quorum_of, vote_result


class RaftError(Exception):
    """Base of the errors the core raises to callers."""


class NotLeaderError(RaftError):
    """The request needs the leader; ``leader`` is who this node believes leads."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class TransferInProgressError(RaftError):
    """Proposals are refused while leadership is being transferred."""


class ConfigChangeInProgressError(RaftError):
    """Only one configuration change may be uncommitted at a time."""


class InconsistentStateError(RaftError):
    """The durable state contradicts itself; the node must not run on it."""


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """A snapshot of the core's state for reports and tests."""

    node_id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    voters: frozenset[NodeId]
    learners: frozenset[NodeId]
    progress: dict[NodeId, tuple[int, int, str]]


#: Messages that may leave before the Ready's own write (once term and vote are
#: durable): the leader's replication, and read-index requests and answers,
#: which carry nothing that write holds.
_LEADER_MESSAGES = (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)


def bootstrap_entries(voters: Sequence[tuple[NodeId, bytes]]) -> list[Entry]:
    """Return the identical first entries every member of a new cluster starts with.

    Each is a committed configuration entry adding one voter (with its
    address as context), in the given order, at term 1. A node that joins an
    existing cluster starts empty instead and learns these from the leader.
    """
    return [
        Entry(
            i + 1,
            BOOTSTRAP_TERM,
            EntryKind.CONFIG,
            ConfChange(ConfChangeOp.ADD_VOTER, nid, ctx).encode(),
        )
        for i, (nid, ctx) in enumerate(voters)
    ]


@dataclass(frozen=True, slots=True)
class _FollowerRead:
    """At a leader: the read context standing for a follower's batch of reads."""

    follower: NodeId
    request: int


class RaftCore:
    """One Raft replica's state and rules, driven by its owner."""

    def __init__(
        self,
        config: CoreConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        snapshot: SnapshotMeta | None = None,
        entries: Sequence[Entry] = (),
        logger: Callable[[str], None] | None = None,
        fresh: bool = False,
        sole_founder: bool = False,
    ) -> None:
        """``fresh`` says the storage was created empty in this run: the node
        may have lost a disk it voted and acknowledged from, so it abstains
        (see :attr:`abstaining`)."""
        self.cfg = config
        self.id = config.node_id
        self._rng = rng
        self._log_line = logger or (lambda line: None)
        hs = hard_state or HardState()
        if snapshot is not None:
            entries = [e for e in entries if e.index > snapshot.index]
            self.log = RaftLog(snapshot.index, snapshot.term, snapshot.config, entries)
        else:
            self.log = RaftLog(0, 0, None, entries)
        self.snapshot_meta = snapshot
        self.term = hs.term
        self.voted_for = hs.voted_for
        if hs.commit > self.log.last_index():
            raise InconsistentStateError(
                f"saved commit index {hs.commit} is past the durable log, which ends at "
                f"{self.log.last_index()}: entries this node acknowledged are lost"
            )
        self.commit = max(hs.commit, self.log.start)
        #: True while this node's storage may have lost what it voted and
        #: acknowledged before (it started empty). Its vote grants say so, and
        #: a candidate then needs one grant more (``vote_result``); it stops
        #: abstaining once it holds its leader's log up to the leader's commit
        #: index, an entry of the leader's term included, or is elected.
        self.abstaining = fresh or hs.abstaining
        if (
            self.abstaining
            and not fresh
            and hs.caught_up
            and self.log.term_at(hs.caught_up) == hs.term
        ):
            # The entries that ended our abstention reached the disk; the
            # write recording its end did not (a crash came between them).
            self.abstaining = False
        #: This node's storage identity, carried by its answers (see HardState).
        self.storage_id = hs.storage_id
        #: it founded its cluster alone (``--bootstrap``): alone, it may elect
        #: itself while abstaining (a lone founder's lost disk is total loss)
        self._sole_founder = sole_founder
        self.applied = self.log.start
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self.votes: dict[NodeId, bool] = {}
        #: voters that granted our campaign while abstaining
        self._abstaining_voters: set[NodeId] = set()
        #: the last index before our no-op, while we lead
        self._term_start = 0
        #: storage identities the answers to our campaign carried
        self._voter_storage: dict[NodeId, int] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        #: set by ``leader_gone``: (the leader reported gone, the election_elapsed
        #: at which to forget it, the one at which to campaign); hearing from
        #: the leader clears it
        self._gone: tuple[NodeId, int, int] | None = None
        self.transferee: NodeId | None = None
        self.ticks = 0
        # outputs
        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[object] = []
        self._pending_snapshot: SnapshotMeta | None = None
        self._needs_append: set[NodeId] = set()
        #: set by the node while local consumers (watches) wait for commits: this
        #: node's answers then ask the leader for each new commit index at once
        self.eager_commits = False
        #: empty appends sent only to tell an eager follower the commit index
        self.eager_notices = 0
        #: the commit index grew, or an eager follower lacks it: check in _flush
        self._eager_due = False
        self._persisted_hs = hs
        self._reported_soft: SoftState | None = None
        self._in_ready = False
        self._applying = self.applied
        # ReadIndex: reads wait for a heartbeat round to be acknowledged by a quorum
        self.read_round = 0
        self._read_round_wanted = False
        self._pending_reads: list[tuple[int, int, object]] = []  # (round, index, ctx)
        self._reads_before_commit: list[object] = []
        # A follower's reads: asked of the leader at the next batch, one request each
        self._reads_to_ask: list[object] = []
        self._read_batches: dict[int, tuple[int, list[object]]] = {}  # request -> (tick, contexts)
        self._next_read_request = 0  #: drawn at random on first use (see ReadIndexRequest)
        self._round_sent_tick: dict[int, int] = {}
        self._lease_until = -1
        # Once a transfer starts, a TimeoutNow may be (or later arrive) in flight:
        # no lease may be taken for the rest of the term (reads use ReadIndex).
        self._lease_forfeited = False
        self._reset_randomized_timeout()
        self._seat_committed()  # a committed seat may already name us

    # ================================================================ inputs

    def tick(self, missed: bool = False) -> None:
        """Advance logical time by one tick.

        ``missed``: a tick the host's reactor owed from a stall, counted before
        it read the messages that arrived meanwhile. Time moves on (leases
        expire, timers run out), but an election or a leader's quorum check
        that comes due waits for the next regular tick, after those messages.
        """
        self.ticks += 1
        if self.role is Role.LEADER:
            self._tick_heartbeat(missed)
        else:
            if self._read_batches:
                self._expire_read_batches()
            self._tick_election(missed)

    def step(self, m: Message) -> None:
        """Handle a message from a peer. Messages for other nodes are ignored."""
        if m.recipient != self.id or m.term > MAX_TERM:
            return
        if m.term > self.term:
            if isinstance(m, RequestVote):
                # With lease reads, a node that (re)started less than an
                # election timeout ago may have acknowledged a leader's lease
                # before it crashed and forgotten it: it must not vote yet.
                in_lease = (
                    self.cfg.check_quorum
                    and (
                        self.leader_id is not None
                        or (self.cfg.lease_read and self.ticks < self.cfg.election_ticks)
                    )
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if not m.transfer and in_lease:
                    # §4.2.3: a server that hears from a current leader ignores
                    # disruptive vote requests.
                    self._log(f"ignore vote request from {m.sender} (leader {self.leader_id})")
                    return
                if not m.pre_vote:
                    self._become_follower(m.term, None)
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                pass  # a granted pre-vote carries the term we would campaign in
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.sender)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat)) and (
                self.cfg.check_quorum or self.cfg.pre_vote
            ):
                # Tell a stale leader about the newer term so it steps down;
                # without this a partitioned leader's pre-votes never win and
                # it could never rejoin (etcd's reasoning, raft.go).
                self._send(
                    AppendEntriesResponse(
                        self.id, m.sender, self.term, False, storage=self.storage_id
                    )
                )
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    RequestVoteResponse(self.id, m.sender, self.term, False, True, self.storage_id)
                )
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def propose(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> tuple[int, int]:
        """Append a command to the leader's log; return its (index, term).

        Raises NotLeaderError on a non-leader and TransferInProgressError while
        leadership is being handed over. The entry is committed once it is
        durable on a majority; the caller learns that from committed_entries.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgressError(f"leadership is moving to {self.transferee}")
        if kind is EntryKind.CONFIG:
            raise ValueError("use propose_config_change for configuration entries")
        return self._append_new(kind, data)

    def propose_config_change(self, change: ConfChange) -> tuple[int, int]:
        """Append a single-server configuration change; return its (index, term).

        Refused while another change is uncommitted, and until the leader has
        committed an entry of its own term (the fix to single-server changes
        from the raft-dev list, 2015). ValueError for a change that does nothing.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transferee is not None:
            raise TransferInProgressError(f"leadership is moving to {self.transferee}")
        if self.log.config_index() > self.commit:
            raise ConfigChangeInProgressError("a configuration change is not yet committed")
        if self.log.term_at(self.commit) != self.term:
            raise ConfigChangeInProgressError("the leader has not committed in its term yet")
        cfg = self.log.config()
        new = cfg.apply(change)  # validates; raises ValueError
        if change.op is ConfChangeOp.ADD_VOTER and change.node_id not in cfg.voters:
            if change.node_id not in cfg.learners:
                raise ValueError(f"add {change.node_id} as a learner first")
            pr = self.progress.get(change.node_id)
            if pr is None or pr.match < self.log.config_index():
                # A voter must hold what it votes from: at least the entry that
                # made it a learner (or it could restart empty, unable to vote).
                raise ValueError(f"learner {change.node_id} has not caught up yet")
            if pr.abstaining:
                # Nor start as an abstaining voter: its grants would need one
                # more, and a two-voter configuration could elect no one.
                raise ValueError(
                    f"learner {change.node_id} has not caught up yet: it still abstains "
                    "(its storage started empty)"
                )
        if not self._can_commit_under(new):
            # A configuration whose majority needs voters that are silent or do
            # not count (a vacant seat) could never commit again, not even the
            # change that would mend it (etcd's strict reconfiguration check).
            raise ValueError(
                f"refused: after this change, fewer than a majority of the voters "
                f"{sorted(new.voters)} would be both heard from and counted (a voter down, "
                "or one whose storage was replaced and is not seated again yet); bring "
                "them back first"
            )
        return self._append_new(EntryKind.CONFIG, change.encode())

    def read_index(self, context: object) -> None:
        """Ask to serve a linearizable read (§6.4).

        A ReadState(index, context) appears in a later Ready once this node is
        confirmed as leader; serve the read after applying up to ``index``. If
        leadership is lost first, ``context`` appears in ``dropped_reads``.
        A follower that knows its leader asks it for the read index (with
        ``follower_reads``, one ReadIndexRequest per batch) and hands out the
        leader's answer the same way; if the leader changes, the term moves or
        no answer comes within an election timeout, ``context`` is dropped.
        Raises NotLeaderError on any other node.
        """
        if self.role is not Role.LEADER:
            if (
                self.role is Role.FOLLOWER
                and self.leader_id is not None
                and self.cfg.follower_reads
            ):
                self._reads_to_ask.append(context)
                return
            raise NotLeaderError(self.leader_id)
        if self.log.term_at(self.commit) != self.term:
            self._reads_before_commit.append(context)
            return
        self._queue_read(context)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to the voter ``target`` (§3.10).

        The leader brings the target up to date, then sends TimeoutNow.
        Proposals are refused meanwhile; the transfer is abandoned after an
        election timeout.
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id:
            return
        if target not in self.log.config().voters:
            raise ValueError(f"{target} is not a voter")
        if self._seat(target, self.progress[target].storage_id) is False:
            raise ValueError(
                f"{target}'s seat does not name the storage it answers from "
                "(it lost its storage and is not seated again yet): it cannot stand"
            )
        if self.transferee == target:
            return
        self.transferee = target
        self.election_elapsed = 0
        self._lease_until = -1  # the target may win before we hear of it
        self._lease_forfeited = True
        self._round_sent_tick.clear()
        self._log(f"transfer leadership to {target}")
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._needs_append.add(target)

    def leader_gone(self, peer: NodeId) -> bool:
        """The host saw the process of ``peer`` go: its connections closed and
        its port refuses new ones (a crash, a kill, a stop).

        A follower of that leader does not wait out a whole election timeout.
        Once it has heard nothing from the leader for a heartbeat interval and
        a tick, it forgets it (so it grants the other survivors' pre-votes)
        and campaigns, one tick later per voter ranked before it (by id, the
        gone leader left out), so survivors that learn together do not split
        the vote. Any message from the leader meanwhile cancels it all: a
        false report about a leader that still reaches this follower costs
        nothing, and one whose leader does not reach it costs at most a
        failed pre-vote where survivors still hear the leader (§4.2.3).
        Hence only with PreVote and CheckQuorum (whose leader stickiness makes
        them ignore it), and never with lease reads, where a follower's
        silence is a promise the leader relies on. Returns True when taken.
        """
        if self.role is not Role.FOLLOWER or self.leader_id != peer or peer == self.id:
            return False
        if not (self.cfg.pre_vote and self.cfg.check_quorum) or self.cfg.lease_read:
            # a peer still hearing the leader refuses a pre-vote only under
            # CheckQuorum (leader stickiness, §4.2.3), not under PreVote alone
            return False
        others = sorted(v for v in self.log.config().voters if v != peer)
        if self.id not in others:
            return False
        silent = max(self.election_elapsed, self.cfg.heartbeat_ticks) + 1
        self._gone = (peer, silent, silent + others.index(self.id))
        self._log(f"leader {peer} is gone; campaign after {self._gone[2]} silent ticks")
        return True

    def snapshot_meta_at(self, index: int) -> SnapshotMeta:
        """Return the metadata a snapshot of the state at applied ``index`` carries."""
        if index > self.applied or index < self.log.start:
            raise ValueError(f"index {index} is not applied or is compacted")
        term = self.log.term_at(index)
        assert term is not None
        return SnapshotMeta(index, term, self.log.config_at(index))

    def compact(self, meta: SnapshotMeta, upto: int | None = None) -> None:
        """Record the durable snapshot ``meta`` and forget log entries up to ``upto``.

        ``upto`` defaults to ``meta.index``; keeping a few entries before it
        lets slightly lagging followers catch up without a snapshot.
        """
        upto = meta.index if upto is None else min(upto, meta.index)
        if self.snapshot_meta is None or meta.index > self.snapshot_meta.index:
            self.snapshot_meta = meta
        upto = min(upto, self.log.stable, self.applied)
        if upto > self.log.start:
            self.log.compact(upto)

    # ================================================================ output

    def has_ready(self) -> bool:
        """Return True when :meth:`ready` would return work."""
        self._flush()
        return bool(
            self._msgs
            or self._msgs_after
            or self.log.unstable_from <= self.log.last_index()
            or self._hard_state() != self._persisted_hs
            or self.commit > self._applying
            or self._read_states
            or self._dropped_reads
            or self._pending_snapshot is not None
            or self._soft_state() != self._reported_soft
        )

    def ready(self) -> Ready:
        """Return the next batch of work. Call :meth:`advance` before the next."""
        if self._in_ready:
            raise RuntimeError("ready() called before advance() of the previous batch")
        self._flush()
        hs = self._hard_state()
        soft = self._soft_state()
        committed: list[Entry] = []
        if self.commit > self._applying:
            committed = self.log.slice(
                self._applying + 1, self.commit + 1, self.cfg.max_apply_bytes
            )
        rd = Ready(
            hard_state=hs if hs != self._persisted_hs else None,
            entries=tuple(self.log.handed_to_storage()),
            snapshot=self._pending_snapshot,
            messages=tuple(self._msgs),
            messages_after_persist=tuple(self._msgs_after),
            committed_entries=tuple(committed),
            read_states=tuple(self._read_states),
            soft_state=soft if soft != self._reported_soft else None,
            dropped_reads=tuple(self._dropped_reads),
        )
        if committed:
            self._applying = committed[-1].index
        self._reported_soft = soft
        self._pending_snapshot = None
        self._msgs = []
        self._msgs_after = []
        self._read_states = []
        self._dropped_reads = []
        self._in_ready = True
        return rd

    def take_messages(self) -> tuple[Message, ...]:
        """Return (and forget) the messages that may be sent before any persistence.

        These are the leader's AppendEntries, heartbeats, snapshots and
        TimeoutNow. A node may call this while a Ready is still being persisted,
        so replication of new entries overlaps the leader's own fsync; the
        leader counts itself toward a quorum only once its write is durable.
        """
        self._flush()
        out = tuple(self._msgs)
        self._msgs = []
        return out

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        self._in_ready = False
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index)
        if rd.committed_entries:
            self.applied = max(self.applied, rd.committed_entries[-1].index)
        if self.role is Role.LEADER:
            self._self_match()

    def status(self) -> CoreStatus:
        """Return the core's state for reports."""
        cfg = self.log.config()
        return CoreStatus(
            node_id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader_id,
            commit=self.commit,
            applied=self.applied,
            last_index=self.log.last_index(),
            first_index=self.log.start + 1,
            voters=cfg.voters,
            learners=cfg.learners,
            progress={
                nid: (pr.match, pr.next, pr.state.value) for nid, pr in self.progress.items()
            },
        )

    @property
    def configuration(self) -> Configuration:
        """Return the latest configuration in the log."""
        return self.log.config()

    # ============================================================ role changes

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        was_leader = self.role is Role.LEADER
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        self._drop_asked_reads()
        self.votes = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.transferee = None
        self._reset_randomized_timeout()
        if was_leader:
            self.progress = {}
            self._needs_append.clear()
            self._drop_reads()
        self._log(f"became follower in term {self.term} (leader {leader})")

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._drop_asked_reads()
        self.votes = {self.id: True}
        self._abstaining_voters = set()
        self._voter_storage = {}
        self._reset_randomized_timeout()
        self._log(f"became pre-candidate at term {self.term}")

    def _become_candidate(self) -> None:
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.id
        self.leader_id = None
        self._drop_asked_reads()
        self.votes = {self.id: True}
        self._abstaining_voters = set()
        self._voter_storage = {}
        self.election_elapsed = 0
        self._reset_randomized_timeout()
        self._log(f"became candidate at term {self.term}")

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self._drop_asked_reads()
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.transferee = None
        self._lease_forfeited = False
        self.progress = {}
        self._sync_progress()
        self._term_start = self.log.last_index()  # our no-op comes after
        for nid, pr in self.progress.items():
            pr.named_at = self._term_start
            if nid in self._voter_storage:
                pr.storage_id = self._voter_storage[nid]
                pr.abstaining = nid in self._abstaining_voters or not self.votes.get(nid)
        self._voter_storage = {}
        self._self_match()
        # Elected by voters whose logs it is at least as up to date as: its log
        # holds every committed entry, so it need no longer abstain.
        self.abstaining = False
        self._log(f"became leader at term {self.term}")
        # §8: a no-op of the new term lets earlier entries commit and ReadIndex start.
        self._append_new(EntryKind.NOOP, b"")

    def _may_campaign(self) -> bool:
        """Return True when this node may stand for election.

        A voter may, unless the configuration binds its seat to another
        storage (or to none). A node whose own removal is the latest, still
        uncommitted, configuration entry may too: the new configuration's
        voters elect it (it does not count itself), it commits its removal and
        steps down. Otherwise a node with the most complete log could hold the
        others' votes back forever by holding its own removal.
        """
        cfg = self.log.config()
        if self.id in cfg.voters:
            return self._seat(self.id, self.storage_id, cfg) is not False
        # Only with PreVote or CheckQuorum: without either, a former leader that
        # never hears its removal commit would depose every leader for ever.
        if not (self.cfg.pre_vote or self.cfg.check_quorum):
            return False
        index = self.log.config_index()
        return index > self.commit and self.id in self.log.config_at(index - 1).voters

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        voters = self.log.config().voters
        if not self._may_campaign() or self.term >= MAX_TERM:
            return
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if vote_result(voters, self.votes, self._abstaining_votes(), self._alone_counts()):
            self._won_election(pre_vote)
            return
        for nid in sorted(voters):
            if nid != self.id:
                self._send(
                    RequestVote(
                        self.id,
                        nid,
                        term,
                        self.log.last_index(),
                        self.log.last_term(),
                        pre_vote,
                        transfer,
                    )
                )

    def _abstaining_votes(self) -> set[NodeId]:
        if self.abstaining and self._seat(self.id, self.storage_id) is None:
            return self._abstaining_voters | {self.id}
        return self._abstaining_voters

    def _alone_counts(self) -> bool:
        return (
            self._sole_founder
            or not self.abstaining
            or self._seat(self.id, self.storage_id) is True
        )

    def _won_election(self, pre_vote: bool) -> None:
        if pre_vote:
            self._campaign(False)
        else:
            self._become_leader()

    # ================================================================== ticks

    def _tick_election(self, missed: bool = False) -> None:
        self.election_elapsed += 1
        due = self.randomized_timeout
        gone = self._gone
        if gone is not None:
            peer, forget_at, campaign_at = gone
            if self.role is not Role.FOLLOWER or self.leader_id not in (peer, None):
                self._gone = None  # another leader spoke up, or we campaign already
            else:
                if not missed and self.leader_id == peer and self.election_elapsed >= forget_at:
                    self._forget_gone_leader()
                due = min(due, campaign_at)
        if not missed and self.election_elapsed >= due and self._may_campaign():
            self.election_elapsed = 0
            self._gone = None
            self._campaign(self.cfg.pre_vote)

    def _forget_gone_leader(self) -> None:
        """The leader reported gone stayed silent: know no leader (grant pre-votes)."""
        self.leader_id = None
        self._drop_asked_reads()  # its answers will not come

    def _tick_heartbeat(self, missed: bool = False) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if not missed and self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                if not self._quorum_active():
                    self._log("lost contact with a quorum; stepping down")
                    self._become_follower(self.term, None)
                    return
                for nid, pr in self.progress.items():
                    if nid != self.id:
                        pr.recent_active = False
            if self.transferee is not None:
                self._log(f"abandon leadership transfer to {self.transferee}")
                self.transferee = None
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        voters = self.log.config().voters
        active = {
            v
            for v in voters
            if self._counts(v)
            and (v == self.id or (v in self.progress and self.progress[v].recent_active))
        }
        return quorum_of(voters, active, self._abstaining_followers())

    # ================================================================== votes

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.voted_for == m.sender
            or (self.voted_for is None and self.leader_id is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            # An abstaining voter says so: the candidate then needs one grant
            # more (our storage may have lost what we acknowledged).
            self._send(
                RequestVoteResponse(
                    self.id, m.sender, m.term, True, m.pre_vote, self.storage_id, self.abstaining
                )
            )
            if not m.pre_vote:
                self.election_elapsed = 0
                self.voted_for = m.sender
            self._log(f"grant {'pre-' if m.pre_vote else ''}vote to {m.sender} at {m.term}")
        else:
            self._send(
                RequestVoteResponse(
                    self.id, m.sender, self.term, False, m.pre_vote, self.storage_id
                )
            )

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._become_follower(m.term, m.sender)
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return
            # A grant counts only from the storage the configuration binds
            # to its sender's seat, if it binds one (a lost storage's vote
            # and its replacement's are never both counted).
            seat = self._seat(m.sender, m.storage)
            granted = m.granted and seat is not False
            self.votes.setdefault(m.sender, granted)
            if granted and m.abstaining and seat is None:
                self._abstaining_voters.add(m.sender)
            if m.storage > self._voter_storage.get(m.sender, 0):
                self._voter_storage[m.sender] = m.storage
            result = vote_result(
                self.log.config().voters,
                self.votes,
                self._abstaining_votes(),
                self._alone_counts(),
            )
            if result is True:
                self._won_election(m.pre_vote)
            elif result is False:
                self._become_follower(self.term, None)

    # =============================================================== follower

    def _heard_from_leader(self, leader: NodeId) -> None:
        """A message of this term's leader: its timer restarts, and a report of
        its death (``leader_gone``) was false."""
        self.election_elapsed = 0
        self.leader_id = leader
        self._gone = None

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, ReadIndexResponse):
            batch = self._read_batches.pop(m.request, None)
            if batch is not None and m.sender == self.leader_id:
                self._read_states.extend(ReadState(m.index, ctx) for ctx in batch[1])
            elif batch is not None:
                self._read_batches[m.request] = batch
        elif isinstance(m, AppendEntries):
            self._heard_from_leader(m.sender)
            self._handle_append_entries(m)
        elif isinstance(m, Heartbeat):
            self._heard_from_leader(m.sender)
            if m.commit > self.commit:
                self.commit = min(m.commit, self.log.last_index())
                self._seat_committed()
            self._send(
                HeartbeatResponse(
                    self.id,
                    m.sender,
                    self.term,
                    m.read_round,
                    self.log.last_index(),
                    self.storage_id,
                    self.abstaining,
                    self.eager_commits,
                )
            )
        elif isinstance(m, InstallSnapshot):
            self._heard_from_leader(m.sender)
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow) and self._may_campaign():
            self._log(f"TimeoutNow from {m.sender}: campaigning")
            self._campaign(False, transfer=True)

    def _handle_append_entries(self, m: AppendEntries) -> None:
        if m.to_storage > self.storage_id:
            # The leader knows an identity of ours newer than this storage's
            # (a clock that went back, and a lost storage's answer came late):
            # take a newer one and abstain, so our answers replace the lost
            # storage's instead of being dropped as its.
            self.storage_id = min(m.to_storage + 1, MAX_STORAGE_ID)
            self.abstaining = True
            self._log(f"storage identity raised to {self.storage_id}; abstaining")
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < self.log.start:
            # The prefix up to our compaction point is committed, hence identical.
            skip = self.log.start - prev
            if skip > len(entries):
                self._ack(m.sender, self.commit)
                return
            entries = entries[skip:]
            prev, prev_term = self.log.start, self.log.start_term
        if self.log.term_at(prev) != prev_term:
            last = self.log.last_index()
            if prev > last:
                hint_term, hint_index = 0, last + 1
            else:
                hint_term = self.log.term_at(prev) or 0
                hint_index = self.log.first_index_of_term(prev)
            self._send(
                AppendEntriesResponse(
                    self.id,
                    m.sender,
                    self.term,
                    False,
                    0,
                    m.prev_log_index,
                    hint_term,
                    hint_index,
                    self.storage_id,
                    self.abstaining,
                    self.eager_commits,
                )
            )
            return
        last = self.log.last_index()
        for i, e in enumerate(entries):
            if e.index <= last and self.log.term_at(e.index) == e.term:
                continue
            if e.index <= last:
                if e.index <= self.commit:
                    raise AssertionError(
                        f"{self.id}: leader {m.sender} conflicts with committed entry {e.index}"
                    )
                self.log.truncate_from(e.index)
            self.log.append(entries[i:])
            break
        last_new = prev + len(entries)
        self._seat_names_a_later_storage()
        if m.leader_commit > self.commit:
            # Never backwards: a reordered, older append may end below commit.
            self.commit = max(self.commit, min(m.leader_commit, last_new))
            self._seat_committed()
        if (
            self.abstaining
            and last_new >= m.leader_commit
            and self.log.term_at(last_new) == self.term
            and m.to_storage == self.storage_id
            and self._seat(self.id, self.storage_id) is None
        ):
            # The leader knew this storage when it sent its commit index: no
            # acknowledgement of a lost storage of ours counts after it.
            self._log(f"caught up with leader {m.sender} at {last_new}: voting again")
            self.abstaining = False
            if self.voted_for is None:
                # A lost storage may have voted in this term: count our vote as
                # given to the leader it elected, so we never give a second one.
                self.voted_for = m.sender
        self._ack(m.sender, last_new)

    def _ack(self, leader: NodeId, match: int) -> None:
        self._send(
            AppendEntriesResponse(
                self.id,
                leader,
                self.term,
                True,
                match,
                storage=self.storage_id,
                abstaining=self.abstaining,
                eager=self.eager_commits,
            )
        )

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        meta = m.meta
        if meta.index <= self.commit:
            self._ack(m.sender, self.commit)
            return
        if self.log.term_at(meta.index) == meta.term:
            # We hold the entry the snapshot ends at: keep our log, fast-forward commit.
            self.commit = meta.index
            self._seat_committed()
            self._ack(m.sender, meta.index)
            return
        self._log(f"install snapshot at {meta.index} (term {meta.term}) from {m.sender}")
        self.log.restore(meta)
        self.snapshot_meta = meta
        self.commit = meta.index
        self._seat_committed()
        self.applied = meta.index
        self._applying = meta.index
        self._pending_snapshot = meta
        self._ack(m.sender, meta.index)

    # ================================================================= leader

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.sender)
        if pr is None:
            return
        if isinstance(m, ReadIndexRequest):
            self.read_index(_FollowerRead(m.sender, m.request))
            return
        if isinstance(m, (AppendEntriesResponse, HeartbeatResponse)) and m.storage != pr.storage_id:
            if not self._new_storage(m.sender, pr, m.storage, m.abstaining):
                return
            self._step_leader_answer(m, pr)
            if pr.state is ProgressState.REPLICATE:
                # One empty append names the storage we now know: a follower
                # that started empty ends its abstention only on such an append.
                self._send_append(m.sender, pr, empty=True)
            return
        if isinstance(m, RequestVoteResponse):
            if not pr.storage_id and m.storage:
                # A vote that came after we had won: our appends so far named
                # no storage, so none of them can end the voter's abstention.
                pr.storage_id = m.storage
                # an answer to this term's election: the point is our no-op
                pr.named_at = self._term_start
                pr.abstaining = m.abstaining or not m.granted
                if pr.state is ProgressState.REPLICATE:
                    self._send_append(m.sender, pr, empty=True)
                elif pr.state is ProgressState.PROBE:
                    pr.probe_sent = False  # probe again, naming it
                    self._needs_append.add(m.sender)
            return
        self._step_leader_answer(m, pr)

    def _step_leader_answer(self, m: Message, pr: Progress) -> None:
        if isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            pr.heard_tick = self.ticks
            if m.term == self.term:
                pr.abstaining = m.abstaining
            self._note_eager(pr, m.eager)
            if m.success:
                self._handle_append_success(m.sender, pr, m.match_index)
            else:
                self._handle_append_reject(pr, m)
                self._needs_append.add(m.sender)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.heard_tick = self.ticks
            pr.abstaining = m.abstaining
            self._note_eager(pr, m.eager)
            self._settle_seats()
            if m.read_round > pr.read_ack:
                pr.read_ack = m.read_round
                self._confirm_reads()
            if m.last_log_index < pr.match and m.read_round == pr.read_ack:
                self._follower_lost_log(m.sender, pr, m.last_log_index)
            if pr.state is ProgressState.PROBE:
                pr.probe_sent = False
            elif (
                pr.state is ProgressState.SNAPSHOT
                and self.ticks - pr.snapshot_sent_tick >= self.cfg.snapshot_retry_ticks
            ):
                # The snapshot (or its answer) was lost: probe again, which
                # sends a fresh InstallSnapshot if entries are still compacted.
                pr.become_probe(pr.match + 1)
            if pr.match < self.log.last_index():
                if pr.state is ProgressState.REPLICATE:
                    # An append or its answer may have been lost: free a slot
                    # of the window and send an empty append ending at next-1,
                    # whose answer either repairs match or makes us probe.
                    pr.free_one()
                    self._send_append(m.sender, pr, empty=True)
                self._needs_append.add(m.sender)
            elif m.abstaining and pr.state is ProgressState.REPLICATE:
                # Caught up yet abstaining (it restarted, or never got an append
                # naming its storage): one empty append a heartbeat ends that,
                # once we have committed an entry appended after we learned its
                # storage (an idle log gets a no-op for that, once).
                if self.commit > pr.named_at:
                    self._send_append(m.sender, pr, empty=True)
                elif self.log.last_index() <= pr.named_at and self.transferee is None:
                    self._append_new(EntryKind.NOOP, b"")

    def _note_eager(self, pr: Progress, eager: bool) -> None:
        pr.eager = eager
        if eager and pr.commit_sent < self.commit:
            self._eager_due = True  # it just started asking, or missed a notice

    def _handle_append_success(self, nid: NodeId, pr: Progress, match: int) -> None:
        grew = pr.update_match(match)
        if pr.state is ProgressState.PROBE and grew:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe(pr.match + 1)
            pr.become_replicate()
            # One empty append carries our commit index and term to a follower
            # the snapshot brought up to date: if it started empty, that ends
            # its abstention even when no new entry follows.
            self._send_append(nid, pr, empty=True)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = False
        if grew:
            self._maybe_commit()
        if self.role is not Role.LEADER:
            return
        self._needs_append.add(nid)
        if nid == self.transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, nid, self.term))

    def _handle_append_reject(self, pr: Progress, m: AppendEntriesResponse) -> None:
        if m.reject_index == 0:
            # Only the answer to an older term's message says nothing of the
            # log (index 0 always matches); it arrives late once terms agree.
            return
        if m.reject_index <= pr.match:
            if m.conflict_term == 0 and m.conflict_index <= pr.match:
                # The follower's log ends below what it acknowledged.
                self._follower_lost_log(m.sender, pr, m.conflict_index - 1)
            return  # stale
        if pr.state is ProgressState.PROBE and m.reject_index != pr.next - 1:
            return  # answer to an older probe
        if pr.state is ProgressState.SNAPSHOT:
            return
        next_index = m.conflict_index
        if m.conflict_term > 0:
            found = self.log.last_index_of_term(m.conflict_term, m.reject_index)
            if found is not None:
                next_index = found + 1
        next_index = max(min(next_index, m.reject_index), 1)
        pr.become_probe(next_index)

    def _new_storage(self, nid: NodeId, pr: Progress, storage: int, abstaining: bool) -> bool:
        """``nid`` answers from another storage than before: True to handle the answer.

        An identity below the known one is a lost storage's: its answer, sent
        before the loss and delivered late, is dropped. A higher one replaced
        it: what the old one acknowledged no longer counts. Once an append has
        named the known identity, only a storage that says it abstains (a new
        one always does) replaces it: a lost storage's late answer does not.
        """
        if storage < pr.storage_id or (pr.named and not abstaining):
            self._log(f"drop an answer from {nid}'s lost storage {storage}")
            return False
        if pr.storage_id:
            self._log(f"{nid} answers from new storage {storage}: its acknowledgements start over")
            pr.forget_match(0)
            self._needs_append.add(nid)
        pr.storage_id = storage
        pr.named = False
        pr.named_at = self.log.last_index()
        return True

    def _abstaining_followers(self) -> set[NodeId]:
        seated = self.log.config().storage
        return {
            nid
            for nid, pr in self.progress.items()
            if nid != self.id
            and pr.abstaining
            and (not seated or self._seat(nid, pr.storage_id) is None)
        }

    def _follower_lost_log(self, nid: NodeId, pr: Progress, last: int) -> None:
        """``nid`` reports a log shorter than it acknowledged: its storage was
        lost or cut. Forget what it held and probe from its real end."""
        self._log(f"{nid} lost its log above {last} (match was {pr.match}); probing")
        pr.forget_match(last)
        self._needs_append.add(nid)

    def _self_match(self) -> None:
        pr = self.progress.get(self.id)
        if pr is not None and pr.update_match(self.log.stable):
            self._maybe_commit()

    def _maybe_commit(self) -> None:
        cfg = self.log.config()
        if cfg.storage:
            seats = dict(cfg.storage)
            match = {}
            for nid, pr in self.progress.items():
                bound = seats.get(nid)
                storage = self.storage_id if nid == self.id else pr.storage_id
                if bound is None or (bound and bound == storage):
                    match[nid] = pr.match
        else:  # no seat bound: every answer counts, by the abstention rules
            match = {nid: pr.match for nid, pr in self.progress.items()}
        index = committed_index(cfg.voters, match, self._abstaining_followers())
        # Figure 8: only entries of the current term are committed by counting.
        if index > self.commit and self.log.term_at(index) == self.term:
            old = self.commit
            self.commit = index
            self._eager_due = True
            if self.log.term_at(old) != self.term:
                self._on_first_commit_in_term()
            if self.log.config_index() <= index and self.id not in cfg.voters:
                self._log("removed from the configuration; stepping down")
                self._become_follower(self.term, None)
                return
            for nid, pr in self.progress.items():
                if (
                    pr.abstaining
                    and not pr.named
                    and pr.storage_id
                    and old <= pr.named_at < index
                    and pr.state is ProgressState.REPLICATE
                    and nid != self.id
                ):
                    # Now we may name its storage: an empty append ends its abstention.
                    self._send_append(nid, pr, empty=True)
            if old < self.log.config_index() <= index or self.log.term_at(old) != self.term:
                # a configuration change (or our first entry) committed: the
                # next seat change may follow; heartbeat answers check the rest
                self._settle_seats()

    def _on_first_commit_in_term(self) -> None:
        waiting, self._reads_before_commit = self._reads_before_commit, []
        for ctx in waiting:
            self._queue_read(ctx)

    def _append_new(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        index = self.log.last_index() + 1
        entry = Entry(index, self.term, kind, data)
        self.log.append((entry,))
        if kind is EntryKind.CONFIG:
            self._sync_progress()
        self._needs_append.update(nid for nid in self.progress if nid != self.id)
        return index, self.term

    def _sync_progress(self) -> None:
        members = self.log.config().members() | {self.id}
        last = self.log.last_index()
        for nid in sorted(members):
            if nid not in self.progress:
                self.progress[nid] = Progress(last + 1, self.cfg.max_inflight)
        for nid in list(self.progress):
            if nid not in members:
                del self.progress[nid]
                self._needs_append.discard(nid)

    def _send_append(self, nid: NodeId, pr: Progress, empty: bool = False) -> bool:
        """Send one AppendEntries (or InstallSnapshot) to ``nid``; False if nothing sent.

        With ``empty``, send an entry-less AppendEntries ending at next - 1
        even when paused: a follower that lost part of the pipeline rejects it
        and the leader falls back to probing.
        """
        if pr.is_paused() and not empty:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None and prev < self.log.start:
            if self.snapshot_meta is None:
                return False
            pr.become_snapshot(self.snapshot_meta.index, self.ticks)
            self._send(InstallSnapshot(self.id, nid, self.term, self.snapshot_meta))
            return True
        if prev_term is None:  # next beyond our log: restart from the end
            pr.become_probe(self.log.last_index() + 1)
            prev = pr.next - 1
            prev_term = self.log.term_at(prev)
            assert prev_term is not None
        if empty:
            entries = []
        else:
            entries = self.log.slice(pr.next, self.log.last_index() + 1, self.cfg.max_msg_bytes)
            if not entries and pr.state is ProgressState.REPLICATE:
                return False
        # Name a voter's storage only once we committed past the point where we
        # learned it, counting it as possibly lost (see _new_storage): a stale
        # leader cannot, so it never ends a new storage's abstention. A learner
        # neither votes nor counts: name its storage at once.
        to_storage = 0
        if pr.storage_id and (self.commit > pr.named_at or nid not in self.log.config().voters):
            to_storage = pr.storage_id
            pr.named = True
        self._send(
            AppendEntries(
                self.id, nid, self.term, prev, prev_term, tuple(entries), self.commit, to_storage
            )
        )
        pr.commit_sent = max(pr.commit_sent, self.commit)
        if entries:
            pr.sent(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _broadcast_heartbeat(self) -> None:
        self.read_round += 1
        if self.cfg.lease_read and not self._lease_forfeited:
            self._round_sent_tick[self.read_round] = self.ticks
        self._read_round_wanted = False
        for nid, pr in self.progress.items():
            if nid != self.id:
                told = min(pr.match, self.commit)
                self._send(Heartbeat(self.id, nid, self.term, told, self.read_round))
                pr.commit_sent = max(pr.commit_sent, told)
        self._confirm_reads()  # a single voter confirms itself

    def _flush(self) -> None:
        """Send the AppendEntries and read rounds accumulated since the last batch."""
        if self._reads_to_ask:
            self._ask_read_index()
        if self.role is not Role.LEADER:
            self._needs_append.clear()
            self._eager_due = False
            return
        if self._read_round_wanted:
            self._broadcast_heartbeat()
        if self._needs_append:
            for nid in sorted(self._needs_append):
                pr = self.progress.get(nid)
                if pr is None:
                    continue
                while self._send_append(nid, pr):
                    if pr.state is not ProgressState.REPLICATE:
                        break
                    if pr.next > self.log.last_index():
                        break
            self._needs_append.clear()
        if self._eager_due:
            # After the appends above: one that carried new entries told the
            # commit index too, so only a follower left without it gets a notice.
            self._eager_due = False
            self.eager_notices += self._tell_commit(eager_only=True)

    def notify_commit(self) -> int:
        """Tell each follower that holds every entry the commit index, if it lacks it.

        Without this a follower learns a new commit index from the next append
        or heartbeat. The node calls it shortly after an entry commits, not at
        once: under steady load the next append carries the commit index for
        free, and only an idle follower (whose reads and watches wait for it)
        gets an empty append. A follower whose answers say it is *eager* (it
        has watchers) is told at once instead, in the batch where the index
        grows. Return how many followers were told.
        """
        return self._tell_commit(eager_only=False)

    def _tell_commit(self, eager_only: bool) -> int:
        if self.role is not Role.LEADER:
            return 0
        last = self.log.last_index()
        commit = self.commit
        told = 0
        for nid, pr in self.progress.items():
            if (
                pr.commit_sent < commit
                and (pr.eager or not eager_only)
                and nid != self.id
                and pr.state is ProgressState.REPLICATE
                and pr.next > last
            ):
                told += self._send_append(nid, pr, empty=True)
        return told

    # ================================================================== reads

    def _queue_read(self, context: object) -> None:
        if len(self.log.config().voters) == 1 and self.id in self.log.config().voters:
            self._release_read(self.commit, context)
            return
        if self.cfg.lease_read and self.transferee is None and self.ticks < self._lease_until:
            self._release_read(self.commit, context)
            return
        self._pending_reads.append((self.read_round + 1, self.commit, context))
        self._read_round_wanted = True

    def _confirm_reads(self) -> None:
        voters = self.log.config().voters
        acks = {nid: pr.read_ack for nid, pr in self.progress.items() if self._counts(nid)}
        if self._counts(self.id):
            acks[self.id] = self.read_round
        confirmed = committed_index(voters, acks, self._abstaining_followers())
        if confirmed in self._round_sent_tick:
            # Followers will not elect another leader for election_ticks after
            # they acknowledged this round, which was sent at that tick.
            self._lease_until = max(
                self._lease_until, self._round_sent_tick[confirmed] + self.cfg.election_ticks - 1
            )
        for r in [r for r in self._round_sent_tick if r < confirmed]:
            del self._round_sent_tick[r]
        if not self._pending_reads or self._pending_reads[0][0] > confirmed:
            return
        keep = []
        for rnd, index, ctx in self._pending_reads:
            if rnd <= confirmed:
                self._release_read(index, ctx)
            else:
                keep.append((rnd, index, ctx))
        self._pending_reads = keep

    def _release_read(self, index: int, ctx: object) -> None:
        """A read confirmed at ``index``: a follower's batch is answered at once, in
        the term that confirmed it (wherever the confirmation happens, _flush
        included); this node's own read goes out in the next Ready."""
        if type(ctx) is _FollowerRead:
            self._send(ReadIndexResponse(self.id, ctx.follower, self.term, ctx.request, index))
        else:
            self._read_states.append(ReadState(index, ctx))

    def _drop_reads(self) -> None:
        # A follower's batch is not this node's to fail: the follower drops it
        # when it hears of the new term or leader, or after an election timeout.
        waiting = [ctx for _, _, ctx in self._pending_reads] + self._reads_before_commit
        self._dropped_reads.extend(c for c in waiting if type(c) is not _FollowerRead)
        self._pending_reads = []
        self._reads_before_commit = []
        self._round_sent_tick.clear()
        self._lease_until = -1
        self._read_round_wanted = False

    def _ask_read_index(self) -> None:
        """Send the reads asked since the last batch to the leader, as one request."""
        asks, self._reads_to_ask = self._reads_to_ask, []
        leader = self.leader_id
        if self.role is not Role.FOLLOWER or leader is None:
            self._dropped_reads.extend(asks)
            return
        if not self._next_read_request:
            self._next_read_request = self._rng.getrandbits(62) + 1
        request = self._next_read_request
        self._next_read_request = request + 1 if request < MAX_READ_REQUEST else 1
        self._read_batches[request] = (self.ticks, asks)
        self._send(ReadIndexRequest(self.id, leader, self.term, request))

    def _expire_read_batches(self) -> None:
        """Drop the batches the leader left unanswered for an election timeout."""
        late = self.ticks - self.cfg.election_ticks
        for request in [r for r, (sent, _) in self._read_batches.items() if sent <= late]:
            self._dropped_reads.extend(self._read_batches.pop(request)[1])

    def _drop_asked_reads(self) -> None:
        """Drop the reads asked of a leader that is no longer ours."""
        if self._reads_to_ask:
            self._dropped_reads.extend(self._reads_to_ask)
            self._reads_to_ask = []
        for _, asks in self._read_batches.values():
            self._dropped_reads.extend(asks)
        self._read_batches.clear()

    # ========================================================= storage seats

    def _seat(self, nid: NodeId, storage: int, cfg: Configuration | None = None) -> bool | None:
        """Return whether answers from ``nid``'s ``storage`` count for its seat.

        True when the configuration binds that storage to ``nid``; False when
        it binds another, or none (a vacant seat); None when ``nid`` is unbound
        (a founder or a promoted learner not yet bound: the abstention rules
        decide).
        """
        bound = (cfg or self.log.config()).storage_of(nid)
        if bound is None:
            return None
        return bound != 0 and storage == bound

    def _counts(self, nid: NodeId) -> bool:
        """Return False when what ``nid`` acknowledged must not count (leader)."""
        bound = self.log.config().storage_of(nid)
        if bound is None:
            return True
        if nid == self.id:
            return bound != 0 and bound == self.storage_id
        pr = self.progress.get(nid)
        return pr is not None and bound != 0 and bound == pr.storage_id

    def _settle_seats(self) -> None:
        """Bind each voter's seat to the storage it answers from (leader only).

        An unbound voter that answers without abstaining is bound to its
        storage. A voter that answers from a newer storage than its seat names
        has its seat vacated first, and bound to the new storage once that
        holds our commit index: two consecutive configurations then always
        share a voter whose storage is the same in both, as single-server
        changes need. One change at a time, once we committed in our term.
        """
        if (
            self.role is not Role.LEADER
            or self.transferee is not None
            or self.log.config_index() > self.commit
            or self.log.term_at(self.commit) != self.term
        ):
            return
        cfg = self.log.config()
        for nid in sorted(cfg.voters):
            change = self._seat_change(nid, cfg)
            if change is not None:
                storage = change.bound_storage()
                what = f"bind to storage {storage}" if storage else "vacate"
                self._log(f"{what} the seat of {nid}")
                self._append_new(EntryKind.CONFIG, change.encode())
                return

    def _can_commit_under(self, cfg: Configuration) -> bool:
        """Return True when the voters of ``cfg`` we heard from lately, counted
        by its seats, make a majority of it."""
        present = 0
        for v in cfg.voters:
            bound = cfg.storage_of(v)
            if v == self.id:
                storage, heard = self.storage_id, True
            else:
                pr = self.progress.get(v)
                if pr is None:
                    continue
                # answered within an election timeout (recent_active is reset
                # each timeout for CheckQuorum, so it may be briefly false)
                heard = pr.heard_tick >= 0 and self.ticks - pr.heard_tick <= self.cfg.election_ticks
                storage = pr.storage_id
            if heard and (bound is None or (bound != 0 and bound == storage)):
                present += 1
        return present >= majority(len(cfg.voters))

    def _seat_change(self, nid: NodeId, cfg: Configuration) -> ConfChange | None:
        bound = cfg.storage_of(nid)
        if nid == self.id:
            storage, honest, caught_up = self.storage_id, True, True
        else:
            pr = self.progress.get(nid)
            if pr is None:
                return None
            storage, honest = pr.storage_id, not pr.abstaining
            # it holds the latest configuration entry (when vacant: the one
            # that vacated its seat); an empty voter would be safe, but slow
            caught_up = pr.state is ProgressState.REPLICATE and pr.match >= self.log.config_index()
        if not storage or bound == storage:
            return None
        if bound is None:
            return ConfChange.bind(nid, storage) if honest and caught_up else None
        if bound == 0:
            return ConfChange.bind(nid, storage) if caught_up else None
        if storage > bound:
            return ConfChange.bind(nid, 0)
        return None  # a lost storage's late answer

    def _seat_names_a_later_storage(self) -> None:
        """Take an identity above the one our seat names, if that is above ours.

        Such a seat names a storage of ours that was lost (a clock that went
        back made the new one's identity smaller): with a larger one, the
        leader vacates that seat and binds it again to this storage.
        """
        bound = self.log.config().storage_of(self.id)
        if bound is not None and bound > self.storage_id:
            self.storage_id = min(bound + 1, MAX_STORAGE_ID)
            self.abstaining = True
            self._log(f"storage identity raised to {self.storage_id} above our seat's; abstaining")

    def _seat_committed(self) -> None:
        """Stop abstaining once a committed configuration binds our storage."""
        if (
            self.abstaining
            and self.storage_id
            and self.log.config_at(self.commit).storage_of(self.id) == self.storage_id
        ):
            self._log(f"seat bound to storage {self.storage_id}: voting again")
            self.abstaining = False

    # ================================================================ helpers

    def _send(self, m: Message) -> None:
        # A leader's messages may leave before its own write of new entries,
        # but never before the term and vote they carry are durable.
        hs = self._persisted_hs
        if (
            isinstance(m, _LEADER_MESSAGES)
            and hs.term == self.term
            and hs.voted_for == self.voted_for
        ):
            self._msgs.append(m)
        else:
            self._msgs_after.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for, self.commit, self.abstaining, self.storage_id)

    def _soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader_id, self.term)

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self.randomized_timeout = e + self._rng.randrange(e)
        self._gone = None

    def _log(self, line: str) -> None:
        self._log_line(f"{self.id} [term {self.term}] {line}")
