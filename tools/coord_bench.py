"""Coordination workloads beside etcd (issue #16 item 9): watches, locks, transactions.

Starts a 3-node cluster of each system on loopback (fsync on, each system's
defaults), runs three workloads, and alternates the systems (A B A B ...),
each run on a fresh cluster in a fresh client process:

- ``watch1`` / ``watch100``: one writer puts a 100-byte value to one key, one
  put at a time; 1 (or 100) watchers of that key, each on its own connection
  to the leader. Latency: from the put's acknowledgement at the writer to the
  event's delivery at each watcher (an event delivered before the ack counts
  as 0 and is counted in ``early``). The next put waits for every delivery.
- ``lock``: 8 contenders (one connection each) acquire and release one lock
  in a loop for ``--lock-seconds``; cycles per second and cycle latency.
- ``txn``: 64 clients in flight, each a transaction of 4 value compares and 4
  puts (100-byte values) on its own 4 keys (so every one succeeds).

Leeky Raft: the bundled Twisted client (AMP) and its lock recipe
(``leeky_twisted.client.recipes``). etcd 3.4: native gRPC (grpc.aio with the
protobufs the ``aetcd`` package ships) and etcd's ``concurrency.Mutex``
recipe (one session lease per contender, a txn that creates the key and reads
the owner, a watch on the predecessor's delete, a delete to unlock).

Cluster start and stop reuse the shared yardstick's adapters (../shared/bench).

    PYTHONPATH=$PWD python tools/coord_bench.py --rounds 2 --out /tmp/coord.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("leekyraft", "etcd")
WORKLOADS = ("watch1", "watch100", "watch1f", "watch100f", "lock", "txn")
VALUE_BYTES = 100
WATCH_KEY = "coordbench/watched"
LOCK_NAME = "coordbench/lock"
#: puts before the measured ones of a watch workload
WATCH_WARM = 10


# ------------------------------------------------------------ pure parts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; refuse nonsense with a clear message (exit 2)."""
    p = argparse.ArgumentParser(
        prog="coord_bench.py", description="Leeky Raft beside etcd: watch, lock, txn."
    )
    p.add_argument("--rounds", type=int, default=2, help="runs of each system, alternated")
    p.add_argument("--systems", default="etcd,leekyraft", help="comma list, in running order")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma list of the workloads to run (default: all of {','.join(WORKLOADS)})",
    )
    p.add_argument("--watch-puts", type=int, default=300, help="measured puts with 1 watcher")
    p.add_argument("--watch100-puts", type=int, default=150, help="measured puts, 100 watchers")
    p.add_argument("--lock-seconds", type=float, default=10.0)
    p.add_argument("--lock-contenders", type=int, default=8)
    p.add_argument("--txn-seconds", type=float, default=10.0)
    p.add_argument("--txn-ops", type=int, default=20000, help="cap on measured transactions")
    p.add_argument("--txn-clients", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="a smoke test: tiny counts, 1 round")
    p.add_argument("--out", default=None, help="result JSON (default: a file under /tmp)")
    p.add_argument("--bench-dir", default=None, help="the shared yardstick (../shared/bench)")
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad or not systems:
        p.error(f"--systems: unknown {', '.join(bad) or '(none)'}; choose from {SYSTEMS}")
    a.systems = systems
    workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or not workloads:
        p.error(f"--workloads: unknown {', '.join(bad) or '(none)'}; choose from {WORKLOADS}")
    a.workloads = workloads
    for name in ("rounds", "watch_puts", "watch100_puts", "lock_contenders", "txn_clients"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.lock_seconds <= 0 or a.txn_seconds <= 0 or a.txn_ops < 1:
        p.error("--lock-seconds, --txn-seconds and --txn-ops must be positive")
    if a.quick:
        a.rounds, a.watch_puts, a.watch100_puts = 1, 20, 10
        a.lock_seconds, a.txn_seconds, a.txn_ops = 2.0, 2.0, 2000
    return a


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; NaN when empty."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def increasing(tokens: Sequence[int]) -> bool:
    """Whether fencing tokens, in acquisition order, strictly increase."""
    return all(a < b for a, b in itertools.pairwise(tokens))


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Latencies in seconds -> count, p50 and p99 in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
    }


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); NaN when empty."""
    s = sorted(values)
    if not s:
        return float("nan")
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def watch_runs(args: argparse.Namespace) -> list[tuple[str, int, int, bool]]:
    """The watch workloads asked for: (name, watchers, measured puts, watchers on a follower)."""
    runs = [
        ("watch1", 1, args.watch_puts, False),
        ("watch100", 100, args.watch100_puts, False),
        # on a follower each put waits up to a heartbeat: fewer puts keep the run short
        ("watch1f", 1, max(1, args.watch_puts // 3), True),
        ("watch100f", 100, max(1, args.watch100_puts // 3), True),
    ]
    return [r for r in runs if r[0] in args.workloads]


def _watch_metrics() -> list[tuple[str, str, str, str]]:
    rows = []
    for name, n, where in (
        ("watch1", 1, "leader"),
        ("watch100", 100, "leader"),
        ("watch1f", 1, "follower"),
        ("watch100f", 100, "follower"),
    ):
        who = f"{n} watcher{'s' * (n > 1)} on the {where}"
        rows += [
            (f"watch, {who}: ack→delivery p50 ms", name, "p50_ms", "lower"),
            (f"watch, {who}: ack→delivery p99 ms", name, "p99_ms", "lower"),
            (f"watch, {who}: put sent→delivery p50 ms", name, "send_p50_ms", "lower"),
            (f"watch, {who}: put sent→delivery p99 ms", name, "send_p99_ms", "lower"),
        ]
    return rows


#: (label, workload, field, which is better)
METRICS = [
    *_watch_metrics(),
    ("lock, 8 contenders: cycles/s", "lock", "per_s", "higher"),
    ("lock cycle p50 ms", "lock", "p50_ms", "lower"),
    ("lock cycle p99 ms", "lock", "p99_ms", "lower"),
    ("txn 4 cmp + 4 put, 64 in flight: txn/s", "txn", "per_s", "higher"),
    ("txn p50 ms", "txn", "p50_ms", "lower"),
    ("txn p99 ms", "txn", "p99_ms", "lower"),
    ("lock: leader CPU % of a core", "lock", "leader_cpu_pct", "lower"),
    ("lock: client process CPU %", "lock", "client_cpu_pct", "lower"),
    ("txn: leader CPU % of a core", "txn", "leader_cpu_pct", "lower"),
    ("txn: client process CPU %", "txn", "client_cpu_pct", "lower"),
    ("txn: leader CPU us per txn", "txn", "leader_cpu_us_per_op", "lower"),
    ("txn: follower CPU us per txn", "txn", "follower1_cpu_us_per_op", "lower"),
    ("txn: client CPU us per txn", "txn", "client_cpu_us_per_op", "lower"),
    ("watch100: leader CPU us per put", "watch100", "leader_cpu_us_per_op", "lower"),
    ("watch100: client CPU us per put", "watch100", "client_cpu_us_per_op", "lower"),
]


def _fmt(v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def summarize(runs: Sequence[dict[str, Any]], systems: Sequence[str]) -> list[dict[str, Any]]:
    """Per metric and system: the median and (min, max) over the runs."""
    rows = []
    for label, workload, field, better in METRICS:
        row: dict[str, Any] = {"metric": label, "better": better}
        for system in systems:
            vals = [
                r[workload][field]
                for r in runs
                if r.get("system") == system and field in r.get(workload, {})
            ]
            vals = [v for v in vals if v == v]
            row[system] = {
                "median": median(vals),
                "min": min(vals, default=float("nan")),
                "max": max(vals, default=float("nan")),
                "runs": len(vals),
            }
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]], systems: Sequence[str]) -> str:
    """A markdown table: median (min-max) per system, and Leeky Raft's factor vs etcd."""
    head = "| metric | " + " | ".join(f"{s} median (min-max)" for s in systems)
    both = "leekyraft" in systems and "etcd" in systems
    head += " | leekyraft vs etcd |" if both else " |"
    lines = [head, "|" + "---|" * (len(systems) + 1 + both)]
    for row in rows:
        cells = []
        for s in systems:
            c = row[s]
            if not c["runs"]:
                cells.append("-")
                continue
            cells.append(f"{_fmt(c['median'])} ({_fmt(c['min'])}-{_fmt(c['max'])})")
        line = f"| {row['metric']} | " + " | ".join(cells)
        if both:
            line += " | " + _factor(
                row["leekyraft"]["median"], row["etcd"]["median"], row["better"]
            )
        lines.append(line + " |")
    return "\n".join(lines)


