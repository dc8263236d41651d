"""Run a coordination workload (watch, lock, lease) under a nemesis, or against a cluster.

:func:`run_coordination_chaos` is :func:`~leeky_twisted.chaos.runner.run_chaos`
for the workloads of :mod:`leeky_twisted.chaos.coordwork`: the same namespaces,
nodes, nemesis and schedule; the clients are one ``coordwork`` process (its own
reactor, the bundled Twisted client). After healing and a leader, the rig
tells the process to finish (a stop file); it makes its final reads and writes
its record, which :func:`~leeky_twisted.checker.coordination.check_coordination`
judges. :func:`run_coordination_verify` does the same against a running cluster,
without faults. Both write ``record.json``, ``report.json``, ``report.txt``
and ``report/index.html`` into the output folder.
"""

from __future__ import annotations

import html
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leeky_twisted.chaos.coordwork import lease_bound
from leeky_twisted.chaos.nemesis import Nemesis, Schedule, make_nemesis, run_schedule
from leeky_twisted.chaos.netns import CLIENT_PORT, HTTP_PORT, NetnsCluster, NetnsNetwork
from leeky_twisted.chaos.runner import NODE_TIMING, ChaosReport
from leeky_twisted.checker.coordination import COORD_WORKLOADS, check_coordination

__all__ = ["run_coordination_chaos", "run_coordination_verify"]

#: The election timeout of NODE_TIMING (the lease bound depends on it).
_CHAOS_ELECTION_TIMEOUT = 0.4


def _start_workload(
    workload: str,
    amp: Sequence[str],
    http: Sequence[str],
    out: Path,
    *,
    prefix: str,
    seed: int,
    bound: float,
    election_timeout: float,
    settle: float,
    max_seconds: float,
) -> tuple[subprocess.Popen[bytes], Path]:
    if workload not in COORD_WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: one of {', '.join(COORD_WORKLOADS)}")
    stop_file = out / "stop"
    stop_file.unlink(missing_ok=True)
    (out / "record.json").unlink(missing_ok=True)
    argv = [
        sys.executable, "-m", "leeky_twisted.chaos.coordwork",
        "--workload", workload, "--amp", ",".join(amp), "--http", ",".join(http),
        "--prefix", prefix, "--out", str(out / "record.json"), "--stop-file", str(stop_file),
        "--max-seconds", str(max_seconds), "--settle", str(settle),
        "--lease-bound", str(bound), "--seed", str(seed),
        "--election-timeout", str(election_timeout),
    ]  # fmt: skip
    log = (out / "workload.log").open("wb")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return proc, stop_file


def _finish(proc: subprocess.Popen[bytes], stop_file: Path, within: float) -> str | None:
    """Ask the workload to finish and wait for it; return a problem, or None."""
    stop_file.touch()
    try:
        code = proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return f"the workload did not finish within {within:.0f} s"
    return None if code == 0 else f"the workload exited with code {code} (workload.log)"


def _judge(report: ChaosReport, out: Path, say: Callable[[str], None]) -> None:
    """Check the record, fill in the report, write report.json/.txt and report/index.html."""
    path = out / "record.json"
    if path.exists():
        record = json.loads(path.read_text())
        started = time.perf_counter()
        result = check_coordination(record)
        report.checker_seconds = time.perf_counter() - started
        report.verdict = result.verdict
        report.violations = list(result.violations)
        report.coordination = {"check": result.check, "figures": result.figures}
        report.final_reads = {"readable": True, "seconds": record.get("seconds", 0.0)}
        report.operations = {"operations": _operations(record), "ok": 0, "fail": 0, "unknown": 0}
    else:
        report.verdict = "no record"
        report.problems.append("the workload wrote no record (workload.log)")
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    text = report.render()
    (out / "report.txt").write_text(text + "\n")
    folder = out / "report"
    folder.mkdir(exist_ok=True)
    status = "PASS" if report.ok else "FAIL"
    (folder / "index.html").write_text(
        "<!doctype html><meta charset=utf-8>"
        f"<title>Leeky Raft {report.workload} check: {status}</title>"
        f"<h1>{html.escape(COORD_WORKLOADS.get(report.workload, report.workload))}: "
        f"{status}</h1><pre>{html.escape(text)}</pre>\n"
    )
    say(f"report: {folder / 'index.html'}")


def _operations(record: dict[str, Any]) -> int:
    kind = record.get("workload")
    if kind == "watch":
        return len(record["writes"]) + sum(len(w["events"]) for w in record["watchers"])
    if kind == "lock":
        return len(record["acquisitions"]) + len(record["writes"])
    return sum(len(x["reads"]) + len(x["keepalives"]) + 2 for x in record["leases"])


