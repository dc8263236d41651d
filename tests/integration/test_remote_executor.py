"""A 3-node cluster whose state machines are separate executor processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess, RpcError, free_ports, jsonrpc

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


class ExecutorCluster(LocalCluster):
    """A LocalCluster whose node i applies entries in executor process i."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, nodes=3, extra_args=FAST)
        self.exec_ports = dict(zip((n.node_id for n in self.nodes), free_ports(3), strict=True))
        self.executors: dict[str, subprocess.Popen[bytes]] = {}

    def argv(self, node: NodeProcess) -> list[str]:
        url = f"http://127.0.0.1:{self.exec_ports[node.node_id]}/jsonrpc"
        return [*super().argv(node), "--executor-url", url]

    def start_executor(self, nid: str) -> None:
        folder = self.root / f"executor{nid}"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "executor.log", "ab") as log:
            self.executors[nid] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "leeky_twisted.executor",
                    "--port",
                    str(self.exec_ports[nid]),
                    "--data-dir",
                    str(folder / "state"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_executor(self, nid: str) -> None:
        p = self.executors[nid]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def executor_rpc(self, nid: str, method: str, *params: object) -> object:
        return jsonrpc(self.exec_ports[nid], method, *params)

    def stop(self) -> None:
        super().stop()
        for p in self.executors.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)


def test_executor_processes_apply_the_log_exactly_once_through_restarts(tmp_path):
    """Executors and nodes are SIGKILLed and restarted; each executor applies the log once."""
    c = ExecutorCluster(tmp_path / "exec")
    try:
        for n in c.nodes:
            c.start_executor(n.node_id)
        c.start()
        leader = c.wait_for_leader()
        follower = next(n for n in c.nodes if n is not leader)
        added = jsonrpc(leader.http_port, "submit", "ADD f 100")
        assert added["name"] == "f" and added["size"] == 100
        assert jsonrpc(leader.http_port, "submit", "READ f")["reads"] == 1

        # The follower's executor dies: the cluster keeps committing.
        c.kill_executor(follower.node_id)
        for i in range(20):
            jsonrpc(leader.http_port, "submit", f"ADD g{i}")

        def noticed_down():
            st = c.status(follower)
            return (
                st
                and st["executor_reachable"] is False
                and st["commit_index"] > st["executor_applied_index"]
            )

        c.wait_for("the follower to notice its executor is down", noticed_down, timeout=30)
        c.start_executor(follower.node_id)

        # The follower's node dies and comes back while writes go on.
        c.kill(follower, signal.SIGKILL)
        for i in range(20):
            jsonrpc(leader.http_port, "submit", f"ADD h{i}")
        c.start_node(follower)
        target = c.status(leader)["commit_index"]

        def caught_up():
            st = c.status(follower)
            return st and st.get("executor_applied_index", 0) >= target

        c.wait_for("the follower's executor to catch up", caught_up, timeout=60)
        expected = sorted(["f", *(f"g{i}" for i in range(20)), *(f"h{i}" for i in range(20))])
        for n in c.nodes:
            c.wait_for(
                f"executor {n.node_id} to list every file",
                lambda n=n: c.executor_rpc(n.node_id, "query", "LIST") == expected,
                timeout=30,
            )
            record = c.executor_rpc(n.node_id, "query", "READ f")
            assert record["reads"] == 1  # READ f was applied exactly once everywhere
        assert jsonrpc(leader.http_port, "query", "READ f")["reads"] == 1
    finally:
        c.stop()


def leekyraft(c: ExecutorCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``leekyraft`` command line against the cluster's client ports."""
    cli = str(Path(sys.executable).parent / "leekyraft")
    cluster = ",".join(f"127.0.0.1:{n.client_port}" for n in c.nodes)
    return subprocess.run(
        [cli, "--cluster", cluster, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_kv_commands_are_refused_and_a_leader_without_executor_hands_over(tmp_path):
    """`get`/`put` on an executor cluster: exit 5 naming submit/query. Then the leader's
    executor dies: writes are answered (Unavailable at worst, never a hang), leadership
    moves to a node whose executor applies, and writes succeed again."""
    c = ExecutorCluster(tmp_path / "exec")
    try:
        for n in c.nodes:
            c.start_executor(n.node_id)
        c.start()
        leader = c.wait_for_leader()
        assert jsonrpc(leader.http_port, "submit", "ADD f 1")["name"] == "f"
        for args in (["get", "k"], ["put", "k", "v"]):
            r = leekyraft(c, *args)
            assert r.returncode == 5, (r.stdout, r.stderr)
            assert "this cluster runs an executor" in r.stderr + r.stdout
            assert "Traceback" not in r.stderr + r.stdout

        c.kill_executor(leader.node_id)
        attempts = iter(range(1000))

        def a_write_lands():
            name = f"g{next(attempts)}"  # each attempt a new file: a retry may have landed
            try:
                jsonrpc(leader.http_port, "submit", f"ADD {name}", timeout=10)
            except RpcError as e:  # refused or unknown while the leadership moves: retry
                assert e.error["code"] != -32603, e.error  # never an internal error
                assert "executor" in e.error["message"] or "leader" in e.error["message"]
                return False
            new = c.leader()
            return new is not None and new is not leader

        c.wait_for("a write through a new leader", a_write_lands, timeout=60)
        new_leader = c.leader()
        assert new_leader is not None and new_leader is not leader
        assert jsonrpc(new_leader.http_port, "query", "READ f")["reads"] == 0
    finally:
        c.stop()