def _factor(leeky: float, etcd: float, better: str) -> str:
    """How Leeky Raft compares: 'x1.3 better' / 'x2.0 worse' (by the metric's direction)."""
    if leeky != leeky or etcd != etcd:
        return "-"
    if leeky <= 0 or etcd <= 0:
        if leeky == etcd:
            return "same"
        return "better" if (leeky > etcd) == (better == "higher") else "worse"
    ratio = leeky / etcd if better == "higher" else etcd / leeky
    if ratio >= 1:
        return f"{ratio:.2f}x better"
    return f"{1 / ratio:.2f}x worse"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc); NaN if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU use of some processes over an interval, in percent of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {who: cpu_seconds(pid) for who, pid in pids.items()}
        self.t0 = time.perf_counter()

    def read(self, ops: int = 0) -> dict[str, float]:
        """Percent of a core per process; with ``ops``, also CPU microseconds per operation."""
        wall = max(time.perf_counter() - self.t0, 1e-9)
        out = {}
        for who, pid in self.pids.items():
            used = cpu_seconds(pid) - self.start[who]
            out[f"{who}_cpu_pct"] = round(used / wall * 100, 1)
            if ops > 0:
                out[f"{who}_cpu_us_per_op"] = round(used / ops * 1e6, 1)
        return out


