"""add_server: a new member needs a reachable address; a refused request leaves no trace."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.python.failure import Failure

from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    NodeId,
)
from leeky_twisted.protocol.errors import InvalidRequest, NotLeader
from tests.test_node import lead_by_hand, make_node, outcome, run


def acknowledge(node: Any, transport: Any, peers: tuple[str, ...] = ("2", "3")) -> None:
    """Answer every AppendEntries and Heartbeat sent to ``peers`` so far (all stored)."""
    sent, transport.sent = transport.sent, []
    for m in sent:
        if m.recipient not in peers:
            continue
        if isinstance(m, AppendEntries):
            last = m.prev_log_index + len(m.entries)
            node.receive(AppendEntriesResponse(m.recipient, NodeId("1"), m.term, True, last))
        elif isinstance(m, Heartbeat):
            last = node.core.log.last_index()
            node.receive(HeartbeatResponse(m.recipient, NodeId("1"), m.term, m.read_round, last))


def refused(result: list[Any]) -> str:
    assert len(result) == 1 and isinstance(result[0], Failure), result
    assert result[0].check(InvalidRequest), result[0]
    return str(result[0].value)


@pytest.mark.parametrize("voter", [True, False])
def test_a_new_member_without_a_known_address_is_refused(voter):
    """add-server 4 with no address: refused at once, no entry, no address book row."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    last = node.core.log.last_index()
    message = refused(outcome(node.add_server("4", None, voter)))
    assert "no peer address is known" in message and "add-server 4 HOST:PORT" in message
    run(clock, 0.2)
    assert node.core.log.last_index() == last
    assert NodeId("4") not in node.core.configuration.members()
    assert "4" not in node.addresses


@pytest.mark.parametrize("address", ["nowhere", "host:", ":7004", "host:0", "host:99999", "h:x"])
def test_a_malformed_address_is_refused_and_not_remembered(address):
    """An address that is not HOST:PORT is refused before anything is proposed."""
    node, clock, _, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    assert "is not a peer address" in refused(outcome(node.add_server("4", address, True)))
    assert "4" not in node.addresses


def test_a_request_refused_by_a_follower_leaves_no_address_behind():
    """A follower answers NotLeader and does not keep the address it was given."""
    node, *_ = make_node(["1", "2", "3"])
    result = outcome(node.add_server("4", "127.0.0.1:7004", True))
    assert result[0].check(NotLeader)
    assert "4" not in node.addresses


def test_the_address_enters_the_book_when_the_member_is_added():
    """The learner's address is learned from the applied configuration entry."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    acknowledge(node, transport)
    d = outcome(node.add_server("4", "127.0.0.1:7004", False))
    for _ in range(10):  # the leader's own seat change commits first, then this one
        run(clock, 0.05)
        acknowledge(node, transport)
    assert d == [None]
    assert NodeId("4") in node.core.configuration.learners
    assert node.addresses["4"]["peer"] == "127.0.0.1:7004"


def test_a_voter_that_never_answers_stays_a_learner_and_the_quorum_is_unchanged():
    """add-server 4 ADDRESS where nobody answers: 4 joins as a learner, is never
    promoted, and the request ends with an error naming the address and the way out."""
    node, clock, transport, _ = make_node(["1", "2", "3"])
    lead_by_hand(node, clock)
    acknowledge(node, transport)
    d = outcome(node.add_server("4", "127.0.0.1:7004", True))
    for _ in range(150):  # 7.5 s: past the request timeout; 2 and 3 answer, 4 never
        run(clock, 0.05)
        acknowledge(node, transport)
    message = refused(d)
    assert "stays a learner" in message and "127.0.0.1:7004" in message
    cfg = node.core.configuration
    assert NodeId("4") in cfg.learners and NodeId("4") not in cfg.voters
    assert sorted(cfg.voters) == ["1", "2", "3"]
