"""The boundaries of Leeky Raft, as zope interfaces.

Storage interfaces are synchronous and may block: the node service calls the
writing methods from one writer thread, never from the reactor thread, while
the reactor thread may read. Only the transport returns Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

from leeky_twisted.core.messages import ConfChange, Configuration, NodeId, Role

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class ILogStore(Interface):
    """Durable, append-only storage of log entries (``core.messages.Entry``)."""

    def first_index() -> int:
        """Return the index of the first stored entry, or last_index()+1 when empty."""

    def last_index() -> int:
        """Return the index of the last stored entry, or first_index()-1 when empty."""

    def entries(lo: int, hi: int) -> list[Any]:
        """Return stored entries with lo <= index < hi, in order.

        Raises IndexError when part of the range is compacted or missing.
        """

    def append(entries: Sequence[Any]) -> None:
        """Store ``entries`` (consecutive indexes); durable when this returns.

        An entry at index i replaces every stored entry with index >= i; the
        first entry's index must be at most last_index()+1.
        """

    def compact(upto: int) -> None:
        """Drop entries with index <= ``upto`` (they are covered by a snapshot).

        After compaction an empty log starts at ``upto + 1``.
        """

    def reset(next_index: int) -> None:
        """Drop every entry; the next appended entry will be ``next_index``."""

    def close() -> None:
        """Release files; further calls are errors."""


class IStableStore(Interface):
    """Durable storage of the core's ``HardState`` (term, voted_for, commit)."""

    def load() -> object:
        """Return the last saved HardState, or HardState() when none was saved."""

    def save(hard_state: object) -> None:
        """Save ``hard_state``; durable (fsynced) when this returns."""

    def close() -> None:
        """Release files."""


class ISnapshotSink(Interface):
    """A snapshot being written; nothing is visible until ``close``."""

    def write(data: bytes) -> None:
        """Append ``data`` to the snapshot."""

    def close() -> None:
        """Make the snapshot durable and visible (fsync, atomic rename)."""

    def cancel() -> None:
        """Discard everything written."""


class ISnapshotStore(Interface):
    """Durable snapshots, each with its metadata (``core.messages.SnapshotMeta``)."""

    def create(meta: object) -> ISnapshotSink:
        """Start writing a snapshot described by ``meta``."""

    def latest() -> object:
        """Return the meta of the newest valid snapshot, or None.

        Corrupt or half-written snapshots are skipped in favour of older ones.
        """

    def open(index: int) -> bytes:
        """Return the verified data of the snapshot at ``index``.

        Raises KeyError when there is none, ValueError when it is corrupt.
        """


class IStateMachine(Interface):
    """The replicated application. Must be deterministic: no clock, I/O or randomness."""

    def apply(index: int, command: bytes) -> object:
        """Apply the committed ``command`` at log ``index`` and return its result."""

    def query(request: object) -> object:
        """Answer a read-only request from the current state."""

    def snapshot() -> bytes:
        """Return a consistent serialized copy of the whole state."""

    def restore(data: bytes) -> None:
        """Replace the whole state with one produced by ``snapshot``."""


class IPeerTransport(Interface):
    """Carries core messages between Raft peers. Delivery is best effort."""

    def send(message: Any) -> None:
        """Send ``message`` (as :meth:`set_receiver` says) to ``message.recipient``;
        never raises, may drop."""

    def set_receiver(receiver: Callable[[Any], None]) -> None:
        """Deliver every incoming message by calling ``receiver(message)``.

        A message is a core message, or a notice only the node reads
        (``transport/notices.py``: this layer cannot name its type).
        """

    def close() -> object:
        """Close every connection; return a Deferred that fires when done."""


class IMembership(Interface):
    """Advisory knowledge of who is out there and alive. Never decides quorum."""

    def members() -> dict[str, Any]:
        """Return a mapping of node id to member record (address, state, incarnation)."""

    def subscribe(listener: object) -> None:
        """Call ``listener(member)`` whenever a member's state changes."""


@dataclass(frozen=True)
class FollowerProgress:
    """The leader's view of one follower's replication."""

    match: int  #: the highest index known to be on the follower
    next: int  #: the next index the leader sends it
    state: str  #: "probe", "replicate" or "snapshot"
    inflight: int  #: AppendEntries sent and not yet acknowledged
    max_inflight: int  #: the window of unacknowledged AppendEntries


@dataclass(frozen=True)
class NodeView:
    """A consistent, immutable view of one node's Raft state, for operators and autopilot."""

    node_id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit: int
    applied: int
    first_index: int
    last_index: int
    configuration: Configuration
    #: a configuration entry is in the log and not yet committed
    config_change_pending: bool
    #: the leader's view of each member (empty unless this node leads)
    progress: Mapping[NodeId, FollowerProgress]


