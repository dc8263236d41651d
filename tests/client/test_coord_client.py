"""The bundled client and the CLI: revisions, ranges, transactions (task.Clock, fake network)."""

from __future__ import annotations

import io
import json

import pytest
from test_cli import _cli_cluster, _run_on
from test_library import A, B, Cluster

from leeky_twisted import cli
from leeky_twisted.client.library import LeekyClient
from leeky_twisted.protocol.errors import InvalidRequest
from leeky_twisted.statemachine.commands import Get, Txn, decode_command
from leeky_twisted.statemachine.kv import KeyValue
from leeky_twisted.testing.apifakes import failure_of, result_of

LOCK = {
    "compare": [{"key": "lock", "target": "version", "op": "==", "value": 0}],
    "success": [{"type": "put", "key": "lock", "value": "me"}],
    "failure": [{"type": "range", "key": "lock"}],
}


def test_client_range_prefix_and_get_kv_follow_the_leader():
    """range/range_prefix/get_kv go to the leader and decode the answers."""
    cluster = Cluster(leader=B)
    client = cluster.client()
    for key in ["a/2", "a/1", "b"]:
        cluster.run(client.put(key, key))
    listed = result_of(cluster.run(client.range_prefix("a/")))
    assert [kv.key for kv in listed.kvs] == ["a/1", "a/2"] and listed.revision == 4
    assert result_of(cluster.run(client.range("a/2", None, keys_only=True))).count == 2
    kv = result_of(cluster.run(client.get_kv("a/1")))
    assert kv == KeyValue("a/1", "a/1", 3, 3, 1)
    assert result_of(cluster.run(client.get_kv("zzz"))) is None
    assert client.leader == B


def test_client_txn_retried_after_a_lost_answer_applies_once():
    """A txn whose answer is lost is sent again in its session: applied once, same result."""
    cluster = Cluster(leader=A)
    client = cluster.client()
    cluster.run(client.open_session())
    node = cluster.nodes[A]
    node.lose_answers = 1
    done = result_of(cluster.run(client.txn(LOCK["compare"], LOCK["success"], LOCK["failure"])))
    assert done.succeeded  # the retry got the first attempt's cached answer, not "failed"
    txns = [c for c in node.calls if c[0] == "propose" and isinstance(decode_command(c[1]), Txn)]
    assert len(txns) == 2 and node.state_machine.revision == 2


def test_client_bad_range_is_invalid_request():
    """start > end comes back as InvalidRequest."""
    cluster = Cluster(leader=A)
    f = failure_of(cluster.run(cluster.client().range("b", "a")), InvalidRequest)
    assert "is after its end" in str(f.value)


def _cli(net, argv):
    client = LeekyClient(net.clock, [("10.0.0.1", 7001)], connect=net.connect)
    return _run_on(net, argv, client)


def test_cli_ls_and_get_prefix_and_get_json():
    """ls lists keys, get --prefix prints key and value lines, get --json the revisions."""
    net, _ = _cli_cluster()
    for key, value in [("cfg/b", "2"), ("cfg/a", "1"), ("other", "x")]:
        assert _cli(net, ["put", key, value])[0] == 0
    assert _cli(net, ["ls", "cfg/"]) == (0, "cfg/a\ncfg/b\n", "")
    assert _cli(net, ["ls"])[1] == "cfg/a\ncfg/b\nother\n"
    assert _cli(net, ["ls", "cfg/", "--count"])[1] == "2\n"
    code, out, err = _cli(net, ["ls", "cfg/", "--limit", "1"])
    assert (code, out, err) == (0, "cfg/a\n", "leekyraft: 1 more keys not shown\n")
    assert _cli(net, ["get", "--prefix", "cfg/"])[1] == "cfg/a\n1\ncfg/b\n2\n"
    code, out, _ = _cli(net, ["get", "cfg/a", "--json"])
    assert json.loads(out)["create_revision"] == json.loads(out)["mod_revision"]
    assert _cli(net, ["get", "nope", "--json"])[0] == cli.EXIT_NOT_FOUND


def test_cli_txn_from_a_file_and_from_stdin(tmp_path, monkeypatch):
    """txn FILE runs it (exit 0 on success); the same from stdin takes the failure branch (6)."""
    net, node = _cli_cluster()
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(LOCK))
    code, out, _ = _cli(net, ["txn", str(path)])
    assert code == 0 and json.loads(out)["succeeded"] is True
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(LOCK)))
    code, out, _ = _cli(net, ["txn"])
    assert code == cli.EXIT_CAS_FAILED
    assert json.loads(out)["responses"][0]["kvs"][0]["value"] == "me"
    assert node.state_machine.query(Get("lock")) == "me"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope", "not valid JSON"),
        ("[]", "a transaction is a JSON object"),
        ('{"compare": {}}', "compare must be a list"),
    ],
)
def test_cli_txn_bad_documents_are_usage_errors(tmp_path, text, message):
    """A transaction file that is not a transaction: exit 64 with a clear message."""
    net, _ = _cli_cluster()
    path = tmp_path / "t.json"
    path.write_text(text)
    code, out, err = _cli(net, ["txn", str(path)])
    assert code == cli.EXIT_USAGE and message in err and out == ""


