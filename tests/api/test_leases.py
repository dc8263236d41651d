"""Leases: the leader's keeper (task.Clock), and the lease calls over AMP and JSON-RPC."""

from __future__ import annotations

import json

import pytest
from test_amp_api import FOLLOWER, Harness
from test_jsonrpc_api import Harness as RPCHarness

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.errors import InvalidRequest, NotLeader
from leeky_twisted.statemachine.commands import Get, LeaseRevoke, decode_command
from leeky_twisted.testing.apifakes import failure_of, result_of


@pytest.fixture
def h():
    return Harness(lease_extension=3.0)


def grant(h, c, ttl):
    return result_of(h.call(c, cc.LeaseGrant, ttl=ttl))["lease"]


def keeper(h):
    return h.net.servers[("10.0.0.1", 7001)].locator.frontend.leases


def run_for(h, seconds, step=0.1):
    """Let ``seconds`` pass with the keeper checking every ``step`` (as its loop does)."""
    k = keeper(h)
    for _ in range(round(seconds / step)):
        h.net.clock.advance(step)
        k.check()


def proposed_revokes(node):
    return [
        decode_command(call[1])
        for call in node.calls
        if call[0] == "propose" and isinstance(decode_command(call[1]), LeaseRevoke)
    ]


def test_an_idle_lease_expires_through_the_log_and_its_keys_go(h):
    """No keepalive for ttl seconds: the leader proposes the revoke; the keys are deleted."""
    c = h.client()
    k = keeper(h)
    k.check()  # this node leads (since before the grant)
    lease = grant(h, c, 5)
    h.call(c, cc.Put, key="svc/a", value="1", lease=lease)
    k.check()  # and notes the lease at its grant
    run_for(h, 4.9)
    assert proposed_revokes(h.leader) == []
    run_for(h, 0.2)
    assert proposed_revokes(h.leader) == [LeaseRevoke(lease, None, True)]
    assert h.leader.state_machine.query(Get("svc/a")) is None
    f = failure_of(h.call(c, cc.LeaseKeepalive, lease=lease), InvalidRequest)
    assert f"lease {lease} not found (expired or revoked)" in str(f.value)


def test_keepalives_keep_a_lease_and_its_keys(h):
    """A keepalive every few seconds keeps the lease past its ttl many times over."""
    c = h.client()
    k = keeper(h)
    k.check()
    lease = grant(h, c, 5)
    h.call(c, cc.Put, key="k", value="v", lease=lease)
    k.check()
    for _ in range(10):
        run_for(h, 3)
        assert result_of(h.call(c, cc.LeaseKeepalive, lease=lease)) == {"ttl": 5}
    assert proposed_revokes(h.leader) == []
    info = json.loads(result_of(h.call(c, cc.LeaseTTL, lease=lease))["result"])
    assert info["id"] == lease and info["ttl"] == 5 and info["keys"] == ["k"]
    assert 4.9 <= info["remaining"] <= 5.0


def test_a_new_leader_extends_every_lease_by_the_extension(h):
    """A node that becomes leader gives each lease ttl + extension before expiring it."""
    c = h.client()
    lease = grant(h, c, 5)
    k = keeper(h)
    h.leader.not_leader = NotLeader("2", None)  # leadership moves away...
    run_for(h, 100)  # ...for long (no keepalive reaches this node)
    h.leader.not_leader = None  # and comes back
    k.check()
    run_for(h, 5 + 3 - 0.2)
    assert proposed_revokes(h.leader) == []  # within ttl + extension
    run_for(h, 0.3)
    assert proposed_revokes(h.leader) == [LeaseRevoke(lease, None, True)]


def test_a_follower_forwards_keepalive_and_ttl_to_the_leader(h):
    """Keepalive and ttl are the leader's business: a follower passes them on."""
    leader = h.client()
    lease = grant(h, leader, 5)
    follower = h.client(FOLLOWER)
    assert result_of(h.call(follower, cc.LeaseKeepalive, lease=lease)) == {"ttl": 5}
    info = json.loads(result_of(h.call(follower, cc.LeaseTTL, lease=lease))["result"])
    assert info["ttl"] == 5


