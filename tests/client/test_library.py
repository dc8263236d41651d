"""Tests for LeekyClient: leader finding and following, retries, sessions, timeouts."""

from __future__ import annotations

import re

import pytest
from twisted.internet import error
from twisted.internet.defer import Deferred

from leeky_twisted.client.library import (
    CallTimedOut,
    LeekyClient,
    NodeReport,
    NoLeader,
    NoLeaderOutcomeUnknown,
    format_address,
    parse_address,
    with_timeout,
)
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    InvalidRequest,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.statemachine.commands import (
    Append,
    Get,
    RegisterSession,
    Session,
    decode_command,
    encode_command,
)
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, failure_of, result_of

A = ("10.0.0.1", 7001)
B = ("10.0.0.2", 7002)
C = ("10.0.0.3", 7003)


class Cluster:
    """Fake nodes served without forwarding, so the client has to follow the leader itself."""

    def __init__(self, leader=B, addresses=(A, B), forward=False):
        self.net = FakeNetwork()
        self.nodes = {}
        for n, address in enumerate(addresses, 1):
            node = FakeRaftNode(str(n), format_address(address))
            self.nodes[address] = node
            self.net.serve(address, node, forward=forward)
        self.set_leader(leader)

    def set_leader(self, leader):
        hint = NotLeader(self.nodes[leader].node_id, format_address(leader)) if leader else None
        for address, node in self.nodes.items():
            node.not_leader = None if address == leader else (hint or NotLeader())

    def client(self, addresses=(A, B), timeout=10.0, **options):
        return LeekyClient(
            self.net.clock,
            list(addresses),
            timeout=timeout,
            connect=self.net.connect,
            **options,
        )

    def run(self, d):
        self.net.run(d, limit=30)
        return d


def one_node(timeout=10.0):
    """A cluster of one node, A, that leads; and a client that knows only A."""
    cluster = Cluster(leader=A, addresses=(A,))
    return cluster, cluster.client(addresses=[A], timeout=timeout)


def test_client_follows_not_leader_to_the_leader_and_remembers_it():
    """A NotLeader hint sends the client to the leader; later calls go there directly."""
    cluster = Cluster(leader=B)
    client = cluster.client()
    assert result_of(cluster.run(client.put("k", "v"))) is None
    assert client.leader == B
    assert result_of(cluster.run(client.get("k"))) == "v"
    assert cluster.net.connects == [A, B]
    assert cluster.nodes[B].state_machine.query(Get("k")) == "v"


def test_client_follows_a_hint_to_an_address_it_was_not_given():
    """The leader's address from a hint is used even if it is not in the address list."""
    cluster = Cluster(leader=B)
    client = cluster.client(addresses=[A])
    assert result_of(cluster.run(client.put("k", "v"))) is None
    assert client.leader == B


def test_client_moves_on_when_a_node_refuses_connections():
    """A refused connection makes the client try the next address."""
    cluster = Cluster(leader=B)
    client = cluster.client(addresses=[C, B])
    assert result_of(cluster.run(client.get("k"))) is None
    assert cluster.net.connects == [C, B]


def test_client_follows_a_leader_change():
    """After the leader moves, NotLeader from the old one leads to the new one."""
    cluster = Cluster(leader=B)
    client = cluster.client()
    cluster.run(client.put("k", "1"))
    cluster.set_leader(A)
    cluster.nodes[A].state_machine.restore(cluster.nodes[B].state_machine.snapshot())
    cluster.nodes[A].index = cluster.nodes[B].index
    assert result_of(cluster.run(client.put("k", "2"))) is None
    assert client.leader == A
    assert cluster.nodes[A].state_machine.query(Get("k")) == "2"


def test_client_waits_out_an_election():
    """While no node knows a leader the client backs off and retries until one appears."""
    cluster = Cluster(leader=None)
    client = cluster.client()
    d = client.put("k", "v")
    cluster.net.flush()
    cluster.net.clock.advance(0.5)
    cluster.net.flush()
    assert not d.called
    cluster.set_leader(A)
    cluster.run(d)
    assert result_of(d) is None
    assert cluster.nodes[A].state_machine.query(Get("k")) == "v"


