"""Majority arithmetic, as pure functions."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

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


def vote_result(
    voters: Iterable[NodeId],
    votes: Mapping[NodeId, bool],
    abstaining: Container[NodeId] = (),
) -> bool | None:
    """Return True when the election is won, False when it is lost, else None.

    ``abstaining`` names voters whose storage started empty and has not caught
    up since: one of them may have lost what it voted and acknowledged. A win
    needs grants that are still a majority when one such grant is set aside:
    those honest grants then overlap every majority of this configuration and
    of any one change away (it may hold a change this candidate lacks). With
    one voter, its own grant is enough: a lone voter's lost disk is total loss.
    """
    voters = list(voters)
    n = len(voters)
    need = majority(n)
    honest_need = need if n > 1 else 1
    granted = [v for v in voters if votes.get(v) is True]
    rejected = sum(1 for v in voters if votes.get(v) is False)
    doubtful = 1 if n > 1 and any(v in abstaining for v in granted) else 0
    if len(granted) >= need and len(granted) - doubtful >= honest_need:
        return True
    possible = n - rejected
    if possible < need or possible - doubtful < honest_need:
        return False
    return None
