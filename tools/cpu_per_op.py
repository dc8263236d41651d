"""CPU per operation of each node, A/B between source trees, alternated in one sitting.

The shared machine makes wall-clock throughput noisy; the CPU seconds a node process
spends per operation (utime + stime from /proc/PID/stat, read just before and just after
the measured run) are far steadier. This drives the shared yardstick's workloads
(`../shared/bench/`) against fresh 3-node clusters, one per variant per round, and
alternates the variants: A B A B ...

    python tools/cpu_per_op.py --variant base=/path/to/main --variant new=. \\
        --workload conc --rounds 3 [--nodes 3] [--scale 1] [--extra "--flag v"] \\
        [--profile DIR]   # py-spy SVGs of the leader and one follower, per variant

Each variant's path goes first on PYTHONPATH of its nodes, so the nodes run that tree's
package. Prints one line per run and the medians per variant; `--json FILE` keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

BENCH = os.environ.get(
    "LEEKY_BENCH_DIR",
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"
    ),  # ../shared/bench
)
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of one process (or of one of its threads), in seconds."""
    return sum(proc_user_sys_s(pid, tid))


def proc_user_sys_s(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(utime, stime) of one process (or of one of its threads), in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


async def one_run(
    bench: Any, variant: str, root: str, args: argparse.Namespace, profile_dir: str | None
) -> dict[str, Any]:
    """Fresh cluster, run the workload, return CPU per op of leader and followers."""
    W = bench["W"]
    Adapter = bench["Adapter"]
    os.environ["PYTHONPATH"] = os.path.abspath(root)
    workdir = tempfile.mkdtemp(prefix="cpuop-")
    opts = {"extra": args.extra} if args.extra else {}
    a = Adapter(args.nodes, workdir, opts)
    state: dict[str, Any] = {}
    real_loop = W.closed_loop
    calls = {"n": 0}
    # The measured closed_loop is the last one run_workload makes: warm-up (and a
    # prefill for reads) come first.
    measured_call = 3 if args.workload == "reads" else 2

    async def timed_loop(*a_, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] != measured_call:
            return await real_loop(*a_, **kw)
        pids = [p.pid for p in a.procs]
        stats_before = await _leader_stats(a, state["leader"])
        before = [proc_cpu_s(p) for p in pids]
        sys_before = proc_user_sys_s(pids[state["leader"]])[1]
        # The main thread (its id is the process id) runs the reactor.
        main_before = [proc_cpu_s(p, p) for p in pids]
        spies = []
        if profile_dir:
            for role, idx in (
                ("leader", state["leader"]),
                ("follower", (state["leader"] + 1) % args.nodes),
            ):
                ext = {"raw": "txt", "speedscope": "json"}.get(args.profile_format, "svg")
                out = os.path.join(profile_dir, f"{variant}-{args.workload}-{role}.{ext}")
                spies.append(
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--pid",
                            str(pids[idx]),
                            "--duration",
                            str(args.profile_s),
                            "--rate",
                            "200",
                            "--nonblocking",
                            "--format",
                            args.profile_format,
                            "-o",
                            out,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        res = await real_loop(*a_, **kw)
        state["cpu"] = [proc_cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
        state["leader_sys"] = proc_user_sys_s(pids[state["leader"]])[1] - sys_before
        state["main"] = [proc_cpu_s(p, p) - b for p, b in zip(pids, main_before, strict=True)]
        stats_after = await _leader_stats(a, state["leader"])
        state["stats"] = {k: stats_after.get(k, 0) - stats_before.get(k, 0) for k in stats_after}
        for s in spies:
            s.wait(timeout=args.profile_s + 60)
        return res

    W.closed_loop = timed_loop
    try:
        a.start()
        leader = await a.wait_leader(timeout=60)
        state["leader"] = leader
        res = await W.run_workload(a, args.workload, leader, scale=args.scale)
    finally:
        W.closed_loop = real_loop
        a.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ops = res["ops"]
    cpu = state["cpu"]
    followers = [c for i, c in enumerate(cpu) if i != leader]
    return {
        "variant": variant,
        "ops": ops,
        "errors": res["errors"],
        "ops_per_s": res["ops_per_s"],
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "leader_us_per_op": 1e6 * cpu[leader] / ops,
        "leader_reactor_us_per_op": 1e6 * state["main"][leader] / ops,
        # the part of the leader's CPU spent in the kernel (system calls)
        "leader_sys_us_per_op": 1e6 * state["leader_sys"] / ops,
        "follower_us_per_op": 1e6 * statistics.mean(followers) / ops if followers else 0.0,
        # The leader's Ready batches, disk writes and peer messages per operation.
        "leader_readies_per_op": state["stats"].get("readies", 0) / ops,
        "leader_persists_per_op": state["stats"].get("persists", 0) / ops,
        "leader_messages_per_op": state["stats"].get("messages_sent", 0) / ops,
    }


async def _leader_stats(adapter: Any, leader: int) -> dict[str, float]:
    """The leader's counters from its JSON-RPC status (empty if it does not answer)."""
    client = await adapter.open_client(leader)
    try:
        status = await client.status()
    finally:
        await client.close()
    stats = status.get("stats", {}) if isinstance(status, dict) else {}
    return {k: v for k, v in stats.items() if isinstance(v, int | float)}


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['ops_per_s']:8.0f} ops/s p50={r['p50_ms']:6.2f}ms p99={r['p99_ms']:6.2f}ms "
        f"leader {r['leader_us_per_op']:6.1f} us/op (reactor {r['leader_reactor_us_per_op']:5.1f}, "
        f"kernel {r.get('leader_sys_us_per_op', 0):5.1f}) "
        f"follower {r['follower_us_per_op']:6.1f} us/op; leader per op: "
        f"{r.get('leader_readies_per_op', 0):.2f} readies, "
        f"{r.get('leader_persists_per_op', 0):.2f} writes, "
        f"{r.get('leader_messages_per_op', 0):.2f} messages"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--variant", action="append", required=True, help="NAME=SOURCE_ROOT (repeat)")
    ap.add_argument("--workload", default="conc", choices=["conc", "seq", "reads", "large", "null"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument(
        "--extra", default="", help="extra node flags, as the yardstick's extra= option"
    )
    ap.add_argument(
        "--profile", default=None, help="directory for py-spy flame graphs (first round)"
    )
    ap.add_argument("--profile-s", type=int, default=8)
    ap.add_argument(
        "--profile-format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"]
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    variants = []
    for v in args.variant:
        name, sep, root = v.partition("=")
        if not sep or not os.path.isdir(root):
            ap.error(f"--variant wants NAME=DIRECTORY, got {v!r}")
        variants.append((name, root))
    if not os.path.isdir(BENCH):
        print(
            f"cpu_per_op: the shared yardstick is not at {BENCH} (set LEEKY_BENCH_DIR)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, os.path.abspath(BENCH))
    from harness import workloads as W  # type: ignore[import-not-found]
    from harness.adapters.leekyraft import LeekyRaftAdapter  # type: ignore[import-not-found]

    bench = {"W": W, "Adapter": LeekyRaftAdapter}
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        for name, root in variants:
            prof = args.profile if (args.profile and rnd == 0) else None
            r = asyncio.run(one_run(bench, name, root, args, prof))
            r["round"] = rnd
            rows.append(r)
            print(
                f"round {rnd} {name:<8} ops={r['ops']:<6} err={r['errors']:<3} " + _line(r),
                flush=True,
            )
    print(f"medians ({args.workload}, {args.rounds} rounds, {args.nodes} nodes):")
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        med = {
            k: statistics.median(r[k] for r in mine)
            for k in (
                "ops_per_s",
                "p50_ms",
                "p99_ms",
                "leader_us_per_op",
                "leader_reactor_us_per_op",
                "leader_sys_us_per_op",
                "follower_us_per_op",
                "leader_readies_per_op",
                "leader_persists_per_op",
                "leader_messages_per_op",
            )
        }
        print(f"  {name:<8} " + _line(med))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
