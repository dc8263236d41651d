"""Plain data exchanged between the Raft core, its peers and the node service.

Every type here is a frozen dataclass holding exactly what a transport must
encode; nothing here refers to sockets, clocks or Twisted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

NodeId = NewType("NodeId", str)


#: The largest term or index a message may carry: one past it cannot be encoded.
MAX_TERM = 2**63 - 1
#: The term of the bootstrap entries every member of a new cluster starts with.
BOOTSTRAP_TERM = 1


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  #: an application command, opaque to the core
    NOOP = 1  #: the empty entry a new leader appends in its term (§8)
    CONFIG = 2  #: a membership change; ``data`` is an encoded :class:`ConfChange`


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry: its position, the term it was created in, and its payload."""

    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Return the approximate encoded size in bytes, for batching bounds."""
        return len(self.data) + 24


class ConfChangeOp(enum.IntEnum):
    """A single-server membership change."""

    ADD_LEARNER = 0
    ADD_VOTER = 1  #: add as voter, or promote a learner to voter
    REMOVE = 2  #: remove a voter or a learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A request to change the membership by one server.

    ``context`` is opaque to the core; the node stores the new member's
    address there so every replica learns it from the log.
    """

    op: ConfChangeOp
    node_id: NodeId
    context: bytes = b""

    def encode(self) -> bytes:
        """Serialize to bytes (the payload of a CONFIG entry)."""
        node = self.node_id.encode("utf-8")
        return bytes([int(self.op), len(node)]) + node + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Parse bytes produced by :meth:`encode`; raise ValueError when malformed."""
        if len(data) < 2:
            raise ValueError("config change too short")
        op = ConfChangeOp(data[0])
        n = data[1]
        if len(data) < 2 + n:
            raise ValueError("config change truncated")
        return cls(op, NodeId(data[2 : 2 + n].decode("utf-8")), bytes(data[2 + n :]))


@dataclass(frozen=True, slots=True)
class Configuration:
    """The voters and learners of the cluster. Learners replicate but never vote."""

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()

    def members(self) -> frozenset[NodeId]:
        """Return every node that receives the log."""
        return self.voters | self.learners

    def apply(self, change: ConfChange) -> Configuration:
        """Return the configuration after ``change``; raise ValueError if it is a no-op."""
        nid = change.node_id
        if change.op is ConfChangeOp.ADD_LEARNER:
            if nid in self.voters or nid in self.learners:
                raise ValueError(f"{nid} is already a member")
            return Configuration(self.voters, self.learners | {nid})
        if change.op is ConfChangeOp.ADD_VOTER:
            if nid in self.voters:
                raise ValueError(f"{nid} is already a voter")
            return Configuration(self.voters | {nid}, self.learners - {nid})
        if nid not in self.voters and nid not in self.learners:
            raise ValueError(f"{nid} is not a member")
        voters = self.voters - {nid}
        if not voters:
            raise ValueError("cannot remove the last voter")
        return Configuration(voters, self.learners - {nid})


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What the core knows about a snapshot: the last index and term it covers
    and the configuration in force at that index. The data lives with the node."""

    index: int
    term: int
    config: Configuration


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be durable before dependent messages are sent (§5.1, Figure 2)."""

    term: int = 0
    voted_for: NodeId | None = None
    commit: int = 0
    #: the storage started empty and has not caught up with a leader since:
    #: the node must not vote (it may have lost votes and acknowledgements)
    abstaining: bool = False


class Role(enum.Enum):
    """The role of a node."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting: the role and who the node thinks leads."""

    role: Role
    leader: NodeId | None
    term: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read that became safe: once ``index`` is applied, serve ``context``."""

    index: int
    context: object


# --------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A (pre-)vote request (§5.2, §9.6 of the dissertation for PreVote).

    For a pre-vote, ``term`` is the term the sender *would* campaign in; no one
    changes term because of it. ``transfer`` is set when the campaign follows a
    TimeoutNow, so voters skip the leader-stickiness check.
    """

    sender: NodeId
    recipient: NodeId
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    """The answer to a :class:`RequestVote`."""

    sender: NodeId
    recipient: NodeId
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Replicate ``entries`` after (prev_log_index, prev_log_term) (§5.3)."""

    sender: NodeId
    recipient: NodeId
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """The answer to :class:`AppendEntries` or :class:`InstallSnapshot`.

    On success ``match_index`` is the last index known to match the leader.
    On rejection, ``reject_index`` is the prev_log_index that failed and
    ``conflict_term``/``conflict_index`` are the fast-backtracking hints: the
    term of the follower's entry at that index (0 if it has none) and the first
    index the follower holds of that term (or its last index + 1).
    """

    sender: NodeId
    recipient: NodeId
    term: int
    success: bool
    match_index: int = 0
    reject_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness plus commit index, and the ReadIndex round it confirms."""

    sender: NodeId
    recipient: NodeId
    term: int
    commit: int
    read_round: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """The answer to :class:`Heartbeat`; echoes ``read_round``."""

    sender: NodeId
    recipient: NodeId
    term: int
    read_round: int = 0
    last_log_index: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Tell a follower to replace its state with the snapshot ``meta`` describes.

    The core carries only the metadata; the node's transport streams the data
    (in chunks) from its snapshot store before delivering this message.
    """

    sender: NodeId
    recipient: NodeId
    term: int
    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: start an election at once, skipping PreVote (§3.10)."""

    sender: NodeId
    recipient: NodeId
    term: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    TimeoutNow,
)


@dataclass(frozen=True, slots=True)
class Ready:
    """A batch of work for the node service, produced by ``RaftCore.ready()``.

    Handle in this order: send ``messages``; persist ``snapshot``, ``entries``
    (an entry at index i replaces every stored entry >= i) and ``hard_state``;
    then send ``messages_after_persist``; apply ``committed_entries`` in order;
    serve ``read_states`` once their index is applied; call ``advance(ready)``.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    soft_state: SoftState | None = None
    dropped_reads: tuple[object, ...] = field(default=())

    def must_persist(self) -> bool:
        """Return True when the batch carries something for durable storage."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None
