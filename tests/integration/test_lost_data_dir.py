"""A node whose data folder is deleted or replaced while it runs exits 1; the others serve on.

Real twistd processes on loopback (ops.localcluster). On Linux a process keeps
writing to files whose folder was deleted, so without the check such a node
would go on acknowledging writes and granting votes that no restart keeps.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess, jsonrpc

pytestmark = pytest.mark.integration

#: seconds a node has to notice (one check interval, 1 s) and shut down
EXIT_DEADLINE = 30.0


def wait_for_exit(node: NodeProcess) -> int:
    """Wait (bounded) for ``node``'s process to end on its own; return its status."""
    assert node.proc is not None
    try:
        return node.proc.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"node {node.node_id} still runs {EXIT_DEADLINE} s after its data folder went"
        ) from None


def the_stop_line(node: NodeProcess, data: Path) -> str:
    """Return the node's one critical line about its data folder (exactly one)."""
    lines = [
        line
        for line in node.log_path.read_text(errors="replace").splitlines()
        if "is no longer the one this node opened" in line
    ]
    assert len(lines) == 1, lines
    assert f"the data folder {data} is no longer the one this node opened" in lines[0]
    assert "stopped itself to protect safety" in lines[0] and "critical" in lines[0]
    return lines[0]


def serves(c: LocalCluster, gone: NodeProcess, key: str) -> None:
    """A leader among the others takes a write; each other node reads it."""
    leader = c.wait_for_leader()
    assert leader is not gone
    jsonrpc(leader.http_port, "put", key, "after")
    assert jsonrpc(leader.http_port, "get", key) == "after"
    for node in c.nodes:
        if node is not gone:
            c.wait_for(
                f"{key} on node {node.node_id}",
                lambda node=node: jsonrpc(node.http_port, "get", key, {"stale": True}) == "after",
            )


def test_a_follower_whose_data_folder_is_deleted_exits_1(tmp_path: Path) -> None:
    """rm -rf a follower's DATA-DIR: it logs one critical line naming the folder and exits 1
    (no traceback); the other two elect, take writes and serve them."""
    c = LocalCluster(tmp_path / "c", nodes=3)
    try:
        c.start()
        leader = c.wait_for_leader()
        jsonrpc(leader.http_port, "put", "k", "before")
        victim = next(n for n in c.nodes if n is not leader)
        data = victim.folder / "data"
        shutil.rmtree(data)
        assert wait_for_exit(victim) == 1
        the_stop_line(victim, data)
        assert "Traceback" not in victim.log_path.read_text(errors="replace")
        serves(c, victim, "k")
    finally:
        c.stop()


def test_a_leader_whose_data_folder_is_replaced_exits_1_and_writes_nothing_there(
    tmp_path: Path,
) -> None:
    """The leader's DATA-DIR is moved away and a new empty one made at its path: the leader
    exits 1, leaves the new folder empty (so a restart there starts blank and abstains), and
    the other two elect a new leader that serves every acknowledged write."""
    c = LocalCluster(tmp_path / "c", nodes=3)
    try:
        c.start()
        leader = c.wait_for_leader()
        jsonrpc(leader.http_port, "put", "k", "before")
        data = leader.folder / "data"
        data.rename(leader.folder / "moved-away")
        data.mkdir()
        assert wait_for_exit(leader) == 1
        line = the_stop_line(leader, data)
        assert "was replaced" in line or "was deleted" in line
        assert list(data.iterdir()) == []
        serves(c, leader, "k2")
        survivor = c.wait_for_leader()
        assert jsonrpc(survivor.http_port, "get", "k") == "before"
    finally:
        c.stop()