def test_no_leader_until_the_deadline_is_unavailable():
    """A read that never finds a leader fails with Unavailable at its timeout."""
    cluster = Cluster(leader=None)
    client = cluster.client(timeout=2.0)
    d = cluster.run(client.get("k"))
    assert "no leader" in str(failure_of(d, Unavailable).value)
    assert cluster.net.clock.seconds() == pytest.approx(2.0, abs=0.1)


def test_unreachable_cluster_fails_fast_with_unavailable():
    """When no address accepts a connection, the client gives up after two rounds."""
    net = FakeNetwork()
    client = LeekyClient(net.clock, [A, B], timeout=10.0, connect=net.connect)
    d = client.put("k", "v")
    net.run(d)
    f = failure_of(d, Unavailable)
    assert "cannot reach any node" in str(f.value)
    assert "connection refused (nothing listens on that port)" in str(f.value)
    assert "111" not in str(f.value)  # no errno or Twisted wording
    assert net.clock.seconds() < 1.0
    assert net.connects == [A, B, A, B]


def test_write_retried_after_a_lost_answer_is_applied_once():
    """A write whose answer was lost is retried with the same session and applied once."""
    cluster, client = one_node()
    leader = cluster.nodes[A]
    cluster.run(client.open_session())
    leader.lose_answers = 1
    assert result_of(cluster.run(client.append("k", "x"))) == 1
    assert leader.state_machine.query(Get("k")) == "x"
    register, first, retry = (decode_command(call[1]) for call in leader.calls)
    assert isinstance(register, RegisterSession)
    assert first == retry
    assert first.session == Session(client.session_id, 1, 1)


def test_each_write_gets_the_next_seq_and_acks_answered_ones():
    """Writes number themselves; ack is the lowest seq still waiting for an answer."""
    cluster, client = one_node()
    leader = cluster.nodes[A]
    s = result_of(cluster.run(client.open_session()))
    leader.hang = True
    first = client.put("a", "1")
    cluster.net.flush()
    leader.hang = False
    cluster.run(client.put("b", "2"))
    cluster.run(client.delete("b"))
    sessions = [decode_command(call[1]).session for call in leader.calls[1:]]
    assert sessions == [Session(s, 1, 1), Session(s, 2, 1), Session(s, 3, 1)]
    cluster.run(first)  # the server gave up on it; the client retried it under seq 1
    assert result_of(first) is None
    assert decode_command(leader.calls[-1][1]).session == Session(s, 1, 1)
    assert leader.state_machine.query(Get("a")) == "1"


def test_write_that_gets_no_answer_times_out_with_outcome_unknown():
    """A write that is never answered fails at the client's timeout: outcome unknown."""
    cluster, client = one_node(3.0)
    cluster.run(client.open_session())
    cluster.nodes[A].hang = True
    started = cluster.net.clock.seconds()
    d = cluster.run(client.put("k", "v"))
    assert str(failure_of(d, CommitTimeout).value) == "timed out, outcome unknown"
    assert cluster.net.clock.seconds() - started == pytest.approx(3.0, abs=0.1)


def _evict_all_sessions(node):
    """Fill the node's session table (max_sessions=1) with a session of someone else."""
    node.index += 1
    node.state_machine.apply(node.index, encode_command(RegisterSession("other")))


def test_a_fresh_session_is_registered_after_expiry_and_the_write_applied_once():
    """A write refused as SessionExpired (never applied) goes out again in a new session."""
    cluster = Cluster(leader=A, addresses=(A,))
    leader = cluster.nodes[A]
    leader.state_machine = KeyValueStateMachine(max_sessions=1)
    client = cluster.client(addresses=[A])
    assert result_of(cluster.run(client.append("k", "x"))) == 1
    old = client.session_id
    _evict_all_sessions(leader)
    assert result_of(cluster.run(client.append("k", "y"))) == 2
    assert leader.state_machine.query(Get("k")) == "xy"
    assert client.session_id not in (None, old)
    proposals = [decode_command(call[1]) for call in leader.calls]
    assert proposals[2:] == [
        Append("k", "y", Session(old, 2, 2)),  # refused: the session was evicted
        RegisterSession(proposals[3].nonce),
        Append("k", "y", Session(client.session_id, 2, 2)),
    ]


