"""`leekyraft local`'s cluster and supervisor, with fake processes (no node runs)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import ClusterSizeMismatch, LocalCluster, Supervisor

ROOT = Path(__file__).resolve().parents[1]


def test_a_relative_folder_gives_each_node_an_absolute_data_dir(tmp_path, monkeypatch):
    """Nodes run in their own folder: a relative --data-dir would nest the data twice."""
    monkeypatch.chdir(tmp_path)
    cluster = LocalCluster(Path("leekyraft-local"), 3, base_port=8000)
    argv = cluster.argv(cluster.nodes[0])
    data_dir = argv[argv.index("--data-dir") + 1]
    assert data_dir == str(tmp_path / "leekyraft-local" / "node1" / "data")
    key = argv[argv.index("--gossip-key-file") + 1]
    assert Path(key) == tmp_path / "leekyraft-local" / "cluster.key"


def test_a_folder_made_for_five_nodes_refuses_three(tmp_path):
    """Asking for 3 nodes on a 5-node folder is refused with a clear message, not run as 5."""
    LocalCluster(tmp_path, 5, base_port=8000)
    with pytest.raises(ClusterSizeMismatch, match="holds a 5-node cluster, not 3 nodes"):
        LocalCluster(tmp_path, 3, base_port=8000)
    assert len(LocalCluster(tmp_path, 5).nodes) == 5


def test_the_local_data_folder_is_git_ignored():
    """`leekyraft local`'s default folder never shows up as untracked files."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    done = subprocess.run(
        ["git", "check-ignore", "-q", "leekyraft-local/node1/node.log"], cwd=ROOT, check=False
    )
    assert done.returncode == 0


