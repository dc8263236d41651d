"""The shared yardstick (../shared/bench/run.py) with the workloads issue 18 adds to it.

    python tools/bench_more.py --system leekyraft --nodes 3 --workload conc256 --repeats 1
    python tools/bench_more.py --system etcd --opt client=grpc --workload conc256,large

Every option is run.py's; this only registers more workloads in its harness first:

- ``conc256``: 256 clients, each with one 100-byte put in flight (40,000 puts, at most 20 s).

The built-in workloads (seq, conc, reads, large, failover, ...) keep working unchanged, so
one command can mix them. The nodes, clients and statistics are the shared bench's own.
"""

from __future__ import annotations

import os
import sys

BENCH = os.environ.get(
    "LEEKY_BENCH_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"),
)

#: name -> (kind, concurrency, total_ops, max_seconds, value_size), run.py's shape
EXTRA_WORKLOADS = {
    "conc256": ("put", 256, 40000, 20.0, 100),
}


def register(workloads_module: object) -> None:
    """Add EXTRA_WORKLOADS to the harness's table and order (idempotent)."""
    table = workloads_module.WORKLOADS  # type: ignore[attr-defined]
    order = workloads_module.ORDER  # type: ignore[attr-defined]
    for name, shape in EXTRA_WORKLOADS.items():
        table[name] = shape
        if name not in order:
            order.append(name)


def main() -> None:
    """Register the extra workloads, then hand the command line to run.py."""
    if not os.path.exists(os.path.join(BENCH, "run.py")):
        sys.exit(f"bench_more: the shared bench is not at {BENCH} (set LEEKY_BENCH_DIR)")
    sys.path.insert(0, BENCH)
    import run  # type: ignore[import-not-found]
    from harness import workloads  # type: ignore[import-not-found]

    register(workloads)
    run.main()


if __name__ == "__main__":
    main()