def test_a_new_leader_without_the_session_gets_a_new_one():
    """After a leader change to a node that lacks the session, the client registers again."""
    cluster = Cluster(leader=A)
    client = cluster.client()
    cluster.run(client.put("k", "1"))
    first = client.session_id
    cluster.set_leader(B)  # B's state machine never saw the registration
    cluster.run(client.put("k", "2"))
    assert client.session_id != first
    assert cluster.nodes[B].state_machine.session_ids() == [client.session_id]
    assert cluster.nodes[B].state_machine.query(Get("k")) == "2"


def test_a_write_with_an_unknown_outcome_is_not_reapplied_in_a_new_session():
    """Applied, answer lost, session evicted before the retry: outcome unknown, never twice."""
    cluster = Cluster(leader=A, addresses=(A,))
    leader = cluster.nodes[A]
    leader.state_machine = KeyValueStateMachine(max_sessions=1)
    client = cluster.client(addresses=[A])
    cluster.run(client.open_session())
    leader.lose_answers = 1
    d = client.append("k", "x")
    cluster.net.flush()  # applied, answered CommitTimeout; the client waits to retry
    assert not d.called
    _evict_all_sessions(leader)
    cluster.run(d)
    f = failure_of(d, CommitTimeout)
    assert "outcome unknown" in str(f.value) and "session" in str(f.value)
    assert leader.state_machine.query(Get("k")) == "x"
    registrations = [c for c in leader.calls if isinstance(decode_command(c[1]), RegisterSession)]
    assert len(registrations) == 1  # no new session was opened for this write


def test_concurrent_writes_share_one_registration():
    """Writes started together wait for one RegisterSession, then go out in it."""
    cluster, client = one_node()
    writes = [client.put(f"k{i}", "v") for i in range(5)]
    for d in writes:
        cluster.run(d)
        assert result_of(d) is None
    proposals = [decode_command(call[1]) for call in cluster.nodes[A].calls]
    assert isinstance(proposals[0], RegisterSession)
    assert not any(isinstance(p, RegisterSession) for p in proposals[1:])
    assert {p.session.client_id for p in proposals[1:]} == {client.session_id}


def test_a_session_that_cannot_be_opened_is_unavailable_and_nothing_is_sent():
    """If registration gets no answer, the write fails as Unavailable (it was never sent)."""
    cluster = Cluster(leader=A, addresses=(A,))
    cluster.nodes[A].hang = True
    client = cluster.client(addresses=[A], timeout=2.0)
    d = cluster.run(client.put("k", "v"))
    f = failure_of(d, Unavailable)
    assert "could not open a client session" in str(f.value)
    assert all(isinstance(decode_command(c[1]), RegisterSession) for c in cluster.nodes[A].calls)


def test_a_session_refused_again_and_again_ends_in_session_expired():
    """A cluster that drops every new session at once: SessionExpired after a few renewals."""
    cluster = Cluster(leader=A, addresses=(A,))
    leader = cluster.nodes[A]
    leader.state_machine = KeyValueStateMachine(max_sessions=1)
    original = leader.propose

    def propose(command, timeout):
        d = original(command, timeout)
        if isinstance(decode_command(command), RegisterSession):
            _evict_all_sessions(leader)
        return d

    leader.propose = propose
    client = cluster.client(addresses=[A])
    failure_of(cluster.run(client.put("k", "v")), SessionExpired)
    assert leader.state_machine.query(Get("k")) is None


def test_read_that_gets_no_answer_times_out():
    """A read that is never answered fails with CommitTimeout at the timeout."""
    cluster = Cluster(leader=A, addresses=(A,))
    cluster.nodes[A].hang = True
    client = cluster.client(addresses=[A], timeout=3.0)
    failure_of(cluster.run(client.get("k")), CommitTimeout)


