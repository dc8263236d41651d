"""--force-new-cluster with real processes: a lost quorum is recovered from one survivor."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, free_ports, jsonrpc, twistd_path

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
GROW = ["--stabilization", "0.5", "--dead-grace", "1"]


class Nodes:
    """Nodes grown by gossip (--bootstrap / --join), each with its own ports and folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, dict[str, int]] = {}
        self.key = root / "cluster.key"

    def start(self, nid: str, *extra: str, join: str | None = None) -> None:
        if nid not in self.ports:
            peer, gossip, client, http = free_ports(4)
            self.ports[nid] = {"peer": peer, "gossip": gossip, "client": client, "http": http}
        ports = self.ports[nid]
        folder = self.root / nid
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            *(twistd_path(), "-n", "--pidfile=", "leekyraft", "--id", nid),
            *("--address", f"127.0.0.1:{ports['peer']}", "--gossip-port", str(ports["gossip"])),
            *("--data-dir", str(folder / "data"), "--gossip-key-file", str(self.key)),
            *("--client-port", str(ports["client"]), "--http-port", str(ports["http"])),
            *(["--join", join] if join else ["--bootstrap"]),
            *FAST,
            *GROW,
            *extra,
        ]
        with open(folder / "node.log", "ab") as log:
            self.procs[nid] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def gossip(self, nid: str) -> str:
        return f"127.0.0.1:{self.ports[nid]['gossip']}"

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[nid]
        p.send_signal(sig)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def status(self, nid: str) -> dict[str, Any]:
        if self.procs[nid].poll() is not None:
            return {}
        try:
            st = jsonrpc(self.ports[nid]["http"], "status", timeout=1)
        except Exception:
            return {}
        return st if isinstance(st, dict) else {}

    def rpc(self, nid: str, method: str, *args: str) -> Any:
        return jsonrpc(self.ports[nid]["http"], method, *args, timeout=10)

    def wait(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)  # noqa: TID251 - polling a condition under a deadline


def leads_with(nodes: Nodes, nid: str, voters: set[str]) -> Any:
    def check() -> bool:
        st = nodes.status(nid)
        return st.get("role") == "leader" and set(st.get("voters") or ()) == voters

    return check


@pytest.fixture
def nodes(tmp_path: Path):
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.stop()