class FakeProc:
    """A Popen stand-in: records signals; SIGKILL and SIGTERM end it."""

    _next_pid = 100

    def __init__(self) -> None:
        FakeProc._next_pid += 1
        self.pid = FakeProc._next_pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.returncode = -sig

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class FakeCluster(LocalCluster):
    """A LocalCluster whose processes are FakeProcs and whose statuses are set by the test."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, 3, base_port=8000)
        self.statuses: dict[str, dict] = {}
        self.stopped = False
        for n in self.nodes:
            n.proc = FakeProc()  # type: ignore[assignment]

    def start_node(self, node):  # type: ignore[no-untyped-def]
        node.proc = FakeProc()

    def status(self, node, timeout=1.0):  # type: ignore[no-untyped-def]
        return self.statuses.get(node.node_id) if node.alive() else None

    def stop(self) -> None:
        self.stopped = True


def lead(cluster: FakeCluster, leader: str | None, term: int) -> None:
    for n in cluster.nodes:
        role = "leader" if n.node_id == leader else "follower"
        cluster.statuses[n.node_id] = {"role": role, "term": term, "leader": leader}


def test_a_dead_leader_is_reported_once_and_the_others_keep_running(tmp_path):
    """kill -9 of the leader: reported with the way back, the new leader shown, nothing stopped."""
    cluster = FakeCluster(tmp_path)
    said: list[str] = []
    sup = Supervisor(cluster, said.append)
    lead(cluster, "2", 2)
    sup.watch()
    assert said == ["leader changed: none -> node 2 (term 2)"]
    cluster.nodes[1].proc.returncode = -signal.SIGKILL  # killed from outside
    lead(cluster, None, 2)
    said.clear()
    sup.watch()
    sup.watch()
    assert said == [
        "node 2 exited (killed by SIGKILL); the others keep running. "
        "Bring it back: leekyraft local restart 2",
        "leader changed: node 2 -> none (an election is under way)",
    ]
    lead(cluster, "3", 3)
    said.clear()
    sup.watch()
    assert said == ["leader changed: none -> node 3 (term 3)"]
    assert not cluster.stopped and cluster.nodes[0].alive() and cluster.nodes[2].alive()


def test_restart_brings_a_node_back_and_reports_it_answering(tmp_path):
    """restart N starts the node again on its data; reported back once it knows the leader."""
    cluster = FakeCluster(tmp_path)
    said: list[str] = []
    sup = Supervisor(cluster, said.append)
    lead(cluster, "3", 3)
    sup.watch()
    cluster.nodes[1].proc.returncode = -9
    sup.watch()
    said.clear()
    reply = sup.handle({"action": "restart", "node": "2"})
    assert reply["ok"] and reply["message"].startswith("restarted node 2 on its data (pid ")
    assert cluster.nodes[1].alive()
    cluster.statuses["2"] = {"role": "follower", "term": 2, "leader": None}  # not caught up
    sup.watch()
    assert said == [reply["message"]]
    lead(cluster, "3", 3)
    sup.watch()
    assert said == [reply["message"], "node 2 is back: follower of node 3 (term 3)"]
    said.clear()
    sup.watch()
    assert said == []


def test_pause_and_resume_signal_the_node_and_a_paused_node_is_not_polled(tmp_path):
    """pause sends SIGSTOP, resume SIGCONT; a paused node is skipped when finding the leader."""
    cluster = FakeCluster(tmp_path)
    sup = Supervisor(cluster, lambda line: None)
    lead(cluster, "1", 2)
    assert sup.handle({"action": "pause", "node": "leader"})["ok"]
    assert cluster.nodes[0].proc.signals == [signal.SIGSTOP]
    assert sup.find_leader() is None  # node 1 still says leader, but it cannot answer
    assert sup.handle({"action": "pause", "node": "1"}) == {
        "ok": False,
        "error": "node 1 is already paused",
        "kind": "state",
    }
    assert sup.handle({"action": "resume", "node": "1"})["ok"]
    assert cluster.nodes[0].proc.signals == [signal.SIGSTOP, signal.SIGCONT]
    assert sup.find_leader() == (cluster.nodes[0], 2)


def test_bad_requests_get_one_clear_error(tmp_path):
    """Unknown nodes, dead nodes and unknown actions are refused, naming what is wrong, with
    a kind the command turns into its exit status (unknown-node: 64, no-leader: 7)."""
    cluster = FakeCluster(tmp_path)
    sup = Supervisor(cluster, lambda line: None)
    assert sup.handle({"action": "kill", "node": "9"}) == {
        "ok": False,
        "error": "no node '9': this cluster's nodes are 1, 2, 3",
        "kind": "unknown-node",
    }
    assert sup.handle({"action": "kill", "node": "leader"}) == {
        "ok": False,
        "error": "no node is leader at the moment",
        "kind": "no-leader",
    }
    assert sup.handle({"action": "kill", "node": "1"})["ok"]
    assert cluster.nodes[0].proc.signals == [signal.SIGKILL]
    assert sup.handle({"action": "kill", "node": "1"}) == {
        "ok": False,
        "error": "node 1 is not running",
        "kind": "state",
    }
    assert sup.handle({"action": "resume", "node": "2"})["error"] == "node 2 is not paused"
    assert sup.handle({"action": "explode", "node": "2"})["error"] == "unknown action 'explode'"
    assert not sup.handle({"node": "2"})["ok"]


def test_local_refuses_another_size_on_an_existing_folder_before_starting_anything(
    tmp_path, capsys
):
    """`leekyraft local --nodes 3` on a 5-node folder: a usage error (64, as every bad input),
    one line, no node started."""
    from leeky_twisted import cli

    LocalCluster(tmp_path, 5, base_port=8000)
    args = cli.build_parser().parse_args(["local", "--nodes", "3", "--dir", str(tmp_path)])
    assert cli.run_local(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a 5-node cluster, not 3 nodes" in err
    assert not (tmp_path / "node1").exists()


def test_a_node_that_stopped_itself_is_reported_with_its_reason(tmp_path):
    """Exit code 1 alone says nothing: the critical line of that run is shown, not an older one."""
    cluster = FakeCluster(tmp_path)
    said: list[str] = []
    sup = Supervisor(cluster, said.append)
    node = cluster.nodes[1]
    node.folder.mkdir(parents=True)
    old = "2026-12-04T22:00:00+0000 [leeky_twisted.server.node#critical] an older run's end\n"
    node.log_path.write_text(old)
    node.log_offset = len(old)
    with open(node.log_path, "a") as log:
        log.write(
            "2026-12-04T22:09:29+0000 [leeky_twisted.server.node#critical] node 2 stopped "
            "itself to protect safety: the data folder d was deleted\n"
            "2026-12-04T22:09:29+0000 [-] (TCP Port 8102 Closed)\n"
        )
    node.proc.returncode = 1
    sup.watch()
    assert said[0] == (
        "node 2 exited (exit code 1): node 2 stopped itself to protect safety: the data "
        f"folder d was deleted (log: {node.log_path}); the others keep running. "
        "Bring it back: leekyraft local restart 2"
    )


def test_a_node_refused_at_start_is_reported_with_its_last_line(tmp_path):
    """A start refused on standard error (no critical line): its last line is the reason."""
    cluster = FakeCluster(tmp_path)
    said: list[str] = []
    sup = Supervisor(cluster, said.append)
    node = cluster.nodes[2]
    node.folder.mkdir(parents=True)
    node.log_path.write_text(
        "usage: twistd leekyraft ...\n\n"
        "twistd -n: node id: --id 3 differs from the id 2 stored in d/node-id\n"
    )
    node.proc.returncode = 1
    sup.watch()
    assert said[0].startswith(
        "node 3 exited (exit code 1): twistd -n: node id: --id 3 differs from the id 2 "
        "stored in d/node-id (log: "
    )


def test_a_removed_node_is_reported_once_with_the_command_that_adds_it_back(tmp_path):
    """remove-server of a running node: said once, with its peer address; added back: said."""
    cluster = FakeCluster(tmp_path)
    said: list[str] = []
    sup = Supervisor(cluster, said.append)
    lead(cluster, "1", 2)
    sup.watch()
    said.clear()
    cluster.statuses["2"] = {"role": "removed", "term": 2, "leader": None}
    sup.watch()
    sup.watch()
    peer = cluster.nodes[1].peer_port
    assert said == [
        "node 2 was removed from the cluster: it runs but serves nothing. "
        f"Add it back: leekyraft add-server 2 127.0.0.1:{peer}"
    ]
    said.clear()
    cluster.statuses["2"] = {"role": "follower", "term": 2, "leader": "1"}
    sup.watch()
    assert said == ["node 2 is a member again: follower (term 2)"]
