"""Tuning of the Raft core, in ticks and bytes, validated when built."""

from __future__ import annotations

from dataclasses import dataclass

from leeky_twisted.core.messages import NodeId


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Settings of one :class:`~leeky_twisted.core.raft.RaftCore`.

    ``election_ticks`` is the minimum election timeout; each follower draws its
    timeout from [election_ticks, 2 * election_ticks) with the injected RNG.
    """

    node_id: NodeId
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_inflight: int = 64  #: AppendEntries messages in flight per follower
    max_msg_bytes: int = 512 * 1024  #: entries bytes per AppendEntries
    max_apply_bytes: int = 4 * 1024 * 1024  #: committed entries bytes per Ready
    snapshot_retry_ticks: int = 100  #: resend an unanswered InstallSnapshot after this
    pre_vote: bool = True
    check_quorum: bool = True
    lease_read: bool = False  #: serve reads on a lease; relies on bounded clock drift
    #: a follower serves linearizable reads itself, asking its leader for a read index
    follower_reads: bool = True

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must be a non-empty string")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        if self.max_msg_bytes < 1 or self.max_apply_bytes < 1:
            raise ValueError("byte limits must be positive")
        if self.lease_read and not self.check_quorum:
            raise ValueError("lease_read needs check_quorum")