def test_a_survivor_forced_into_a_new_cluster_keeps_its_data_and_grows_again(nodes: Nodes):
    """3 voters, writes; 2 die and are wiped; the survivor, forced, serves and regrows."""
    nodes.start("n1")
    nodes.wait("n1 leads", lambda: nodes.status("n1").get("role") == "leader")
    for nid in ("n2", "n3"):
        nodes.start(nid, join=nodes.gossip("n1"))
    nodes.wait("3 voters", leads_with(nodes, "n1", {"n1", "n2", "n3"}))
    for i in range(10):
        nodes.rpc("n1", "put", f"k{i}", str(i))
    commit = nodes.status("n1")["commit_index"]
    nodes.wait("n2 holds every write", lambda: nodes.status("n2").get("applied_index", 0) >= commit)

    # the majority is lost for good: n1 and n3 die, their disks with them
    for nid in ("n1", "n3"):
        nodes.kill(nid)
    shutil.copytree(nodes.root / "n3" / "data", nodes.root / "n3-old-data")  # for the end
    for nid in ("n1", "n3"):
        shutil.rmtree(nodes.root / nid / "data")
    nodes.kill("n2", signal.SIGTERM)
    nodes.start("n2", join=nodes.gossip("n1"))
    # without the option it campaigns and cannot win: 1 vote of 3
    nodes.wait("n2 campaigns", lambda: nodes.status("n2").get("role") == "candidate")
    nodes.kill("n2", signal.SIGTERM)

    nodes.start("n2", "--force-new-cluster", join=nodes.gossip("n1"))
    nodes.wait("n2 alone leads", leads_with(nodes, "n2", {"n2"}))
    log = (nodes.root / "n2" / "node.log").read_text()
    assert "--force-new-cluster: node n2 is now the ONLY member" in log
    for i in range(10):
        assert nodes.rpc("n2", "get", f"k{i}") == str(i)
    nodes.rpc("n2", "put", "after", "recovery")

    # one-shot: starting with the option again is refused, with one line and no traceback
    nodes.kill("n2", signal.SIGTERM)
    nodes.start("n2", "--force-new-cluster", join=nodes.gossip("n1"))
    assert nodes.procs["n2"].wait(30) != 0
    log = (nodes.root / "n2" / "node.log").read_text()
    assert "already ran on this data folder" in log and "Traceback" not in log
    nodes.start("n2", join=nodes.gossip("n1"))
    nodes.wait("n2 leads again", leads_with(nodes, "n2", {"n2"}))

    # grow again: the wiped n1 (same id, empty data) and a new n4 join through n2
    nodes.start("n1", join=nodes.gossip("n2"))
    nodes.start("n4", join=nodes.gossip("n2"))
    nodes.wait("3 voters again", leads_with(nodes, "n2", {"n1", "n2", "n4"}), timeout=90)
    nodes.rpc("n2", "put", "grown", "again")
    for nid in ("n1", "n4"):
        nodes.wait(
            f"{nid} applies",
            lambda nid=nid: (
                nodes.status(nid).get("applied_index", 0)
                >= nodes.status("n2").get("commit_index", 1)
            ),
        )
        assert nodes.rpc(nid, "get", "k9") == "9"
        assert nodes.rpc(nid, "get", "after") == "recovery"

    # against the advice, n3 comes back with its old data: it does not disrupt the
    # cluster (no new term, no new leader), and the autopilot takes it in as any
    # newcomer, a learner whose log the leader repairs, then a voter
    before = nodes.status("n2")
    (nodes.root / "n3-old-data").rename(nodes.root / "n3" / "data")
    nodes.start("n3", join=nodes.gossip("n2"))
    nodes.wait("n3 is a voter", leads_with(nodes, "n2", {"n1", "n2", "n3", "n4"}), timeout=90)
    nodes.wait("n3 applies", lambda: nodes.status("n3").get("applied_index", 0) >= commit)
    assert nodes.rpc("n3", "get", "grown") == "again"
    after = nodes.status("n2")
    assert (after["term"], after["leader_changes"]) == (before["term"], before["leader_changes"])


def test_a_static_cluster_recovers_and_takes_back_a_wiped_member(tmp_path: Path):
    """--peers cluster: survivor forced; a wiped old member, same id and --peers, re-added."""
    cli = str(Path(sys.executable).parent / "leekyraft")
    c = LocalCluster(tmp_path / "c", nodes=3, extra_args=FAST)
    try:
        c.start()
        leader = c.wait_for_leader()
        for i in range(5):
            jsonrpc(leader.http_port, "put", f"s{i}", str(i))
        survivor = next(n for n in c.nodes if n is not leader)
        commit = c.status(leader)["commit_index"]
        c.wait_for(
            "the survivor holds every write", lambda: c.status(survivor)["applied_index"] >= commit
        )
        lost = [n for n in c.nodes if n is not survivor]
        for n in lost:
            c.kill(n)
            shutil.rmtree(n.folder / "data")
        c.kill(survivor, signal.SIGTERM)
        c.extra_args.append("--force-new-cluster")
        c.start_node(survivor)
        c.extra_args.remove("--force-new-cluster")

        def alone() -> bool:
            st = c.status(survivor) or {}
            return st.get("role") == "leader" and st.get("voters") == [survivor.node_id]

        c.wait_for("the survivor alone leads", alone)
        assert jsonrpc(survivor.http_port, "get", "s4") == "4"
        back = lost[0]
        c.start_node(back)  # wiped: the same id and --peers, an empty folder
        r = subprocess.run(
            [
                cli,
                "--cluster",
                f"127.0.0.1:{survivor.client_port}",
                "add-server",
                back.node_id,
                f"127.0.0.1:{back.peer_port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        c.wait_for(
            "the wiped member is a voter again",
            lambda: (
                set((c.status(survivor) or {}).get("voters") or ())
                == {survivor.node_id, back.node_id}
            ),
        )
        jsonrpc(survivor.http_port, "put", "again", "yes")
        c.wait_for("it holds the data", lambda: jsonrpc(back.http_port, "get", "s2") == "2")
        assert jsonrpc(back.http_port, "get", "again") == "yes"
    finally:
        c.stop()
