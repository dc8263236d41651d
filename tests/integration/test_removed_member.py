"""A node removed while it was down learns it when it comes back (real processes)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, jsonrpc
from tests.integration.localrun import CLI, start_local

pytestmark = pytest.mark.integration


def test_a_node_removed_while_down_shows_removed_when_it_comes_back(tmp_path):
    """Stop node 3, remove it, restart it on its data: it ends in role removed, says why once."""
    folder = tmp_path / "local"
    with start_local(folder) as local:

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return local.cli(*args, nodes=(1, 2))

        def status(node: int) -> dict[str, Any] | None:
            try:
                return jsonrpc(local.http_port(node), "status", timeout=1)
            except Exception:
                return None

        local.wait_ready()
        assert cli("put", "k", "v").returncode == 0
        assert local.local("kill", "3").returncode == 0
        removed = cli("remove-server", "3")
        assert removed.returncode == 0, removed.stderr
        LocalCluster.wait_for(
            "a leader of voters 1 and 2",
            lambda: set((status(1) or {}).get("voters") or ()) == {"1", "2"},
            60,
        )
        restarted = local.local("restart", "3")
        assert restarted.returncode == 0, restarted.stderr
        st = LocalCluster.wait_for(
            "node 3 to show role removed",
            lambda: (s := status(3)) and s["role"] == "removed" and s,
            60,
        )
        assert st["leader"] is None
        # it stays so: no campaign moves the members' term
        term = status(1)["term"]
        assert cli("put", "k", "w").returncode == 0
        assert status(1)["term"] == term and status(3)["role"] == "removed"
        # it refuses clients at once, saying what to do; the CLI moves on from it
        gone, live = f"127.0.0.1:{local.base + 3}", f"127.0.0.1:{local.base + 1}"
        started = time.monotonic()
        refused = local.run(CLI, "--cluster", gone, "get", "k")
        assert (refused.returncode, refused.stdout) == (5, ""), refused.stderr
        assert "node 3 was removed from the cluster" in refused.stderr
        assert "use another node" in refused.stderr and "add-server 3" in refused.stderr
        passed_over = local.run(CLI, "--cluster", f"{gone},{live}", "get", "k")
        assert (passed_over.returncode, passed_over.stdout) == (0, "w\n"), passed_over.stderr
        assert time.monotonic() - started < 6.0  # was 10.4 s, then 1.9 s: now two CLI starts
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