def run_coordination_chaos(
    workload: str,
    nodes: int = 5,
    seconds: float = 30.0,
    nemesis: str | Sequence[str] | Nemesis = "mixed",
    out_dir: str | Path = "chaos-out",
    *,
    seed: int | None = None,
    schedule: Schedule | None = None,
    heal_within: float = 30.0,
    subnet: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ChaosReport:
    """Run ``workload`` on ``nodes`` nodes in namespaces under ``nemesis``; return the report.

    Needs root. Every process started is stopped and every namespace deleted
    before this returns or raises.
    """
    seed = random.randrange(1 << 31) if seed is None else seed
    rng = random.Random(seed)
    the_nemesis = nemesis if isinstance(nemesis, Nemesis) else make_nemesis(nemesis)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda text: None)
    extra = [*NODE_TIMING, *the_nemesis.node_args()]
    bound = lease_bound(_CHAOS_ELECTION_TIMEOUT)
    report = ChaosReport(
        nemesis=the_nemesis.name,
        nodes=nodes,
        seconds=seconds,
        seed=seed,
        out_dir=str(out),
        options={"node_args": extra, "heal_within": heal_within, "lease_bound": bound},
        workload=workload,
    )
    network = NetnsNetwork(nodes, subnet=subnet, rng=rng)
    cluster: NetnsCluster | None = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        network.create()
        cluster = NetnsCluster(network, out, extra)
        cluster.start()
        leader = cluster.wait_for_leader(30.0)
        say(f"leader: node {leader.node_id}; starting the {workload} workload")
        proc, stop_file = _start_workload(
            workload,
            [f"{n.address}:{CLIENT_PORT}" for n in cluster.nodes],
            [f"{n.address}:{HTTP_PORT}" for n in cluster.nodes],
            out,
            prefix=f"{workload}{seed}",
            seed=seed,
            bound=bound,
            election_timeout=_CHAOS_ELECTION_TIMEOUT,
            settle=heal_within,
            max_seconds=seconds + heal_within + 60,
        )
        origin = time.monotonic()
        faults = run_schedule(
            the_nemesis,
            cluster,
            seconds=seconds,
            rng=rng,
            stop=threading.Event(),
            schedule=schedule,
            clock=lambda: time.monotonic() - origin,
            on_event=say,
        )
        healed = time.monotonic()
        report.faults = [f.to_dict() for f in faults]
        try:
            cluster.wait_for_leader(heal_within)
            report.leader_after_heal_seconds = time.monotonic() - healed
        except TimeoutError:
            report.problems.append(f"no leader within {heal_within} s of healing")
        the_nemesis.final_check(cluster)
        problem = _finish(proc, stop_file, 2 * heal_within + 30)
        if problem:
            report.problems.append(problem)
        report.restarts = {n.node_id: n.starts - 1 for n in cluster.nodes}
        for node_id, codes in cluster.unexpected_deaths().items():
            report.problems.append(f"node {node_id} died unbidden (exit codes {codes})")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if cluster is not None:
            the_nemesis.stop(cluster)
        report.problems += the_nemesis.problems()
        if cluster is not None:
            cluster.stop()
        errors = network.delete()
        if errors:
            report.problems.append(f"cleanup: {errors}")
        _judge(report, out, say)
    say(report.summary_line())
    return report


def run_coordination_verify(
    workload: str,
    amp: Sequence[str],
    http: Sequence[str],
    seconds: float,
    out_dir: str | Path,
    *,
    seed: int | None = None,
    election_timeout: float = 1.0,
    settle: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> ChaosReport:
    """Run ``workload`` against a running cluster for ``seconds`` and check it (no faults).

    ``amp``/``http``: the nodes' client (AMP) and JSON-RPC addresses, HOST:PORT.
    ``election_timeout``: the cluster's ``--election-timeout`` (the lease
    bound depends on it). Keys get a prefix of their own.
    """
    seed = random.randrange(1 << 31) if seed is None else seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda text: None)
    bound = lease_bound(election_timeout)
    report = ChaosReport(
        nemesis="none (verify)",
        nodes=len(amp),
        seconds=seconds,
        seed=seed,
        out_dir=str(out),
        options={"lease_bound": bound},
        workload=workload,
    )
    proc, stop_file = _start_workload(
        workload,
        amp,
        http,
        out,
        prefix=f"verify-{workload}{seed}",
        seed=seed,
        bound=bound,
        election_timeout=election_timeout,
        settle=settle,
        max_seconds=seconds + settle + 60,
    )
    try:
        threading.Event().wait(seconds)
        problem = _finish(proc, stop_file, 2 * settle + 30)
        if problem:
            report.problems.append(problem)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        _judge(report, out, say)
    say(report.summary_line())
    return report