def test_server_commit_timeouts_are_retried_until_the_deadline():
    """CommitTimeout from the server is retried (safe with sessions), then reported."""
    cluster, client = one_node(2.0)
    cluster.run(client.open_session())
    cluster.nodes[A].commit_timeout = True
    d = cluster.run(client.put("k", "v"))
    failure_of(d, CommitTimeout)
    assert len(cluster.nodes[A].calls) > 3


def test_invalid_requests_are_not_retried():
    """InvalidRequest comes back at once, after a single attempt."""
    cluster, client = one_node()
    d = cluster.run(client.put("", "v"))
    assert "key must not be empty" in str(failure_of(d, InvalidRequest).value)
    assert cluster.net.connects == [A]


def test_a_connection_lost_mid_call_is_retried_elsewhere():
    """When the connection drops before the answer, the client retries on another node."""
    cluster = Cluster(leader=A, addresses=(A, B), forward=True)
    cluster.nodes[A].hang = True
    client = cluster.client(addresses=[A, B])
    d = client.get("k")
    cluster.net.flush()
    cluster.set_leader(B)
    cluster.net.drop(A)
    cluster.run(d)
    assert result_of(d) is None
    assert client.leader == B


def test_stale_reads_take_any_node():
    """A stale read is answered by the first node reached, leader or not."""
    cluster = Cluster(leader=B)
    cluster.nodes[A].state_machine.apply(1, b"PUT k old")
    client = cluster.client()
    assert result_of(cluster.run(client.get("k", stale=True))) == "old"
    assert client.leader is None


def test_cas_delete_and_status():
    """cas, delete and status return plain Python values."""
    cluster, client = one_node()
    assert result_of(cluster.run(client.cas("k", None, "1"))) is True
    assert result_of(cluster.run(client.cas("k", "2", "3"))) is False
    assert result_of(cluster.run(client.delete("k"))) is True
    assert result_of(cluster.run(client.status()))["id"] == "1"


def test_a_200_kb_value_round_trips():
    """Values beyond one AMP value go through the library intact."""
    cluster, client = one_node()
    value = "v" * 200_000
    cluster.run(client.put("big", value))
    assert result_of(cluster.run(client.get("big"))) == value


def test_status_all_reports_every_node_including_unreachable_ones():
    """status_all asks every address and reports the ones that failed."""
    cluster = Cluster(leader=A)
    client = cluster.client(addresses=[A, B, C])
    reports = result_of(cluster.run(client.status_all()))
    assert [r.address for r in reports] == ["10.0.0.1:7001", "10.0.0.2:7002", "10.0.0.3:7003"]
    assert [r.status["role"] if r.status else None for r in reports] == [
        "leader",
        "follower",
        None,
    ]
    assert isinstance(reports[2], NodeReport) and "connection refused" in reports[2].error


def test_close_disconnects_and_later_calls_fail():
    """After close, connections are gone and calls fail with Unavailable."""
    cluster, client = one_node()
    cluster.run(client.put("k", "v"))
    closed = client.close()
    cluster.net.flush()
    assert result_of(closed) is None
    failure_of(cluster.run(client.get("k")), Unavailable)


def test_a_call_on_an_open_connection_arms_only_its_own_timer(monkeypatch):
    """Once connected, a request sets one timer (the call's silence check), none for
    connecting; the first request, which connects, also bounds the connection's time."""
    cluster, client = one_node()
    clock = cluster.net.clock
    armed = []
    real = clock.callLater
    monkeypatch.setattr(clock, "callLater", lambda *a, **k: armed.append(a[0]) or real(*a, **k))
    d = client.get("k")
    first = len(armed)
    cluster.run(d)
    assert client._pool.connected(A) is not None
    armed.clear()
    client.get("k")  # on the open connection: sent at once
    assert len(armed) == 1 and first == 2
    closed = client.close()
    cluster.net.flush()
    assert result_of(closed) is None and client._pool.connected(A) is None


