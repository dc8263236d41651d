"""Count elections and leader changes on a local cluster during the bench workloads.

    python tools/elections_under_load.py                      # 3 nodes: put, get, 10 KiB put
    python tools/elections_under_load.py --nodes 5 --seconds 300   # 64 x 1 KiB puts for 5 min
    python tools/elections_under_load.py --seconds 90 --value-size 10240 --keys 10000
        # 64 x 10 KiB puts for 90 s over a 100 MB state: a 65-100 MB snapshot every ~6,500 puts

A spurious election (the term moving while every node is up) would show as a
term or leader change between the start and the end of the load.
"""

import argparse
import tempfile
from pathlib import Path

from leeky_twisted.ops.localcluster import LocalCluster


def snapshot(c: LocalCluster) -> list[tuple[str, int, int, int]]:
    out = []
    for n in c.nodes:
        st = c.status(n) or {}
        out.append(
            (n.node_id, st.get("term", -1), st.get("elections", -1), st.get("leader_changes", -1))
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--seconds", type=int, help="one sustained put load this long instead")
    p.add_argument("--value-size", type=int, default=1024, help="bytes per value (--seconds)")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys written (--seconds)")
    args = p.parse_args()
    if args.seconds:
        sized = ["--value-size", str(args.value_size), "--keys", str(args.keys)]
        loads = [["--clients", "64", *sized, "--ops", "1000000000", "--seconds", str(args.seconds)]]
    else:
        loads = [
            ["--clients", "64", "--ops", "20000"],
            ["--workload", "get", "--clients", "64", "--ops", "20000"],
            ["--clients", "64", "--ops", "5000", "--value-size", "10240"],
        ]
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d), args.nodes)
        try:
            c.start()
            c.wait_for_leader()
            c.wait_for("all nodes", lambda: all(c.status(n) for n in c.nodes))
            before = snapshot(c)
            for load in loads:
                print(c.bench(*load))
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
