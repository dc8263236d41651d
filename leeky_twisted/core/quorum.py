"""Majority arithmetic, as pure functions."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from leeky_twisted.core.messages import NodeId


def majority(n: int) -> int:
    """Return the number of votes that make a majority of ``n`` voters."""
    return n // 2 + 1


def committed_index(
    voters: Iterable[NodeId],
    match: Mapping[NodeId, int],
    abstaining: Container[NodeId] = (),
) -> int:
    """Return the highest index stored on a majority of ``voters``.

    ``match`` maps a voter to the last index known durable on it; missing
    voters count as 0. With no voters the answer is 0. As for votes, a set
    that holds an ``abstaining`` voter must be a majority without one of them
    (see :func:`vote_result`): one of them may be a lost storage's stand-in.
    """
    ranked = sorted(((match.get(v, 0), v) for v in voters), reverse=True)
    n = len(ranked)
    if not n:
        return 0
    need = majority(n)
    doubtful = n > 1 and any(v in abstaining for _, v in ranked[:need])
    k = need + 1 if doubtful else need
    if k > n:
        return 0
    return ranked[k - 1][0]


def quorum_of(
    voters: Iterable[NodeId], members: Container[NodeId], abstaining: Container[NodeId] = ()
) -> bool:
    """Return True when ``members`` hold a majority of ``voters``, one abstaining one set aside."""
    voters = list(voters)
    n = len(voters)
    present = [v for v in voters if v in members]
    doubtful = 1 if n > 1 and any(v in abstaining for v in present) else 0
    return len(present) - doubtful >= majority(n)


def vote_result(
    voters: Iterable[NodeId],
    votes: Mapping[NodeId, bool],
    abstaining: Container[NodeId] = (),
    alone_counts: bool = True,
) -> bool | None:
    """Return True when the election is won, False when it is lost, else None.

    ``abstaining`` names voters whose storage started empty and has not caught
    up since: one of them may have lost what it voted and acknowledged. A win
    needs grants that are still a majority when one such grant is set aside:
    those honest grants then overlap every majority of this configuration and
    of any one change away (it may hold a change this candidate lacks). With
    one voter, its own grant is enough when ``alone_counts`` (the voter founded
    the cluster alone: a lost disk there is total loss); a lone voter that
    joined and abstains may hold only the start of a larger cluster's log.
    """
    voters = list(voters)
    n = len(voters)
    need = majority(n)
    honest_need = need
    granted = [v for v in voters if votes.get(v) is True]
    rejected = sum(1 for v in voters if votes.get(v) is False)
    doubtful = 1 if (n > 1 or not alone_counts) and any(v in abstaining for v in granted) else 0
    if len(granted) >= need and len(granted) - doubtful >= honest_need:
        return True
    possible = n - rejected
    if possible < need or possible - doubtful < honest_need:
        return False
    return None