def test_client_requires_addresses():
    """A client without addresses is a programming error."""
    with pytest.raises(ValueError):
        LeekyClient(None, [])


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:7001", ("127.0.0.1", 7001)), ("[::1]:80", ("::1", 80)), (" h:1 ", ("h", 1))],
)
def test_parse_and_format_address(text, address):
    """HOST:PORT parses, IPv6 in brackets; formatting brackets IPv6 again."""
    assert parse_address(text) == address
    assert parse_address(format_address(address)) == address


@pytest.mark.parametrize("text", ["", "host", "host:", ":80", "h:0", "h:70000", "h:x"])
def test_parse_address_rejects_malformed(text):
    """Malformed addresses raise ValueError."""
    with pytest.raises(ValueError):
        parse_address(text)


def test_with_timeout_fires_on_time_and_drops_late_results():
    """with_timeout fails after its delay and ignores (consumes) a late result."""
    net = FakeNetwork()
    inner: Deferred[str] = Deferred()
    d = with_timeout(inner, 1.0, net.clock)
    net.clock.advance(1.0)
    failure_of(d, CallTimedOut)
    inner.errback(error.ConnectionLost())  # late: must not surface as unhandled
    fast: Deferred[str] = Deferred()
    d = with_timeout(fast, 1.0, net.clock)
    fast.callback("ok")
    assert result_of(d) == "ok"
    assert net.clock.getDelayedCalls() == []


def test_a_write_with_no_leader_says_so_and_that_it_was_never_sent():
    """Every node answers "no leader known": NoLeader, naming the cause in plain words,
    and saying the write was not applied (only session registrations were tried)."""
    cluster = Cluster(leader=None)
    client = cluster.client(timeout=2.0)
    f = failure_of(cluster.run(client.put("k", "v")), NoLeader)
    assert re.fullmatch(
        r"no leader: [12] nodes? answered, and none knew a leader within 2 s \(the cluster has"
        r" lost its majority of voters, or is electing a leader\); the write was not sent to"
        r" any node, so it was not applied",
        str(f.value),
    )
    assert "outcome unknown" not in str(f.value)
    proposed = [decode_command(c[1]) for n in cluster.nodes.values() for c in n.calls]
    assert proposed and all(isinstance(p, RegisterSession) for p in proposed)


def test_a_read_with_no_leader_is_no_leader_without_a_word_about_writes():
    """A linearizable read that finds no leader: NoLeader (an Unavailable), plainly worded."""
    cluster = Cluster(leader=None)
    client = cluster.client(timeout=2.0)
    f = failure_of(cluster.run(client.get("k")), NoLeader)
    assert isinstance(f.value, Unavailable)
    assert re.match(r"no leader: [12] nodes? answered, and none knew a leader", str(f.value))
    assert "write" not in str(f.value)


def test_a_write_that_reached_the_leader_before_it_was_lost_may_have_been_applied():
    """The leader takes the write, then loses its majority (no answer), then nobody leads:
    the error says there is no leader AND that the write may or may not be applied."""
    cluster = Cluster(leader=A)
    client = cluster.client(timeout=2.0)
    cluster.run(client.open_session())
    leader = cluster.nodes[A]
    original = leader.propose

    def answer_lost(_):
        raise CommitTimeout()

    def propose(command, timeout):
        d = original(command, timeout)  # applied...
        cluster.set_leader(None)  # ...but the leader steps down; nobody is elected
        return d.addCallback(answer_lost)

    leader.propose = propose
    f = failure_of(cluster.run(client.put("k", "v")), NoLeaderOutcomeUnknown)
    assert isinstance(f.value, CommitTimeout)
    assert str(f.value).startswith("no leader: ")
    assert str(f.value).endswith("may or may not have been applied (outcome unknown)")


class MembersNode(FakeRaftNode):
    """A fake node whose members() is the list given."""

    def __init__(self, node_id, address, members):
        super().__init__(node_id, address)
        self.listed = members

    def members(self):
        return self.listed


