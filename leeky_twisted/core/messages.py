"""Plain data exchanged between the Raft core, its peers and the node service.

Every type here is a frozen dataclass holding exactly what a transport must
encode; nothing here refers to sockets, clocks or Twisted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NewType

NodeId = NewType("NodeId", str)

#: The largest term any message, entry, snapshot or saved hard state may carry.
#: Every wire and disk format holds 64 bits, so a node can always go on to
#: ``term + 1``; anything above is refused where it is decoded.
MAX_TERM = 2**63 - 1
#: The largest log index (and commit index, match index, rejection hint, read
#: round, count) a message or file may carry: far past anything a log reaches
#: (2**62 entries), far below what the formats can hold.
MAX_INDEX = 2**62

#: The largest storage identity (see :attr:`HardState.storage_id`).
MAX_STORAGE_ID = 2**62

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
    #: name the storage a voter's answers count from (the context holds its
    #: identity in decimal; 0 vacates the seat until a storage is named again)
    BIND_STORAGE = 3


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
    def bind(cls, node_id: NodeId, storage: int) -> ConfChange:
        """Return the change naming ``storage`` as ``node_id``'s (0: vacate its seat)."""
        return cls(ConfChangeOp.BIND_STORAGE, node_id, str(storage).encode("ascii"))

    def bound_storage(self) -> int:
        """Return the identity a BIND_STORAGE change names; ValueError if malformed."""
        text = self.context.decode("ascii", "replace")
        if not text.isdigit() or len(text) > 20:
            raise ValueError(f"bad storage identity {text!r:.40}")
        storage = int(text)
        if storage > MAX_STORAGE_ID:
            raise ValueError(f"storage identity {storage} out of range")
        return storage

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
    """The voters and learners of the cluster. Learners replicate but never vote.

    ``storage`` names, for each voter it lists, the storage identity whose
    votes and acknowledgements count for that voter (0: none, the seat is
    vacant). A voter it does not list is unbound: its answers count by the
    abstention rules (docs/core.md, "A node that lost its storage").
    """

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()
    storage: tuple[tuple[NodeId, int], ...] = ()

    def members(self) -> frozenset[NodeId]:
        """Return every node that receives the log."""
        return self.voters | self.learners

    def storage_of(self, nid: NodeId) -> int | None:
        """Return the identity bound to voter ``nid`` (0: vacant), None if unbound."""
        for node, storage in self.storage:
            if node == nid:
                return storage
        return None

    def apply(self, change: ConfChange) -> Configuration:
        """Return the configuration after ``change``; raise ValueError if it is a no-op."""
        nid = change.node_id
        if change.op is ConfChangeOp.ADD_LEARNER:
            if nid in self.voters or nid in self.learners:
                raise ValueError(f"{nid} is already a member")
            return Configuration(self.voters, self.learners | {nid}, self.storage)
        if change.op is ConfChangeOp.ADD_VOTER:
            if nid in self.voters:
                raise ValueError(f"{nid} is already a voter")
            return Configuration(self.voters | {nid}, self.learners - {nid}, self.storage)
        if change.op is ConfChangeOp.BIND_STORAGE:
            return self._bind(nid, change.bound_storage())
        if nid not in self.voters and nid not in self.learners:
            raise ValueError(f"{nid} is not a member")
        voters = self.voters - {nid}
        if not voters:
            raise ValueError("cannot remove the last voter")
        storage = tuple(pair for pair in self.storage if pair[0] != nid)
        return Configuration(voters, self.learners - {nid}, storage)

    def _bind(self, nid: NodeId, storage: int) -> Configuration:
        if nid not in self.voters:
            raise ValueError(f"{nid} is not a voter")
        current = self.storage_of(nid)
        if current == storage:
            raise ValueError(f"{nid} is already bound to {storage}")
        if current and storage:
            # The old and the new storage's majorities need not overlap:
            # vacate the seat first, so no majority counts either in between.
            raise ValueError(f"vacate {nid}'s seat before naming another storage")
        pairs = [pair for pair in self.storage if pair[0] != nid] + [(nid, storage)]
        return Configuration(self.voters, self.learners, tuple(sorted(pairs)))


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
    #: this data folder's identity, chosen when it was created (0: none yet).
    #: A node's answers carry it, so a leader can tell the acknowledgements of
    #: a lost disk from those of the empty one that replaced it. A later
    #: storage has a larger identity.
    storage_id: int = 0
    #: written with ``abstaining`` still set, before the entries that end the
    #: abstention: once the log holds this index in ``term``, it has ended (a
    #: crash between the two writes does not leave the node abstaining). 0: none.
    caught_up: int = 0


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
    #: the sender's storage identity (:attr:`HardState.storage_id`): a new
    #: leader knows its voters' storage before its first append
    storage: int = 0
    #: the sender abstains (its storage started empty and has not caught up):
    #: its grant may come from a log that lost entries (see ``vote_result``)
    abstaining: bool = False


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
    #: the recipient's storage identity as the leader knows it (0: none yet)
    to_storage: int = 0


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
    #: the sender's storage identity (:attr:`HardState.storage_id`)
    storage: int = 0
    #: the sender abstains: its acknowledgements need one more (``committed_index``)
    abstaining: bool = False
    #: the sender has local consumers waiting for commits (watches): the leader
    #: tells it each new commit index at once instead of shortly after
    eager: bool = False


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
    #: the sender's storage identity (:attr:`HardState.storage_id`)
    storage: int = 0
    #: the sender abstains: the leader answers with an append that can end it
    abstaining: bool = False
    #: as :attr:`AppendEntriesResponse.eager`
    eager: bool = False


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


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asks its leader for a read index for a batch of reads (§6.4)."""

    sender: NodeId
    recipient: NodeId
    term: int
    #: the follower's number for the batch (random start per process: an answer
    #: meant for an earlier run of the follower never matches)
    request: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: the batch ``request`` may be served once applied up to ``index``."""

    sender: NodeId
    recipient: NodeId
    term: int
    request: int
    index: int


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
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
    ReadIndexRequest,
    ReadIndexResponse,
)


