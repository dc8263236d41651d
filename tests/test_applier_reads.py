"""A safe read is answered straight into its Deferred, as ``query`` would answer it."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from leeky_twisted.server.applier import LocalApplier
from leeky_twisted.server.pending import PendingRequests


class _Machine:
    """A state machine whose ``query`` answers, raises or defers by request."""

    def __init__(self) -> None:
        self.later: Deferred[Any] = Deferred()

    def query(self, request: object) -> object:
        if request == "boom":
            raise TypeError("not a query")
        if request == "later":
            return self.later
        return f"value of {request}"


def _outcome(d: Deferred[Any]) -> list[Any]:
    got: list[Any] = []
    d.addBoth(got.append)
    return got


def _served(applier: LocalApplier, request: object) -> list[Any]:
    pending = PendingRequests()
    ctx = pending.next_read_id()
    got = _outcome(pending.add_read(ctx, request, deadline=9.0))
    pending.read_ready(1, ctx)
    pending.serve_reads(1, applier.answer_into)
    return got


def test_a_served_read_gets_the_state_machines_answer():
    """The read's Deferred fires with the value, in the same call."""
    assert _served(LocalApplier(_Machine()), "k") == ["value of k"]  # type: ignore[arg-type]


def test_a_query_that_raises_fails_the_read_with_its_exception():
    """A state machine that raises fails that read alone, with its own exception."""
    got = _served(LocalApplier(_Machine()), "boom")  # type: ignore[arg-type]
    assert len(got) == 1 and got[0].check(TypeError)
    got[0].trap(TypeError)


def test_a_deferred_answer_reaches_the_read_when_it_fires():
    """A state machine may answer later: the read waits for it."""
    machine = _Machine()
    got = _served(LocalApplier(machine), "later")  # type: ignore[arg-type]
    assert got == []
    machine.later.callback("late value")
    assert got == ["late value"]


def test_answer_into_matches_query_for_each_outcome():
    """answer_into gives the outcome query().chainDeferred() gives."""
    for request in ("k", "boom"):
        applier = LocalApplier(_Machine())  # type: ignore[arg-type]
        direct: Deferred[Any] = Deferred()
        chained: Deferred[Any] = Deferred()
        got_direct, got_chained = _outcome(direct), _outcome(chained)
        applier.answer_into(request, direct)
        applier.query(request).chainDeferred(chained)
        if request == "k":
            assert got_direct == got_chained == ["value of k"]
        else:
            assert type(got_direct[0].value) is type(got_chained[0].value) is TypeError
            for f in (got_direct[0], got_chained[0]):
                f.trap(TypeError)