def _views():
    leader_addr = format_address(B)
    follower = [
        {"id": "1", "raft": "voter", "this_node": True, "reachable": True},
        {"id": "2", "raft": "leader", "this_node": False, "addresses": {"client": leader_addr}},
        {"id": "3", "raft": "voter", "this_node": False, "reachable": None},
    ]
    leader = [
        {"id": "1", "raft": "voter", "this_node": False, "reachable": True},
        {"id": "2", "raft": "leader", "this_node": True, "reachable": True},
        {"id": "3", "raft": "voter", "this_node": False, "reachable": False},
    ]
    return follower, leader


def _members_seen_by_leader(*views):
    """Serve node n's members view ``views[n - 1]`` at A, B, ...; return what a client
    that knows only A answers for members_seen_by_leader()."""
    net = FakeNetwork()
    for n, (address, view) in enumerate(zip((A, B, C), views, strict=False), 1):
        net.serve(address, MembersNode(str(n), format_address(address), view), forward=False)
    client = LeekyClient(net.clock, [A], timeout=5.0, connect=net.connect)
    d = client.members_seen_by_leader()
    net.run(d)
    return result_of(d)


def test_members_come_from_the_leader_who_alone_knows_who_answers():
    """Asked through a follower, the members list is the leader's (reachability known)."""
    follower, leader = _views()
    assert _members_seen_by_leader(follower, leader) == leader


def test_members_fall_back_to_the_first_view_when_the_leader_cannot_be_asked():
    """The leader named is down: the follower's own view is shown (it says whose it is)."""
    follower, _ = _views()
    assert _members_seen_by_leader(follower) == follower


def test_a_read_with_no_leader_among_dead_nodes_is_no_leader_not_a_timeout():
    """Live nodes say "no leader", the others refuse connections (the last error seen):
    still NoLeader, not "timed out" (which reads as exit 4, outcome unknown)."""
    cluster = Cluster(leader=None)
    client = cluster.client(addresses=[A, C, B], timeout=2.0)  # nothing listens at C
    f = failure_of(cluster.run(client.get("k")), NoLeader)
    assert str(f.value).startswith("no leader: ")


# ------------------------------------------------------------ a removed node


REMOVED_TEXT = "node 1 was removed from the cluster (configuration change at 9): use another node"


def removed_first():
    """Node A was removed (it refuses everything with Removed); B leads."""
    cluster = Cluster(leader=B)
    cluster.nodes[A].crash = Removed(REMOVED_TEXT)
    return cluster


def test_a_removed_node_is_passed_over_at_once_and_not_asked_again():
    """Removed first in the list: the call goes on to B without a pause; A once only."""
    cluster = removed_first()
    client = cluster.client(addresses=[A, B])
    for _ in range(3):
        assert result_of(cluster.run(client.put("k", "v"))) is None
        assert result_of(cluster.run(client.get("k"))) == "v"
    assert len(cluster.nodes[A].calls) == 1
    assert cluster.net.clock.seconds() < 0.2  # no back-off: ~0.3 s instead of ~1.9 s


def test_a_call_to_removed_nodes_only_fails_at_once_with_their_message():
    """No other node to try: Removed at once, naming the node, not "no leader" at the deadline."""
    cluster = removed_first()
    client = cluster.client(addresses=[A])
    d = cluster.run(client.get("k"))
    error = failure_of(d, Removed).value
    assert format_address(A) in str(error) and REMOVED_TEXT in str(error)
    assert cluster.net.clock.seconds() < 0.2
    assert len(cluster.nodes[A].calls) == 1


def test_a_hint_to_a_removed_node_is_not_followed_again():
    """A stale NotLeader hint naming the removed node: the client tries the others instead."""
    cluster = Cluster(leader=C, addresses=(A, B, C))
    cluster.nodes[A].crash = Removed(REMOVED_TEXT)
    cluster.nodes[B].not_leader = NotLeader("1", format_address(A))
    client = cluster.client(addresses=[A, B, C])
    assert result_of(cluster.run(client.get("k"))) is None
    assert len(cluster.nodes[A].calls) == 1