def _first_error(checks: tuple[tuple[object, int, str], ...]) -> str | None:
    for value, limit, what in checks:
        if type(value) is not int or not 0 <= value <= limit:
            return f"{what} {value!r} outside [0, {limit}]"
    return None


def entries_error(
    entries: tuple[Entry, ...], prev_log_index: int, prev_log_term: int, term: int
) -> str | None:
    """Return why ``entries`` cannot follow (prev_log_index, prev_log_term) in ``term``, or None.

    Entries must be consecutive from ``prev_log_index + 1`` and at most
    MAX_INDEX, their terms non-decreasing, at least ``prev_log_term`` and at
    most ``term`` (a leader's log never holds an entry of a later term, §5.3).
    """
    expected = prev_log_index + 1
    floor = prev_log_term
    for entry in entries:
        entry_term = entry.term
        if entry.index != expected:
            return f"entry index {entry.index!r} where {expected} was expected"
        if type(entry_term) is not int or not floor <= entry_term <= term:
            return f"entry {expected} has term {entry_term!r} outside [{floor}, {term}]"
        floor = entry_term
        expected += 1
    if expected - 1 > MAX_INDEX:
        return f"entry index {expected - 1} above {MAX_INDEX}"
    return None


def _append_entries_error(m: AppendEntries) -> str | None:
    term = m.term
    if not (
        0 <= m.prev_log_index <= MAX_INDEX
        and 0 <= m.prev_log_term <= term
        and 0 <= m.leader_commit <= MAX_INDEX
        and 0 <= m.to_storage <= MAX_STORAGE_ID
    ):
        return _first_error(
            (
                (m.prev_log_index, MAX_INDEX, "prev_log_index"),
                (m.prev_log_term, term, "prev_log_term"),
                (m.leader_commit, MAX_INDEX, "leader_commit"),
                (m.to_storage, MAX_STORAGE_ID, "to_storage"),
            )
        )
    return entries_error(m.entries, m.prev_log_index, m.prev_log_term, term)