def test_cli_txn_refused_by_the_cluster_exits_5(tmp_path):
    """A well-formed document the cluster refuses (a put to no lease) exits 5 with its reason."""
    net, _ = _cli_cluster()
    path = tmp_path / "t.json"
    put = {"type": "put", "key": "k", "value": "v", "lease": 9}
    path.write_text(json.dumps({"success": [put]}))
    code, _, err = _cli(net, ["txn", str(path)])
    assert code == cli.EXIT_REFUSED and "lease 9 not found" in err and err.count("\n") == 1


def test_cli_txn_with_a_bad_operation_exits_64_and_sends_nothing(tmp_path):
    """An unknown operation or a float revision inside valid JSON: 64, nothing proposed."""
    net, node = _cli_cluster()
    path = tmp_path / "t.json"
    for document in (
        {"success": [{"type": "explode", "key": "k"}]},
        {"compare": [{"key": "k", "target": "version", "op": ">", "value": 1.5}]},
    ):
        path.write_text(json.dumps(document))
        code, out, err = _cli(net, ["txn", str(path)])
        assert (code, out) == (cli.EXIT_USAGE, "") and err.count("\n") == 1
    assert not [c for c in node.calls if c[0] == "propose" and b"txn" in c[1]]


def test_client_lease_grant_put_keepalive_ttl_revoke():
    """The bundled client's lease calls, following the leader."""
    cluster = Cluster(leader=B)
    client = cluster.client()
    lease = result_of(cluster.run(client.lease_grant(20)))
    cluster.run(client.put("svc/1", "up", lease=lease))
    assert result_of(cluster.run(client.lease_keepalive(lease))) == 20
    assert result_of(cluster.run(client.lease_ttl(lease)))["keys"] == ["svc/1"]
    assert result_of(cluster.run(client.lease_revoke(lease))) is True
    assert result_of(cluster.run(client.get("svc/1"))) is None
    f = failure_of(cluster.run(client.lease_keepalive(lease)), InvalidRequest)
    assert "not found (expired or revoked)" in str(f.value)


def test_cli_lease_commands_and_put_with_a_lease():
    """lease grant prints the id; put --lease attaches; keepalive --once; ttl; revoke."""
    net, node = _cli_cluster()
    code, out, _ = _cli(net, ["lease", "grant", "30"])
    lease = int(out)
    assert code == 0
    assert _cli(net, ["put", "--lease", str(lease), "svc/a", "up"])[0] == 0
    assert _cli(net, ["lease", "keepalive", str(lease), "--once"]) == (
        0,
        f"lease {lease} kept alive (ttl 30)\n",
        "",
    )
    assert json.loads(_cli(net, ["lease", "ttl", str(lease)])[1])["keys"] == ["svc/a"]
    assert _cli(net, ["lease", "revoke", str(lease)])[:2] == (0, f"Revoked lease {lease}\n")
    assert node.state_machine.query(Get("svc/a")) is None
    code, _, err = _cli(net, ["lease", "keepalive", str(lease), "--once"])
    assert code == cli.EXIT_REFUSED and "not found" in err
    code, _, err = _cli(net, ["put", "--lease", str(lease), "k", "v"])
    assert code == cli.EXIT_REFUSED and f"lease {lease} not found" in err


def test_client_txn_put_with_a_lease_and_to_a_revoked_lease():
    """The bundled client passes a txn put's lease on; a revoked lease is InvalidRequest."""
    cluster = Cluster(leader=B)
    client = cluster.client()
    lease = result_of(cluster.run(client.lease_grant(20)))
    put = {"type": "put", "key": "svc/t", "value": "up", "lease": lease}
    assert result_of(cluster.run(client.txn((), [put]))).succeeded
    assert result_of(cluster.run(client.lease_ttl(lease)))["keys"] == ["svc/t"]
    assert result_of(cluster.run(client.lease_revoke(lease))) is True
    assert result_of(cluster.run(client.get("svc/t"))) is None
    f = failure_of(cluster.run(client.txn((), [put])), InvalidRequest)
    assert str(f.value) == f"lease {lease} not found (expired or revoked)"


def test_cli_txn_with_a_lease(tmp_path):
    """leekyraft txn: a put with "lease" attaches the key; a revoked lease exits 5."""
    net, node = _cli_cluster()
    lease = int(_cli(net, ["lease", "grant", "30"])[1])
    path = tmp_path / "t.json"
    path.write_text(
        json.dumps({"success": [{"type": "put", "key": "k", "value": "v", "lease": lease}]})
    )
    assert _cli(net, ["txn", str(path)])[0] == 0
    assert node.state_machine.lease(lease) == (30, ["k"])
    assert _cli(net, ["lease", "revoke", str(lease)])[0] == 0
    code, _, err = _cli(net, ["txn", str(path)])
    assert code == cli.EXIT_REFUSED and f"lease {lease} not found" in err
