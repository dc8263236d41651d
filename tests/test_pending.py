"""PendingRequests: every waiting request ends in a result, an error, or a timeout."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from leeky_twisted.protocol.errors import CommitTimeout, NotCommitted, Unavailable
from leeky_twisted.server.pending import PendingRequests


def outcome(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_a_proposal_is_answered_with_its_result_or_told_it_was_replaced():
    """answer() fires the waiter of the same term; another term's entry means replaced."""
    p = PendingRequests()
    ok = outcome(p.wait_for(5, 2, deadline=10.0))
    old = outcome(p.wait_for(6, 2, deadline=10.0))
    p.answer(5, 2, "result")
    p.answer(6, 3, None)  # a new leader's entry took index 6
    assert ok == ["result"]
    assert old[0].check(NotCommitted)
    assert not p.waiters


def test_a_second_proposal_at_an_index_replaces_the_first():
    """The older waiter at the same index learns its entry was replaced."""
    p = PendingRequests()
    first = outcome(p.wait_for(4, 1, deadline=10.0))
    second = outcome(p.wait_for(4, 2, deadline=10.0))
    assert first[0].check(NotCommitted) and second == []
    p.answer(4, 2, "ok")
    assert second == ["ok"]


def test_deadlines_fail_what_still_waits_and_spare_the_rest():
    """expire(now) times out requests past their deadline (swept in arrival order)."""
    p = PendingRequests()
    late = outcome(p.wait_for(1, 1, deadline=1.0))
    ctx = p.next_read_id()
    read = outcome(p.add_read(ctx, "q", deadline=2.0))
    later = outcome(p.wait_for(2, 1, deadline=5.0))
    p.expire(3.0)
    assert late[0].check(CommitTimeout) and read[0].check(CommitTimeout)
    assert later == [] and 2 in p.waiters


def test_an_expired_deadline_spares_a_later_request_at_the_same_index():
    """A deadline belongs to its request: a newer one at that index keeps waiting."""
    p = PendingRequests()
    p.wait_for(3, 1, deadline=1.0).addErrback(lambda f: None)
    newer = outcome(p.wait_for(3, 2, deadline=9.0))
    p.expire(2.0)
    assert newer == [] and 3 in p.waiters


def test_reads_are_served_once_their_index_is_applied():
    """serve_reads() answers the safe reads the applied index reaches, and keeps the rest."""
    p = PendingRequests()
    a, b = p.next_read_id(), p.next_read_id()
    got_a = outcome(p.add_read(a, "a", deadline=9.0))
    got_b = outcome(p.add_read(b, "b", deadline=9.0))
    p.read_ready(3, a)
    p.read_ready(8, b)
    p.serve_reads(5, lambda request, d: succeed(f"answer {request}").chainDeferred(d))
    assert got_a == ["answer a"] and got_b == []
    assert p.ready_reads == [(8, b)]


def test_fail_all_ends_every_request_when_the_node_stops():
    """A stopping node fails proposals as outcome unknown and reads as unavailable."""
    p = PendingRequests()
    w = outcome(p.wait_for(1, 1, deadline=9.0))
    r = outcome(p.add_read(p.next_read_id(), "q", deadline=9.0))
    p.fail_all("node stopped")
    assert w[0].check(CommitTimeout) and r[0].check(Unavailable)
    assert not p.waiters and not p.reads
