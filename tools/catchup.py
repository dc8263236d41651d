"""Measure how a follower stopped during N writes catches up (snapshot, then log).

python tools/catchup.py [WRITES]
"""

import signal
import sys
import tempfile
import time
from pathlib import Path

from leeky_twisted.ops.localcluster import LocalCluster, jsonrpc


def main() -> None:
    writes = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d), 3, ["--snapshot-entries", "10000"])
        try:
            c.start()
            leader = c.wait_for_leader()
            lagger = next(n for n in c.nodes if n is not leader)
            c.kill(lagger, signal.SIGKILL)
            c.bench("--clients", "32", "--ops", str(writes), "--seconds", "600", without=lagger)
            target = c.status(leader)["commit_index"]
            started = time.monotonic()
            c.start_node(lagger)
            st = c.wait_for(
                "catch-up",
                lambda: (s := c.status(lagger)) and s["applied_index"] >= target and s,
                timeout=300,
            )
            took = time.monotonic() - started
            print(
                f"follower stopped during {writes} writes: restarted, applied {target} "
                f"entries in {took:.2f} s (process start included); its snapshot index "
                f"{st['snapshot_index']}, first log index {st['first_index']}"
            )
            for i in range(100):
                jsonrpc(leader.http_port, "put", f"after{i}", "x")
            target = c.status(leader)["commit_index"]
            c.wait_for("log catch-up", lambda: c.status(lagger)["applied_index"] >= target, 30)
            print(
                f"then followed by log: applied {target} "
                f"(its own latest snapshot: {c.status(lagger)['snapshot_index']})"
            )
        finally:
            c.stop()


if __name__ == "__main__":
    main()
