"""Real ``twistd -n leekyraft`` processes on loopback: election, writes, crashes, restarts."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, RpcError, jsonrpc

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


@pytest.fixture
def cluster3(tmp_path: Path):
    c = LocalCluster(tmp_path / "c3", nodes=3, extra_args=FAST)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def put(port: int, key: str, value: str) -> None:
    jsonrpc(port, "put", key, value)


def get(port: int, key: str) -> object:
    return jsonrpc(port, "get", key)


def followers(c: LocalCluster, leader) -> list:
    return [n for n in c.nodes if n is not leader]


def test_three_nodes_elect_commit_and_serve_reads_through_any_node(cluster3: LocalCluster):
    """A 3-node cluster elects one leader; a put through a follower is read back everywhere."""
    leader = cluster3.wait_for_leader()
    f1, f2 = followers(cluster3, leader)
    put(f1.http_port, "pizzatoppings", "peporoni peppr cheddar")
    assert get(f2.http_port, "pizzatoppings") == "peporoni peppr cheddar"
    assert get(leader.http_port, "pizzatoppings") == "peporoni peppr cheddar"
    assert get(leader.http_port, "absent") is None
    leaders = [n for n in cluster3.nodes if (cluster3.status(n) or {}).get("role") == "leader"]
    assert leaders == [leader]


def test_a_follower_serves_linearizable_reads_itself(cluster3: LocalCluster):
    """A get through a follower is served by that follower (a read index from the
    leader, not the request forwarded), and sees a write acknowledged just before."""
    leader = cluster3.wait_for_leader()
    follower = followers(cluster3, leader)[0]
    before = (cluster3.status(follower) or {})["stats"]["follower_reads"]
    for i in range(20):
        put(leader.http_port, "fr", f"v{i}")
        assert get(follower.http_port, "fr") == f"v{i}"
    after = (cluster3.status(follower) or {})["stats"]["follower_reads"]
    assert after - before == 20
    assert (cluster3.status(leader) or {})["stats"]["follower_reads"] == 0


def test_leader_sigkill_new_leader_takes_writes_and_keeps_acknowledged_ones(
    cluster3: LocalCluster,
):
    """SIGKILL the leader: a new one is elected and every acknowledged write survives.

    The survivors learn it from the refused dial (their connections to it closed):
    at least one campaigns at once (``stats.leader_gone``)."""
    leader = cluster3.wait_for_leader()
    term = cluster3.status(leader)["term"]
    acked = []
    for i in range(20):
        put(leader.http_port, f"k{i}", f"v{i}")
        acked.append(i)
    cluster3.kill(leader, signal.SIGKILL)
    survivors = followers(cluster3, leader)

    def new_leader():
        for n in survivors:
            st = cluster3.status(n)
            if st and st["role"] == "leader":
                return n
        return None

    new = cluster3.wait_for("a new leader", new_leader)
    put(new.http_port, "after", "kill")
    statuses = [cluster3.status(n) or {} for n in survivors]
    assert sum(st["stats"]["leader_gone"] for st in statuses) >= 1, statuses
    assert all(st["term"] > term for st in statuses), statuses
    for i in acked:
        assert get(new.http_port, f"k{i}") == f"v{i}"
    assert get(new.http_port, "after") == "kill"


def test_full_cluster_restart_keeps_every_acknowledged_write(cluster3: LocalCluster):
    """SIGKILL every node, restart them on the same data: all acknowledged writes remain."""
    leader = cluster3.wait_for_leader()
    for i in range(30):
        put(leader.http_port, f"r{i}", str(i))
    for n in cluster3.nodes:
        cluster3.kill(n, signal.SIGKILL)
    cluster3.start()
    leader = cluster3.wait_for_leader()
    for i in range(30):
        assert get(leader.http_port, f"r{i}") == str(i)


def test_stopped_follower_catches_up_after_restart(cluster3: LocalCluster):
    """A follower stopped while hundreds of writes commit catches up when restarted."""
    leader = cluster3.wait_for_leader()
    lagger = followers(cluster3, leader)[0]
    cluster3.kill(lagger, signal.SIGKILL)
    for i in range(300):
        put(leader.http_port, f"c{i}", str(i))
    target = cluster3.status(leader)["commit_index"]
    cluster3.start_node(lagger)

    def caught_up():
        st = cluster3.status(lagger)
        return st and st["applied_index"] >= target

    cluster3.wait_for("the restarted follower to catch up", caught_up)
    assert jsonrpc(lagger.http_port, "get", "c299") == "299"


def test_paused_leader_steps_down_and_loses_nothing(cluster3: LocalCluster):
    """SIGSTOP the leader past the election timeout, SIGCONT it: it steps down, no loss."""
    leader = cluster3.wait_for_leader()
    put(leader.http_port, "before", "pause")
    cluster3.kill(leader, signal.SIGSTOP)
    others = followers(cluster3, leader)

    def other_leader():
        for n in others:
            st = cluster3.status(n)
            if st and st["role"] == "leader":
                return n
        return None

    new = cluster3.wait_for("a leader among the others", other_leader)
    put(new.http_port, "during", "pause")
    cluster3.kill(leader, signal.SIGCONT)

    def old_steps_down():
        st = cluster3.status(leader)
        return st and st["role"] != "leader" and st["applied_index"] >= 1

    cluster3.wait_for("the old leader to step down", old_steps_down)
    # A paused process still holds its port: no survivor was told it was gone.
    assert [(cluster3.status(n) or {})["stats"]["leader_gone"] for n in others] == [0, 0]
    assert get(leader.http_port, "before") == "pause"
    assert get(leader.http_port, "during") == "pause"


def test_bad_input_to_the_peer_port_is_refused_and_node_keeps_serving(cluster3: LocalCluster):
    """Random bytes and an oversized frame on a peer port: dropped, and puts still work."""
    import socket

    leader = cluster3.wait_for_leader()
    for payload in (b"\x00\x01garbage\xff" * 50, b"\x00\x10" + b"x" * 70000):
        with socket.create_connection(("127.0.0.1", leader.peer_port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    put(leader.http_port, "still", "serving")
    assert get(leader.http_port, "still") == "serving"


def test_jsonrpc_errors_are_explicit(cluster3: LocalCluster):
    """Unknown methods and wrong parameter types get JSON-RPC errors, not silence."""
    leader = cluster3.wait_for_leader()
    with pytest.raises(RpcError):
        jsonrpc(leader.http_port, "no_such_method")
    with pytest.raises(RpcError):
        jsonrpc(leader.http_port, "put", 1, 2)
    put(leader.http_port, "ok", "yes")


def test_a_hello_without_the_cluster_key_is_refused_and_reveals_nothing(cluster3: LocalCluster):
    """Issue 19 finding 4: the right cluster id and node id, but no key proof: refused, no id."""
    import socket

    from twisted.protocols import amp

    from leeky_twisted.security.clusterkey import cluster_id_from_key, read_key_file

    cluster_id = cluster_id_from_key(read_key_file(str(cluster3.key_path)))
    leader = cluster3.wait_for_leader()
    member = followers(cluster3, leader)[0].node_id.encode()  # a known id, not the leader's
    hello = amp.AmpBox(
        {
            b"_command": b"Hello",
            b"_ask": b"1",
            b"cluster_id": cluster_id.encode(),
            b"node_id": member,
        }
    )
    with socket.create_connection(("127.0.0.1", leader.peer_port), timeout=5) as s:
        s.sendall(hello.serialize())
        s.settimeout(5)
        answer = b""
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert b"HELLO_REFUSED" in answer
    assert cluster_id.encode() not in answer
    assert b"no proof" in leader.log_path.read_bytes()
    put(leader.http_port, "still", "serving")
