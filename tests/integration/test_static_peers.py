"""Static ``--peers`` clusters as real processes: keyless on loopback, keyed anywhere (#19)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from leeky_twisted.chaos.attacks import forged_proof, hello_box
from leeky_twisted.core.messages import AppendEntries, Entry, Heartbeat, NodeId
from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess, jsonrpc, twistd_path
from leeky_twisted.security.clusterkey import DEFAULT_CLUSTER_ID, cluster_id_from_key, read_key_file
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.transport.peer_protocol import frame_message

pytestmark = pytest.mark.integration


def forge(cluster_id: str, leader: NodeProcess, target: NodeProcess, term: int, proof) -> bytes:
    """Return a Hello as ``leader`` (with ``proof``), then a heartbeat and an append at ``term``.

    The append overwrites key ``k`` with ``forged`` right after the target's last entry.
    """
    sender, recipient = NodeId(leader.node_id), NodeId(target.node_id)
    last = int(jsonrpc(target.http_port, "status")["last_index"])
    put = Entry(last + 1, term, data=encode_command(Put("k", "forged")))
    return hello_box(cluster_id, leader.node_id, proof) + b"".join(
        [
            frame_message(Heartbeat(sender, recipient, term, last)),
            frame_message(AppendEntries(sender, recipient, term, last, term - 5, (put,), last + 1)),
        ]
    )


def send(port: int, data: bytes) -> bytes:
    """Write ``data`` to a peer port and return what comes back before it closes (5 s at most)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
    return answer


def term_of(node: NodeProcess) -> int:
    return int(jsonrpc(node.http_port, "status")["term"])


def test_the_bench_command_line_starts_a_keyless_loopback_cluster(tmp_path: Path):
    """The shared benchmark's exact command line (no key, 127.0.0.1) starts, elects and serves.

    Without a key the peer port is open to this machine: the same forged frames
    that a keyed cluster refuses (below) move a follower's term here.
    """
    c = LocalCluster(tmp_path / "bare", nodes=3)
    c.extra_args = []  # no --gossip-key-file: the bench's command line
    node = c.nodes[0]
    assert c.argv(node) == [
        twistd_path(), "-n", "--pidfile=", "leekyraft", "--id", node.node_id,
        "--peers", c.peers_arg(), "--data-dir", str(node.folder / "data"),
        "--client-port", str(node.client_port), "--http-port", str(node.http_port),
    ]  # fmt: skip
    try:
        c.start()
        leader = c.wait_for_leader()
        jsonrpc(leader.http_port, "put", "k", "v")
        assert b"peer Hellos are not authenticated" in leader.log_path.read_bytes()
        target = next(n for n in c.nodes if n is not leader)
        term = term_of(leader)
        send(target.peer_port, forge(DEFAULT_CLUSTER_ID, leader, target, term + 5, None))

        def forged() -> bool:
            # The forged term moved, or the forged append (committed at that
            # term) later conflicted with the real leader's and the node stopped.
            try:
                return term_of(target) > term
            except OSError:
                return b"stopped itself to protect safety" in target.log_path.read_bytes()

        c.wait_for("the forged term", forged, timeout=10)
    finally:
        c.stop()


def test_a_keyed_static_cluster_refuses_forgers_and_keeps_its_state(tmp_path: Path):
    """--peers with --gossip-key-file: a Hello without or with a forged proof is refused.

    The heartbeat and the append written behind it (a higher term, a forged
    put of an acknowledged key) change nothing: not the term, not the value.
    """
    c = LocalCluster(tmp_path / "keyed", nodes=3)  # static --peers, one shared key file
    try:
        c.start()
        leader = c.wait_for_leader()
        jsonrpc(leader.http_port, "put", "k", "v")
        cluster_id = cluster_id_from_key(read_key_file(str(c.key_path)))
        target = next(n for n in c.nodes if n is not leader)
        c.wait_for("the put", lambda: jsonrpc(target.http_port, "get", "k", {"stale": True}))
        term = term_of(leader)
        for proof in (None, forged_proof()):
            answer = send(target.peer_port, forge(cluster_id, leader, target, term + 5, proof))
            assert b"HELLO_REFUSED" in answer and cluster_id.encode() not in answer
        log = target.log_path.read_bytes()
        assert b"no proof of the cluster key" in log and b"not made with our cluster key" in log
        assert term_of(target) == term_of(leader) == term
        assert jsonrpc(target.http_port, "get", "k", {"stale": True}) == "v"
        assert jsonrpc(leader.http_port, "get", "k") == "v"
    finally:
        c.stop()


def test_a_member_started_with_another_peers_list_is_refused_both_ways(tmp_path: Path):
    """Node 5 is given a sixth voter: the others refuse it (and it them), naming both lists.

    The four that agree elect a leader and serve (a brand-new cluster's first
    election needs a majority plus one: its members all abstain, docs/core.md);
    node 5 never hears of their entries, so Log Matching is never silently broken.
    """

    class OddFifth(LocalCluster):
        def argv(self, node: NodeProcess) -> list[str]:
            argv = super().argv(node)
            if node is self.nodes[4]:
                at = argv.index("--peers") + 1
                argv[at] += ",6=127.0.0.1:1"
            return argv

    c = OddFifth(tmp_path / "odd", nodes=5)
    odd = c.nodes[4]
    ours = c.peers_arg()
    try:
        c.start()
        leader = c.wait_for_leader()
        assert leader is not odd
        jsonrpc(leader.http_port, "put", "k", "v")
        theirs = f"{ours},6=127.0.0.1:1"
        c.wait_for(
            "the refusals",
            lambda: (
                f"({theirs}) than ours ({ours})".encode() in leader.log_path.read_bytes()
                and f"({ours}) than ours ({theirs})".encode() in odd.log_path.read_bytes()
            ),
        )
        assert jsonrpc(odd.http_port, "get", "k", {"stale": True}) is None
        assert jsonrpc(odd.http_port, "status")["leader"] is None
    finally:
        c.stop()
