"""The seed's demo on `leekyraft local`: kill the leader, see a new one, bring the old one back."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import jsonrpc

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")


def free_base_port(nodes: int) -> int:
    """Return a base port B whose client, peer and HTTP ports (B+i, B+100+i, B+200+i) are free."""
    for _ in range(100):
        base = random.randrange(20000, 60000, 1000)
        ports = [base + offset + i for offset in (0, 100, 200) for i in range(1, nodes + 1)]
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range found")


class Output:
    """Collect a process's output lines on a thread; wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate, what: str, start: int = 0, timeout: float = 60.0) -> str:
        """Return the first line from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line {what} in:\n" + "\n".join(self.lines))
                self._cond.wait(left)


def node_pids(folder: Path) -> list[int]:
    """Return the pids of the node processes running on ``folder`` (by their --data-dir)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--data-dir {folder}/"], capture_output=True, text=True
    ).stdout.split()
    return sorted(int(pid) for pid in found)


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
    base = free_base_port(3)
    env = {k: v for k, v in os.environ.items() if k != "LEEKYRAFT_CLUSTER"}
    proc = subprocess.Popen(
        [CLI, "local", "--nodes", "3", "--dir", str(folder), "--base-port", str(base)]
        + [f"--node-arg={a}" for a in FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    out = Output(proc)

    def local(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, "local", *args, "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        clients = ",".join(f"127.0.0.1:{base + i}" for i in (1, 2, 3))
        return subprocess.run(
            [CLI, "--cluster", clients, *args], capture_output=True, text=True, timeout=60, env=env
        )

    def http(node: str) -> int:
        return base + 200 + int(node)

    try:
        first = out.wait_for(lambda line: line.startswith("leader: node "), "leader: node N")
        dashboard = out.wait_for(lambda line: line.startswith("dashboard: "), "dashboard: URL")
        out.wait_for(lambda line: line.startswith("Ctrl-C"), "Ctrl-C ...")
        assert dashboard.split()[1] == f"http://127.0.0.1:{http('1')}/"
        with urllib.request.urlopen(dashboard.split()[1], timeout=10) as page:
            assert b"<title>Leeky Raft dashboard</title>" in page.read()
        old = first.split()[-1]
        assert cli("put", "pizzatoppings", "peporoni", "cheddar").returncode == 0

        mark = len(out.lines)
        killed = local("kill", old)
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
        assert proc.poll() is None  # the supervisor and the others keep running

        mark = len(out.lines)
        restarted = local("restart", old)
        assert restarted.returncode == 0, restarted.stderr
        out.wait_for(
            lambda line: line.startswith(f"node {old} is back: follower"),
            f"node {old} is back",
            mark,
        )
        assert jsonrpc(http(old), "status")["role"] == "follower"
        got = cli("get", "pizzatoppings")
        assert (got.returncode, got.stdout.strip()) == (0, "peporoni cheddar"), got.stderr

        paused = local("pause", "leader")
        assert paused.returncode == 0, paused.stderr
        try:
            got = cli("get", "pizzatoppings")
            assert (got.returncode, got.stdout.strip()) == (0, "peporoni cheddar"), got.stderr
        finally:
            pid = paused.stdout.split()[2]  # "paused node N (SIGSTOP): ..."
            assert local("resume", pid).returncode == 0

        nobody = subprocess.run(
            [CLI, "local", "kill", "1", "--dir", str(tmp_path / "none")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert nobody.returncode == 3 and "no `leekyraft local` is running" in nobody.stderr

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Anything left (only if the supervisor itself failed) is ours: resume, then kill.
        left = node_pids(folder)
        for pid in left:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), sig)
    assert left == []
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
    base = free_base_port(3)
    env = {k: v for k, v in os.environ.items() if k != "LEEKYRAFT_CLUSTER"}
    proc = subprocess.Popen(
        [CLI, "local", "--nodes", "3", "--dir", str(folder), "--base-port", str(base)]
        + [f"--node-arg={a}" for a in FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    out = Output(proc)
    pids: list[int] = []
    try:
        out.wait_for(lambda line: line.startswith("Ctrl-C"), "Ctrl-C ...")
        pids = node_pids(folder)
        assert len(pids) == 3, pids
        # The dashboards ask each other over HTTP (the log check below needs one such
        # connection): node 1's view has node 2 answering.
        cluster_view = f"http://127.0.0.1:{base + 201}/dashboard/cluster"
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(cluster_view, timeout=10) as page:
                if json.loads(page.read())["members"]["2"]["reachable"]:
                    break
            assert time.monotonic() < deadline, "node 1 never reached node 2's dashboard"
            time.sleep(0.1)  # noqa: TID251 - polling a condition under a deadline
        paused = subprocess.run(
            [CLI, "local", "pause", "2", "--dir", str(folder)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert paused.returncode == 0, paused.stderr

        proc.kill()
        proc.wait(timeout=60)
        assert wait_for_exits(pids, timeout=60) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in set(pids) | set(node_pids(folder)):
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
    for n in (1, 2, 3):
        text = (folder / f"node{n}" / "node.log").read_text()
        assert "(leekyraft local) has ended: stopping the node" in text
        assert "_HTTP11ClientFactory" not in text
