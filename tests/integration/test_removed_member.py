"""A node removed while it was down learns it when it comes back (real processes)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from leeky_twisted.ops.localcluster import jsonrpc
from tests.integration.test_local_demo import CLI, FAST, Output, free_base_port, node_pids

pytestmark = pytest.mark.integration


def wait(what: str, check: Any, timeout: float = 60.0) -> Any:
    """Return check()'s first true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # noqa: TID251 - polling a condition under a deadline


def test_a_node_removed_while_down_shows_removed_when_it_comes_back(tmp_path):
    """Stop node 3, remove it, restart it on its data: it ends in role removed, says why once."""
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

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        clients = ",".join(f"127.0.0.1:{base + i}" for i in (1, 2))
        return run(CLI, "--cluster", clients, *args)

    def status(node: int) -> dict[str, Any] | None:
        try:
            return jsonrpc(base + 200 + node, "status", timeout=1)
        except Exception:
            return None

    try:
        out.wait_for(lambda line: line.startswith("Ctrl-C"), "Ctrl-C ...")
        assert cli("put", "k", "v").returncode == 0
        assert run(CLI, "local", "kill", "3", "--dir", str(folder)).returncode == 0
        removed = cli("remove-server", "3")
        assert removed.returncode == 0, removed.stderr
        wait(
            "a leader of voters 1 and 2",
            lambda: set((status(1) or {}).get("voters") or ()) == {"1", "2"},
        )
        restarted = run(CLI, "local", "restart", "3", "--dir", str(folder))
        assert restarted.returncode == 0, restarted.stderr
        st = wait(
            "node 3 to show role removed", lambda: (s := status(3)) and s["role"] == "removed" and s
        )
        assert st["leader"] is None
        # it stays so: no campaign moves the members' term
        term = status(1)["term"]
        assert cli("put", "k", "w").returncode == 0
        assert status(1)["term"] == term and status(3)["role"] == "removed"
        # it refuses clients at once, saying what to do; the CLI moves on from it
        gone, live = f"127.0.0.1:{base + 3}", f"127.0.0.1:{base + 1}"
        started = time.monotonic()
        refused = run(CLI, "--cluster", gone, "get", "k")
        assert (refused.returncode, refused.stdout) == (5, ""), refused.stderr
        assert "node 3 was removed from the cluster" in refused.stderr
        assert "use another node" in refused.stderr and "add-server 3" in refused.stderr
        passed_over = run(CLI, "--cluster", f"{gone},{live}", "get", "k")
        assert (passed_over.returncode, passed_over.stdout) == (0, "w\n"), passed_over.stderr
        assert time.monotonic() - started < 6.0  # was 10.4 s, then 1.9 s: now two CLI starts
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in node_pids(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    text = (folder / "node3" / "node.log").read_text()
    # the members forgot it once they applied its removal: no stale queued message
    # reached it after its restart (it never believed it followed), nor did they dial it
    restarted_log = text[text.rindex("starting up.") :]
    assert "I am follower" not in restarted_log, restarted_log
    for member in (1, 2):
        member_log = (folder / f"node{member}" / "node.log").read_text()
        assert "connected to peer 3 again" not in member_log
    assert text.count("was removed from the cluster") == 1, text[-3000:]
    assert "wipe its data folder" in text
