"""The seed's demo on `leekyraft local`: kill the leader, see a new one, bring the old one back."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, jsonrpc
from tests.integration.localrun import CLI, node_pids, start_local

pytestmark = pytest.mark.integration


def wait_for_exits(pids: list[int], timeout: float) -> list[int]:
    """Wait (no sleeping: pidfds, as select sees them) until every pid has exited or
    ``timeout`` passes; return the pids still running."""
    import select

    fds = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    try:
        deadline = time.monotonic() + timeout
        waiting = set(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(waiting), [], [], left)
            waiting -= set(ready)
        return sorted(fds[fd] for fd in waiting)
    finally:
        for fd in fds:
            os.close(fd)


def test_kill_the_leader_see_a_new_one_restart_the_old_and_pause_one(tmp_path):
    """`leekyraft local` outlives kill -9 of its leader; kill, restart, pause, resume work."""
    folder = tmp_path / "local"
    with start_local(folder) as local:
        out, cli = local.out, local.cli
        first = out.wait_for(lambda line: line.startswith("leader: node "), "leader: node N")
        dashboard = out.wait_for(lambda line: line.startswith("dashboard: "), "dashboard: URL")
        local.wait_ready()
        assert dashboard.split()[1] == f"http://127.0.0.1:{local.http_port(1)}/"
        with urllib.request.urlopen(dashboard.split()[1], timeout=10) as page:
            assert b"<title>Leeky Raft dashboard</title>" in page.read()
        old = first.split()[-1]
        assert cli("put", "pizzatoppings", "peporoni", "cheddar").returncode == 0

        mark = len(out.lines)
        killed = local.local("kill", old)
        assert (killed.returncode, killed.stdout.strip()) == (0, f"killed node {old} (SIGKILL)")
        out.wait_for(
            lambda line: line.startswith(f"node {old} exited (killed by SIGKILL)"),
            f"node {old} exited",
            mark,
        )
        changed = out.wait_for(
            lambda line: line.startswith("leader changed:") and "-> node " in line,
            "leader changed: ... -> node M",
            mark,
        )
        new = changed.split("-> node ")[1].split()[0]
        assert new != old
        assert local.proc.poll() is None  # the supervisor and the others keep running

        mark = len(out.lines)
        restarted = local.local("restart", old)
        assert restarted.returncode == 0, restarted.stderr
        out.wait_for(
            lambda line: line.startswith(f"node {old} is back: follower"),
            f"node {old} is back",
            mark,
        )
        assert jsonrpc(local.http_port(old), "status")["role"] == "follower"
        got = cli("get", "pizzatoppings")
        assert (got.returncode, got.stdout.strip()) == (0, "peporoni cheddar"), got.stderr

        paused = local.local("pause", "leader")
        assert paused.returncode == 0, paused.stderr
        try:
            got = cli("get", "pizzatoppings")
            assert (got.returncode, got.stdout.strip()) == (0, "peporoni cheddar"), got.stderr
        finally:
            pid = paused.stdout.split()[2]  # "paused node N (SIGSTOP): ..."
            assert local.local("resume", pid).returncode == 0

        nobody = local.run(CLI, "local", "kill", "1", "--dir", str(tmp_path / "none"))
        assert nobody.returncode == 3 and "no `leekyraft local` is running" in nobody.stderr

        local.proc.send_signal(signal.SIGINT)
        assert local.proc.wait(timeout=60) == 0
    assert local.left == []
    layout = json.loads((folder / "cluster.json").read_text())
    assert len(layout["nodes"]) == 3
    assert (folder / "node1" / "data").is_dir()
    assert not (folder / "node1" / str(folder).lstrip("/")).exists()
    # Logs: info by default (the role changes above were debug lines), and the CLI's
    # connections, the forwarding pool's and the peers' add no AMP or factory lines.
    for n in (1, 2, 3):
        text = (folder / f"node{n}" / "node.log").read_text()
        assert "#debug]" not in text
        assert "connection established" not in text and "connection lost" not in text
        assert "OneShotFactory" not in text


def test_a_two_node_local_cluster_is_refused_in_one_line(tmp_path):
    """Two new nodes both abstain at first: they could never elect; refused before starting."""
    out = subprocess.run(
        [CLI, "local", "--nodes", "2", "--dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 64 and "--nodes must be 1 or 3 to 9" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "two").exists()


def test_sigkill_of_leekyraft_local_ends_every_node_it_started(tmp_path):
    """`kill -9` of `leekyraft local` leaves no node behind, a paused one included: each
    sees the supervisor's pipe close and stops as on SIGTERM. Their logs hold no
    "Starting factory <..._HTTP11ClientFactory ...>" lines from the dashboard's HTTP client."""
    folder = tmp_path / "local"
    with start_local(folder) as local:
        local.wait_ready()
        pids = node_pids(folder)
        assert len(pids) == 3, pids
        # The dashboards ask each other over HTTP (the log check below needs one such
        # connection): node 1's view has node 2 answering.
        cluster_view = f"http://127.0.0.1:{local.http_port(1)}/dashboard/cluster"

        def node_2_reachable() -> bool:
            with urllib.request.urlopen(cluster_view, timeout=10) as page:
                return json.loads(page.read())["members"]["2"]["reachable"]

        LocalCluster.wait_for("node 1 to reach node 2's dashboard", node_2_reachable, 30)
        paused = local.local("pause", "2")
        assert paused.returncode == 0, paused.stderr

        local.proc.kill()
        local.proc.wait(timeout=60)
        assert wait_for_exits(pids, timeout=60) == []
    for n in (1, 2, 3):
        text = (folder / f"node{n}" / "node.log").read_text()
        assert "(leekyraft local) has ended: stopping the node" in text
        assert "_HTTP11ClientFactory" not in text