def test_revoke_and_unknown_leases(h):
    """Revoke deletes the keys at once; a put to a revoked lease is refused clearly."""
    c = h.client()
    lease = grant(h, c, 60)
    h.call(c, cc.Put, key="k", value="v", lease=lease)
    assert result_of(h.call(c, cc.LeaseRevoke, lease=lease)) == {"existed": True}
    assert result_of(h.call(c, cc.LeaseRevoke, lease=lease)) == {"existed": False}
    f = failure_of(h.call(c, cc.Put, key="k", value="v", lease=lease), InvalidRequest)
    assert f"lease {lease} not found" in str(f.value)
    f = failure_of(h.call(c, cc.LeaseKeepalive, lease=lease), InvalidRequest)
    assert "not found (expired or revoked)" in str(f.value)
    f = failure_of(h.call(c, cc.LeaseGrant, ttl=0), InvalidRequest)
    assert str(f.value) == "invalid lease grant request: ttl must be an integer from 1 to 1000000"


def test_keeper_runs_on_its_clock_and_stops():
    """start() checks every interval; the frontend's close stops it."""
    h = Harness()
    k = keeper(h)
    k.start()
    assert h.net.clock.getDelayedCalls()
    k.stop()
    assert not h.net.clock.getDelayedCalls()


def test_rpc_lease_calls():
    """lease_grant/keepalive/ttl/revoke and put with a lease over JSON-RPC."""
    rpc = RPCHarness()
    lease = rpc.result("lease_grant", 30)
    assert rpc.result("put", "svc/x", "1", None, {"lease": lease}) is True
    assert rpc.result("lease_keepalive", lease) == 30
    assert rpc.result("lease_ttl", lease)["keys"] == ["svc/x"]
    assert rpc.result("lease_revoke", lease) is True
    assert rpc.result("get", "svc/x") is None
    assert "not found" in rpc.error("lease_keepalive", lease)["message"]
    assert "ttl must be" in rpc.error("lease_grant", 0)["message"]
    assert "lease must be a lease id" in rpc.error("put", "k", "v", None, {"lease": "x"})["message"]


def test_a_leader_that_stalled_extends_every_lease_instead_of_expiring_it(h):
    """Checks held up for longer than the extension (a stopped process): no mass expiry."""
    c = h.client()
    k = keeper(h)
    k.check()
    lease = grant(h, c, 5)
    k.check()
    h.net.clock.advance(60)  # no check ran for a minute: keepalives could not be served
    k.check()
    assert proposed_revokes(h.leader) == []
    run_for(h, 5 + 3 - 0.2)
    assert proposed_revokes(h.leader) == []
    run_for(h, 0.3)
    assert proposed_revokes(h.leader) == [LeaseRevoke(lease, None, True)]


def test_keepalive_reads_the_lease_linearizably_before_renewing(h):
    """A keepalive is a ReadIndex read of the lease: a revoke committed before it (even a
    previous leader's) is seen, and the keepalive is refused instead of acknowledged."""
    from leeky_twisted.statemachine.commands import LeaseInfo

    c = h.client()
    lease = grant(h, c, 5)
    assert result_of(h.call(c, cc.LeaseKeepalive, lease=lease)) == {"ttl": 5}
    assert ("read", LeaseInfo(lease), True, 5.0) in h.leader.calls
    h.leader.not_leader = NotLeader("2", None)  # the read finds this node deposed
    f = failure_of(h.call(c, cc.LeaseKeepalive, lease=lease), NotLeader)
    assert f.value.leader_id == "2"


# ------------------------------------------------------- txn with leases


def _txn(h, c, document):
    return json.loads(result_of(h.call(c, cc.Txn, txn=json.dumps(document)))["result"])


