"""The boundaries of Leeky Raft, as zope interfaces.

Storage interfaces are synchronous and may block: the node service calls the
writing methods from one writer thread, never from the reactor thread, while
the reactor thread may read. Only the transport returns Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

from leeky_twisted.core.messages import ConfChange, Configuration, Message, NodeId, Role

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

    def send(message: Message) -> None:
        """Send ``message`` to ``message.recipient``; never raises, may drop."""

    def set_receiver(receiver: Callable[[Message], None]) -> None:
        """Deliver every incoming message by calling ``receiver(message)``."""

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

    def status() -> dict[str, Any]:
        """Return a JSON-able status dictionary."""

    def view() -> NodeView:
        """Return the node's Raft state as an immutable value object."""

    def progress() -> Mapping[NodeId, FollowerProgress]:
        """Return the leader's view of each member (itself too); empty unless leading."""

    def role_name() -> str:
        """Return the role as users see it: leader, follower, candidate or learner."""

    def local_state_machine() -> IStateMachine | None:
        """Capability: the in-process state machine, or None when an executor applies."""

    def members() -> list[dict[str, Any]]:
        """Return every node this node knows of: Raft role, gossip state, addresses."""

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
