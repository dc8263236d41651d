"""Count elections and leader changes on a 3-node cluster during the bench workloads.

    python tools/elections_under_load.py

A spurious election (the term moving while every node is up) would show as a
term or leader change between the start and the end of the load.
"""

import tempfile
from pathlib import Path

from leeky_twisted.localcluster import LocalCluster


def snapshot(c: LocalCluster) -> list[tuple[str, int, int, int]]:
    out = []
    for n in c.nodes:
        st = c.status(n) or {}
        out.append(
            (n.node_id, st.get("term", -1), st.get("elections", -1), st.get("leader_changes", -1))
        )
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d), 3)
        try:
            c.start()
            c.wait_for_leader()
            c.wait_for("all nodes", lambda: all(c.status(n) for n in c.nodes))
            before = snapshot(c)
            for args in (
                ["--clients", "64", "--ops", "20000"],
                ["--workload", "get", "--clients", "64", "--ops", "20000"],
                ["--clients", "64", "--ops", "5000", "--value-size", "10240"],
            ):
                print(c.bench(*args))
            after = snapshot(c)
        finally:
            c.stop()
    for (nid, t0, e0, l0), (_, t1, e1, l1) in zip(before, after, strict=True):
        print(
            f"node {nid}: term {t0} -> {t1}, elections started +{e1 - e0}, "
            f"leader changes +{l1 - l0}"
        )


if __name__ == "__main__":
    main()