def _value(seq: int) -> str:
    """A 100-byte value carrying ``seq`` in its first 10 characters."""
    return f"{seq:010d}".ljust(VALUE_BYTES, "x")


# --------------------------------------------------------- orchestration


def _bench_dir(given: str | None) -> Path:
    candidates = (
        [Path(given)] if given else [ROOT.parent / "shared" / "bench", Path("/work/shared/bench")]
    )
    for c in candidates:
        if (c / "harness" / "adapters" / "etcd.py").exists():
            return c
    raise SystemExit(
        "coord_bench: the shared yardstick (harness/adapters/etcd.py) is not at "
        + " or ".join(str(c) for c in candidates)
        + "; pass --bench-dir"
    )


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        mem_gib = round(int(mem) / 2**20, 1)
    except OSError:
        mem_gib = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib}


def orchestrate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run each system ``--rounds`` times, alternated, each in its own worker process."""
    bench = _bench_dir(args.bench_dir)
    runs: list[dict[str, Any]] = []
    passthrough = [a for a in argv if a not in ("--quick",)]
    if args.quick:
        passthrough.append("--quick")
    for rnd in range(args.rounds):
        for system in args.systems:
            print(f"round {rnd + 1}/{args.rounds}: {system} ...", file=sys.stderr, flush=True)
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                cmd = [
                    sys.executable,
                    __file__,
                    *passthrough,
                    "--worker",
                    system,
                    "--bench-dir",
                    str(bench),
                    "--out",
                    out.name,
                ]
                done = subprocess.run(cmd, check=False, timeout=900)
                if done.returncode != 0:
                    print(
                        f"coord_bench: the {system} run failed (exit {done.returncode})",
                        file=sys.stderr,
                    )
                    return 1
                result = json.loads(Path(out.name).read_text())
            result["round"] = rnd + 1
            runs.append(result)
    rows = summarize(runs, args.systems)
    table = format_table(rows, args.systems)
    print(table)
    out = args.out or os.path.join(tempfile.gettempdir(), f"coord-bench-{int(time.time())}.json")
    doc = {"machine": _machine(), "argv": list(argv), "runs": runs, "summary": rows}
    Path(out).write_text(json.dumps(doc, indent=1))
    print(f"results: {out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker is None:
        return orchestrate(args, argv)
    sys.path.insert(0, str(_bench_dir(args.bench_dir)))
    if args.worker == "etcd":
        from coord_bench_etcd import run_etcd

        result = run_etcd(args)
    else:
        from coord_bench_leeky import run_leeky

        result = run_leeky(args)
    result["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