def _append_entries_response_error(m: AppendEntriesResponse) -> str | None:
    return _first_error(
        (
            (m.match_index, MAX_INDEX, "match_index"),
            (m.reject_index, MAX_INDEX, "reject_index"),
            (m.conflict_term, MAX_TERM, "conflict_term"),
            (m.conflict_index, MAX_INDEX, "conflict_index"),
            (m.storage, MAX_STORAGE_ID, "storage"),
        )
    )


def _heartbeat_error(m: Heartbeat) -> str | None:
    if 0 <= m.commit <= MAX_INDEX and 0 <= m.read_round <= MAX_INDEX:
        return None
    return _first_error(((m.commit, MAX_INDEX, "commit"), (m.read_round, MAX_INDEX, "read_round")))


def _heartbeat_response_error(m: HeartbeatResponse) -> str | None:
    if (
        0 <= m.read_round <= MAX_INDEX
        and 0 <= m.last_log_index <= MAX_INDEX
        and 0 <= m.storage <= MAX_STORAGE_ID
    ):
        return None
    return _first_error(
        (
            (m.read_round, MAX_INDEX, "read_round"),
            (m.last_log_index, MAX_INDEX, "last_log_index"),
            (m.storage, MAX_STORAGE_ID, "storage"),
        )
    )


def _request_vote_error(m: RequestVote) -> str | None:
    return _first_error(
        (
            (m.last_log_index, MAX_INDEX, "last_log_index"),
            (m.last_log_term, m.term, "last_log_term"),
        )
    )


def _request_vote_response_error(m: RequestVoteResponse) -> str | None:
    return _first_error(((m.storage, MAX_STORAGE_ID, "storage"),))


def _install_snapshot_error(m: InstallSnapshot) -> str | None:
    meta = m.meta
    return _first_error(
        ((meta.index, MAX_INDEX, "snapshot index"), (meta.term, m.term, "snapshot term"))
    )


def _no_error(m: object) -> str | None:
    return None


#: a follower's batch number for its read-index requests: [1, MAX_READ_REQUEST]
MAX_READ_REQUEST = 2**63 - 1


def _read_index_request_error(m: ReadIndexRequest) -> str | None:
    if type(m.request) is int and 0 < m.request <= MAX_READ_REQUEST:
        return None
    return f"request {m.request!r} outside [1, {MAX_READ_REQUEST}]"


def _read_index_response_error(m: ReadIndexResponse) -> str | None:
    if type(m.request) is not int or not 0 < m.request <= MAX_READ_REQUEST:
        return f"request {m.request!r} outside [1, {MAX_READ_REQUEST}]"
    return _first_error(((m.index, MAX_INDEX, "index"),))


_BOUNDS: dict[type, Callable[[Any], str | None]] = {
    AppendEntries: _append_entries_error,
    AppendEntriesResponse: _append_entries_response_error,
    Heartbeat: _heartbeat_error,
    HeartbeatResponse: _heartbeat_response_error,
    RequestVote: _request_vote_error,
    RequestVoteResponse: _request_vote_response_error,
    InstallSnapshot: _install_snapshot_error,
    TimeoutNow: _no_error,
    ReadIndexRequest: _read_index_request_error,
    ReadIndexResponse: _read_index_response_error,
}


def bounds_error(message: Message) -> str | None:
    """Return why ``message`` holds a value no valid peer sends, or None when it is in bounds.

    Terms lie in [0, MAX_TERM]; indexes, commit and match indexes, rejection
    hints and read rounds in [0, MAX_INDEX]. The other terms a message names
    (a candidate's last log term, prev_log_term, a snapshot's term) are at
    most its own term, and AppendEntries entries obey :func:`entries_error`.
    Pure and cheap (well under a microsecond for most messages): the
    transport calls it on every decoded message, and the core may call it on
    every message it steps.
    """
    term = message.term
    if type(term) is not int or not 0 <= term <= MAX_TERM:
        return f"term {term!r} outside [0, {MAX_TERM}]"
    check = _BOUNDS.get(type(message))
    if check is None:
        return f"not a core message: {type(message).__name__}"
    try:
        return check(message)
    except TypeError as e:  # a field that is not a number at all
        return f"malformed {type(message).__name__}: {e}"


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
