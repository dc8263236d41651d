"""Majority arithmetic, as pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from leeky_twisted.core.messages import NodeId


def majority(n: int) -> int:
    """Return the number of votes that make a majority of ``n`` voters."""
    return n // 2 + 1


def committed_index(voters: Iterable[NodeId], match: Mapping[NodeId, int]) -> int:
    """Return the highest index stored on a majority of ``voters``.

    ``match`` maps a voter to the last index known durable on it; missing
    voters count as 0. With no voters the answer is 0.
    """
    indexes = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not indexes:
        return 0
    return indexes[majority(len(indexes)) - 1]


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> bool | None:
    """Return True when a majority granted, False when a majority is lost, else None."""
    voters = list(voters)
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return True
    if len(voters) - rejected < need:
        return False
    return None
