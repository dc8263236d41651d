"""Snapshots and log compaction with real processes: catch-up by InstallSnapshot."""

from __future__ import annotations

import shutil
import signal

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, jsonrpc

pytestmark = pytest.mark.integration

ARGS = [
    "--tick",
    "0.02",
    "--heartbeat",
    "0.06",
    "--election-timeout",
    "0.3",
    "--snapshot-entries",
    "200",
]


def _write(port: int, prefix: str, n: int) -> None:
    for i in range(n):
        jsonrpc(port, "put", f"{prefix}{i}", str(i))


def test_wiped_follower_is_restored_by_snapshot(tmp_path):
    """A follower whose data folder is wiped rejoins and gets a snapshot, then the log."""
    c = LocalCluster(tmp_path / "snap", nodes=3, extra_args=ARGS)
    try:
        c.start()
        leader = c.wait_for_leader()
        victim = next(n for n in c.nodes if n is not leader)
        c.kill(victim, signal.SIGKILL)
        _write(leader.http_port, "a", 700)
        st = c.status(leader)
        assert st["snapshot_index"] > 0 and st["first_index"] > 1
        shutil.rmtree(victim.folder / "data")
        c.start_node(victim)
        _write(leader.http_port, "b", 50)
        target = c.status(leader)["commit_index"]

        def caught_up():
            s = c.status(victim)
            return s and s["applied_index"] >= target

        c.wait_for("the wiped follower to catch up", caught_up, timeout=60)
        vs = c.status(victim)
        assert vs["snapshot_index"] > 0
        for key, value in (("a0", "0"), ("a699", "699"), ("b49", "49")):
            assert jsonrpc(victim.http_port, "get", key, {"stale": True}) == value
    finally:
        c.stop()


def test_restart_loads_snapshot_and_replays_log(tmp_path):
    """After compaction, a full restart recovers state from snapshot plus log."""
    c = LocalCluster(tmp_path / "replay", nodes=3, extra_args=ARGS)
    try:
        c.start()
        leader = c.wait_for_leader()
        _write(leader.http_port, "r", 450)
        for n in c.nodes:
            c.kill(n, signal.SIGKILL)
        c.start()
        leader = c.wait_for_leader()
        for i in (0, 199, 200, 449):
            assert jsonrpc(leader.http_port, "get", f"r{i}") == str(i)
        assert c.status(leader)["snapshot_index"] > 0
    finally:
        c.stop()