class IRaftNode(Interface):
    """Everything the API, metrics, dashboard and autopilot may use of a running node.

    Callers reach the node only through these members: no ``getattr`` probing
    and no reaching into its core. Optional capabilities are declared here as
    members that answer ``None`` (or empty) when the node lacks them.
    """

    node_id = Attribute("This node's id (str).")
    stopped = Attribute("True once the node has stopped (or stopped itself).")
    addresses = Attribute(
        "The address book, read only for callers: node id -> {'peer', 'client', 'http'}."
    )
    membership = Attribute("Capability: the IMembership (gossip) the node runs, or None.")

    def propose(command: bytes, timeout: float) -> Deferred[Any]:
        """Replicate ``command``; Deferred firing with the state machine's result.

        Errbacks with NotLeader (carrying the leader id/address when known) or
        CommitTimeout ("timed out, outcome unknown").
        """

    def read(request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        """Answer a read-only query; ReadIndex first when ``linearizable``."""

    def status() -> NodeStatus:
        """Return the node's status as an immutable value (``to_json()`` for the wire)."""

    def view() -> NodeView:
        """Return the node's Raft state as an immutable value object."""

    def progress() -> Mapping[NodeId, FollowerProgress]:
        """Return the leader's view of each member (itself too); empty unless leading."""

    def role_name() -> str:
        """Return the role as users see it: leader, follower, candidate, learner or removed."""

    def removed() -> Exception | None:
        """Return the error every client request gets since this node was removed, or None.

        (A ``protocol.errors.Removed``; a removed node refuses every client request with it.)
        """

    def on_removed(observer: Callable[[Exception], None]) -> None:
        """Call ``observer(error)`` each time this node learns it was removed (``error`` is
        what :meth:`removed` returns then), so what is open on it (watches) can end."""

    def local_state_machine() -> IStateMachine | None:
        """Capability: the in-process state machine, or None when an executor applies."""

    def want_eager_commits(wanted: bool) -> None:
        """Say whether local consumers (watches) wait for each commit: a follower
        then asks its leader for each new commit index at once."""

    def members() -> list[dict[str, Any]]:
        """Return every node this node knows of: Raft role, gossip state, addresses
        (and, where known, ``this_node``, ``reachable``, ``last_contact``)."""

    def address_of(node_id: NodeId) -> dict[str, str]:
        """Return what is known of a node's addresses (peer, client, http)."""

    def propose_config_change(change: ConfChange, timeout: float) -> Deferred[Any]:
        """Replicate one configuration change; Deferred firing once it is applied."""

    def add_server(node_id: str, address: str | None, voter: bool) -> Deferred[Any]:
        """Add a learner or voter (a voter joins as learner first); leader only."""

    def remove_server(node_id: str) -> Deferred[Any]:
        """Remove a member from the configuration; leader only."""

    def transfer_leader(node_id: str) -> None:
        """Start handing leadership to ``node_id``; raise NotLeader or InvalidRequest."""


@dataclass(frozen=True)
class ExecutorStatus:
    """How a node's remote executor keeps up with the log."""

    applied_index: int  #: the last index the executor has applied
    lag: int  #: committed entries it has not applied yet
    reachable: bool  #: its last call succeeded
    failures: int  #: calls that failed in a row
    error: str | None  #: the last failure, if any


@dataclass(frozen=True)
class NodeStatus:
    """What ``leekyraft status`` shows of one node: a consistent, immutable reading."""

    node_id: NodeId
    role: str = "follower"  #: as users see it: leader, follower, candidate, learner, removed
    term: int = 0
    leader: NodeId | None = None
    address: str | None = None  #: this node's peer address
    client_address: str | None = None
    http_address: str | None = None
    leader_address: str | None = None  #: the leader's client address, when known
    commit_index: int = 0
    applied_index: int = 0
    first_index: int = 1
    last_index: int = 0
    log_entries: int = 0  #: entries held in the log (not compacted)
    snapshot_index: int = 0
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    storage_id: int = 0
    abstaining: bool = False
    #: each voter's seat: the storage its votes count from (0: vacant)
    seats: Mapping[str, int] = field(default_factory=dict)
    leader_changes: int = 0
    elections: int = 0
    pending_requests: int = 0
    pending_reads: int = 0
    #: counters of the Ready loop (readies, persists, applied, ...)
    stats: Mapping[str, float] = field(default_factory=dict)
    executor: ExecutorStatus | None = None  #: when a remote executor applies

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object of ``leekyraft status --json`` (its keys are a contract)."""
        out: dict[str, Any] = {
            "id": self.node_id,
            "address": self.address,
            "client_address": self.client_address,
            "http_address": self.http_address,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "leader_address": self.leader_address,
            "commit_index": self.commit_index,
            "applied_index": self.applied_index,
            "first_index": self.first_index,
            "last_index": self.last_index,
            "log_entries": self.log_entries,
            "snapshot_index": self.snapshot_index,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "storage_id": self.storage_id,
            "abstaining": self.abstaining,
            "seats": dict(self.seats),
            "leader_changes": self.leader_changes,
            "elections": self.elections,
            "pending_requests": self.pending_requests,
            "pending_reads": self.pending_reads,
            "stats": dict(self.stats),
        }
        ex = self.executor
        if ex is not None:
            out["executor_applied_index"] = ex.applied_index
            out["executor_lag"] = ex.lag
            out["executor_reachable"] = ex.reachable
            out["executor_failures"] = ex.failures
            out["executor_error"] = ex.error
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeStatus:
        """Return the status a :meth:`to_json` object describes (missing keys: defaults)."""
        executor = None
        if "executor_applied_index" in data:
            executor = ExecutorStatus(
                applied_index=int(data["executor_applied_index"]),
                lag=int(data.get("executor_lag") or 0),
                reachable=bool(data.get("executor_reachable")),
                failures=int(data.get("executor_failures") or 0),
                error=data.get("executor_error"),
            )
        special = {"node_id", "leader", "voters", "learners", "executor"}
        known = {f.name for f in fields(cls)} - special
        values = {k: v for k, v in data.items() if k in known}
        leader = data.get("leader")
        return cls(
            node_id=NodeId(str(data.get("id", ""))),
            leader=NodeId(str(leader)) if leader is not None else None,
            voters=tuple(NodeId(str(v)) for v in data.get("voters") or ()),
            learners=tuple(NodeId(str(v)) for v in data.get("learners") or ()),
            executor=executor,
            **values,
        )