def test_amp_txn_puts_keys_on_a_lease_and_its_expiry_deletes_them(h):
    """A txn's put with a lease: the key is the lease's; expiry deletes it through the log."""
    c = h.client()
    k = keeper(h)
    k.check()
    lease = grant(h, c, 5)
    k.check()
    document = {
        "compare": [{"key": "lock", "target": "version", "op": "==", "value": 0}],
        "success": [
            {"type": "put", "key": "lock", "value": "me", "lease": lease},
            {"type": "put", "key": "plain", "value": "p"},
        ],
    }
    assert _txn(h, c, document)["succeeded"] is True
    info = json.loads(result_of(h.call(c, cc.LeaseTTL, lease=lease))["result"])
    assert info["keys"] == ["lock"]
    run_for(h, 5.2)
    assert proposed_revokes(h.leader) == [LeaseRevoke(lease, None, True)]
    assert h.leader.state_machine.query(Get("lock")) is None
    assert h.leader.state_machine.query(Get("plain")) == "p"


def test_amp_txn_through_a_follower_keeps_its_lease(h):
    """The follower forwards the document with the lease (txn_document carries it)."""
    lease = grant(h, h.client(), 30)
    c = h.client(FOLLOWER)
    assert _txn(h, c, {"success": [{"type": "put", "key": "k", "value": "v", "lease": lease}]})
    assert h.leader.state_machine.lease(lease) == (30, ["k"])


def test_amp_txn_to_a_revoked_lease_is_refused_and_applies_nothing(h):
    """Unknown lease: a clear error, and no operation of the txn is applied."""
    c = h.client()
    lease = grant(h, c, 30)
    result_of(h.call(c, cc.LeaseRevoke, lease=lease))
    revision = h.leader.state_machine.revision
    document = {
        "success": [
            {"type": "put", "key": "a", "value": "1"},
            {"type": "put", "key": "b", "value": "2", "lease": lease},
        ]
    }
    f = failure_of(h.call(c, cc.Txn, txn=json.dumps(document)), InvalidRequest)
    assert str(f.value) == f"lease {lease} not found (expired or revoked)"
    assert h.leader.state_machine.query(Get("a")) is None
    assert h.leader.state_machine.revision == revision


@pytest.mark.parametrize(
    ("lease", "message"),
    [
        (0, "lease must be a lease id"),
        (-3, "lease must be a lease id"),
        ("7", "lease must be a lease id"),
        (True, "lease must be a lease id"),
        (2**63, "lease must be a lease id"),
    ],
)
def test_amp_txn_with_a_malformed_lease_is_refused_before_proposing(h, lease, message):
    """A lease that is not a positive 64-bit integer is refused; nothing is proposed."""
    document = {"success": [{"type": "put", "key": "k", "value": "v", "lease": lease}]}
    f = failure_of(h.call(h.client(), cc.Txn, txn=json.dumps(document)), InvalidRequest)
    assert message in str(f.value)
    assert not [call for call in h.leader.calls if call[0] == "propose"]


def test_rpc_txn_with_a_lease():
    """JSON-RPC: a txn's put takes a lease; an unknown lease is invalid params."""
    rpc = RPCHarness()
    lease = rpc.result("lease_grant", 30)
    document = {"success": [{"type": "put", "key": "svc/t", "value": "1", "lease": lease}]}
    assert rpc.result("txn", document)["succeeded"] is True
    assert rpc.result("lease_ttl", lease)["keys"] == ["svc/t"]
    assert rpc.result("lease_revoke", lease) is True
    assert rpc.result("get", "svc/t") is None
    error = rpc.error("txn", document)
    assert error["code"] == -32602 and f"lease {lease} not found" in error["message"]
    bad = {"success": [{"type": "put", "key": "k", "value": "v", "lease": 1, "ttl": 3}]}
    assert "optional lease" in rpc.error("txn", bad)["message"]
