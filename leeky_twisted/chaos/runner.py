"""Run a cluster in network namespaces under a nemesis, record a history, judge it.

:func:`run_chaos` is the whole experiment, in this order:

1. build the namespaces and the bridge (:class:`~leeky_twisted.chaos.netns.NetnsNetwork`);
2. start ``nodes`` real ``twistd -n leekyraft`` processes, one per namespace,
   and wait for a leader;
3. start the clients (:class:`~leeky_twisted.chaos.workload.Workload`);
4. inject faults on a schedule for ``seconds``, then heal everything;
5. wait for a leader again, keep the clients running a little, stop them;
6. read every key on every node, retrying until it answers (at most
   ``heal_within`` seconds after healing);
7. stop the nodes and delete the namespaces (also on any error);
8. check the history (:func:`~leeky_twisted.checker.check_history`) and write
   ``history.jsonl``, ``report.json`` and ``report.txt`` into ``out_dir``, and,
   given a ``report_dir``, the plots and ``index.html`` of
   :func:`~leeky_twisted.plots.report.write_report` (needs matplotlib).

The final reads are in the history, so "every acknowledged write is visible" is
part of the checker's verdict: a write acknowledged before the final reads
began and lost afterwards makes the history non-linearizable.

:func:`run_verify` runs just the clients and the checker against a cluster that
is already running (keys of its own prefix).
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leeky_twisted.chaos.nemesis import Nemesis, Schedule, make_nemesis, run_schedule
from leeky_twisted.chaos.netns import HTTP_PORT, NetnsCluster, NetnsNetwork
from leeky_twisted.chaos.workload import Endpoint, FinalReads, Workload
from leeky_twisted.checker.history import dumps_history, summarize
from leeky_twisted.checker.linearizability import Verdict, check_history
from leeky_twisted.ops.localcluster import twistd_path

__all__ = [
    "NODE_TIMING",
    "ChaosReport",
    "run_chaos",
    "run_verify",
    "supports_unsafe_stale_reads",
]

#: Node timing for chaos runs: fast elections so faults show and heal quickly.
NODE_TIMING = [
    "--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.4",
    "--request-timeout", "2",
]  # fmt: skip
#: The node's own request timeout above, plus its grace (1 s), plus slack.
CLIENT_TIMEOUT = 4.5
#: At most this many (key, node) final reads; older keys beyond it are read on one node.
FINAL_READ_LIMIT = 1000
#: The readable report shows this many violations in full (report.json has all).
_SHOWN_VIOLATIONS = 3


@dataclass
class ChaosReport:
    """What a run did and what the checker said. ``ok`` means: linearizable and
    every key readable on every node within the bound after healing."""

    nemesis: str
    nodes: int
    seconds: float
    seed: int
    out_dir: str
    operations: dict[str, Any] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    verdict: str = Verdict.UNKNOWN.value
    checker_seconds: float = 0.0
    keys_checked: int = 0
    violations: list[str] = field(default_factory=list)
    final_reads: dict[str, Any] = field(default_factory=dict)
    leader_after_heal_seconds: float | None = None
    node_status: dict[str, Any] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    attacks: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: "register" (get/put/cas, linearizability) or a coordination workload
    #: (watch, lock, lease: leeky_twisted.chaos.coordrun), whose verdict is
    #: "passed" or "failed" and whose figures are in ``coordination``
    workload: str = "register"
    coordination: dict[str, Any] = field(default_factory=dict)

    @property
    def unknown(self) -> int:
        """Return how many operations ended with an unknown outcome."""
        return int(self.operations.get("unknown", 0))

    @property
    def linearizable(self) -> bool:
        """Return whether the checker found the history linearizable."""
        return self.verdict == Verdict.LINEARIZABLE.value

    @property
    def ok(self) -> bool:
        """Return whether the run passed: linearizable (or, for a coordination
        workload, its check passed) and readable after healing."""
        passed = self.linearizable if self.workload == "register" else self.verdict == "passed"
        return passed and bool(self.final_reads.get("readable")) and not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data."""
        out = asdict(self)
        out["unknown"] = self.unknown
        out["ok"] = self.ok
        return out

    def summary_line(self) -> str:
        """Return a one-line summary: nemesis, ops, faults, unknowns, verdict, checker time."""
        ops = self.operations
        if self.workload != "register":
            return (
                f"{self.nemesis}: {self.workload} check, {ops.get('operations', 0)} operations "
                f"recorded, {len(self.faults)} faults, verdict {self.verdict}"
            )
        return (
            f"{self.nemesis}: {ops.get('operations', 0)} ops "
            f"(ok {ops.get('ok', 0)}, fail {ops.get('fail', 0)}, unknown {self.unknown}), "
            f"{len(self.faults)} faults, verdict {self.verdict}, "
            f"checker {self.checker_seconds:.2f} s"
        )

    def render(self) -> str:
        """Return the human-readable report."""
        ops = self.operations
        fr = self.final_reads
        if self.workload != "register":
            return self._render_coordination()
        lines = [
            f"Leeky Raft chaos run: nemesis {self.nemesis}, {self.nodes} nodes, "
            f"{self.seconds:g} s, seed {self.seed}",
            f"  folder: {self.out_dir}",
            f"  operations: {ops.get('operations', 0)} (ok {ops.get('ok', 0)}, "
            f"failed {ops.get('fail', 0)}, unknown {self.unknown})",
            f"  by kind: {ops.get('by_kind', {})}",
            f"  faults injected: {len(self.faults)}",
        ]
        lines += [f"    {_span(f['start'], f['end'])}  {f['detail']}" for f in self.faults]
        lines.append(f"  node starts/kills: {self.restarts}")
        for attack in self.attacks:
            lines.append(f"  attack report: {json.dumps(attack, sort_keys=True)[:300]}")
        if self.leader_after_heal_seconds is not None:
            lines.append(f"  leader after healing: {self.leader_after_heal_seconds:.2f} s")
        lines.append(
            f"  final reads: {'every key readable' if fr.get('readable') else 'NOT readable'} "
            f"on every node within {fr.get('seconds', 0):.2f} s "
            f"({len(fr.get('keys', []))} keys, {fr.get('attempts', 0)} reads)"
        )
        if fr.get("unreadable"):
            lines.append(f"    unreadable: {fr['unreadable'][:20]}")
        if self.errors:
            lines.append(f"  client errors: {self.errors}")
        lines.append(
            f"  verdict: {self.verdict} ({self.keys_checked} keys, "
            f"checked in {self.checker_seconds:.2f} s)"
        )
        lines += self.violations[:_SHOWN_VIOLATIONS]
        if len(self.violations) > _SHOWN_VIOLATIONS:
            more = len(self.violations) - _SHOWN_VIOLATIONS
            lines.append(f"  ... and {more} more non-linearizable keys (report.json)")
        for text in self.problems:
            lines.append(f"  problem: {text}")
        lines.append(f"  result: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)

    def _render_coordination(self) -> str:
        """Return the human-readable report of a coordination workload."""
        check = self.coordination.get("check", self.workload)
        lines = [
            f"Leeky Raft {self.workload} check ({check}): nemesis {self.nemesis}, "
            f"{self.nodes} nodes, {self.seconds:g} s, seed {self.seed}",
            f"  folder: {self.out_dir}",
            f"  operations recorded: {self.operations.get('operations', 0)}",
            f"  faults injected: {len(self.faults)}",
        ]
        lines += [f"    {_span(f['start'], f['end'])}  {f['detail']}" for f in self.faults]
        if self.restarts:
            lines.append(f"  node starts/kills: {self.restarts}")
        if self.leader_after_heal_seconds is not None:
            lines.append(f"  leader after healing: {self.leader_after_heal_seconds:.2f} s")
        for name, value in self.coordination.get("figures", {}).items():
            lines.append(f"  {name}: {value}")
        lines.append(f"  verdict: {self.verdict} ({len(self.violations)} violations shown)")
        lines += [f"  VIOLATION: {v}" for v in self.violations[:20]]
        for text in self.problems:
            lines.append(f"  problem: {text}")
        lines.append(f"  result: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _span(start: float, end: float | None) -> str:
    return f"[{start:7.2f} .. {'?' if end is None else format(end, '7.2f')}]"


def supports_unsafe_stale_reads() -> bool:
    """Return whether this twistd's leekyraft knows the test-only --unsafe-stale-reads."""
    try:
        done = subprocess.run(
            [twistd_path(), "leekyraft", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--unsafe-stale-reads" in done.stdout


def _progress_loop(
    workload: Workload,
    stop: threading.Event,
    status: Callable[[], str],
    say: Callable[[str], None],
    every: float = 2.0,
) -> None:
    start = time.monotonic()
    while not stop.wait(every):
        c = workload.counts()
        say(
            f"[{time.monotonic() - start:6.1f} s] ops {c['operations']} ok {c['ok']} "
            f"fail {c['fail']} unknown {c['unknown']} | {status()}"
        )


def _final_reads(workload: Workload, within: float) -> FinalReads:
    """Read the current keys on every node and, within the limit, older keys too."""
    keys = workload.keys()
    if len(keys) * len(workload.endpoints) <= FINAL_READ_LIMIT:
        return workload.final_reads(keys, within=within)
    current = workload.current_keys()
    first = workload.final_reads(current, within=within)
    older = [k for k in keys if k not in current][: FINAL_READ_LIMIT - len(current)]
    rest = workload.final_reads(older, within=within, endpoints=workload.endpoints[:1])
    return FinalReads(
        keys=current + older,
        readable=first.readable and rest.readable,
        seconds=first.seconds + rest.seconds,
        unreadable=first.unreadable + rest.unreadable,
        attempts=first.attempts + rest.attempts,
    )


def _during(text: str, at: float, faults: Sequence[dict[str, Any]]) -> str:
    """Append which faults were active at time ``at`` to a violation's text."""
    active = [
        f["detail"]
        for f in faults
        if f["start"] <= at <= (f["end"] if f["end"] is not None else at)
    ]
    where = "; ".join(active) if active else "none (healthy)"
    return f"{text}\n  faults active when it was invoked (t={at:.3f}): {where}"


def _judge(
    report: ChaosReport,
    workload: Workload,
    out: Path,
    report_dir: Path | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> None:
    """Check the history, fill in the report, write the three files (and the report folder)."""
    history = workload.history()
    (out / "history.jsonl").write_text(dumps_history(history))
    report.operations = summarize(history)
    report.errors = dict(workload.errors)
    started = time.perf_counter()
    result = check_history(history)
    report.checker_seconds = time.perf_counter() - started
    report.verdict = result.verdict.value
    report.keys_checked = len(result.keys)
    report.violations = [_during(v.render(), v.op.invoke, report.faults) for v in result.violations]
    report.violations += [
        f"key {k.key!r}: search budget exhausted after {k.steps} steps"
        for k in result.keys
        if k.verdict is Verdict.UNKNOWN
    ]
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    text = report.render()
    (out / "report.txt").write_text(text + "\n")
    if report_dir is None:
        return
    from leeky_twisted.plots import PlotsUnavailable
    from leeky_twisted.plots.report import write_report

    try:
        page = write_report(
            report_dir,
            history,
            result,
            report.faults,
            title=f"Leeky Raft {'verify' if report.nemesis.startswith('none') else 'chaos'} "
            f"run: {report.nemesis}, seed {report.seed}",
            passed=report.ok,
            text=text,
        )
    except (PlotsUnavailable, OSError) as e:
        say(f"no report folder: {e}")
        return
    say(f"report: {page}")


def run_chaos(
    nodes: int = 5,
    seconds: float = 30.0,
    nemesis: str | Sequence[str] | Nemesis = "partition",
    out_dir: str | Path = "chaos-out",
    *,
    clients: int = 10,
    keys: int = 3,
    ops_per_key: int = 1000,
    seed: int | None = None,
    stale_reads: bool = False,
    unsafe_stale_reads: bool = False,
    txn_share: float = 0.0,
    node_args: Sequence[str] | None = None,
    schedule: Schedule | None = None,
    heal_within: float = 30.0,
    subnet: str | None = None,
    key: bool = True,
    progress: Callable[[str], None] | None = None,
    report_dir: str | Path | None = None,
) -> ChaosReport:
    """Run ``nodes`` nodes in namespaces under ``nemesis`` for ``seconds``; return the report.

    Needs root (see :func:`~leeky_twisted.chaos.netns.netns_available`). The
    nodes share a cluster key and gossip; ``key=False`` runs them without one
    (gossip ``--insecure``), to show what the hostile nemeses catch then.
    ``stale_reads`` makes the clients ask for stale reads, ``unsafe_stale_reads``
    starts the nodes with the test-only ``--unsafe-stale-reads``: either breaks
    linearizability on purpose, to show the rig catches it. Every process
    started is stopped and every namespace deleted before this returns or raises.
    ``report_dir``: write the plots and ``index.html`` there too.
    """
    seed = random.randrange(1 << 31) if seed is None else seed
    rng = random.Random(seed)
    the_nemesis = nemesis if isinstance(nemesis, Nemesis) else make_nemesis(nemesis)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda text: None)
    extra = list(NODE_TIMING if node_args is None else node_args)
    if unsafe_stale_reads:
        extra.append("--unsafe-stale-reads")
    extra += the_nemesis.node_args()
    report = ChaosReport(
        nemesis=the_nemesis.name,
        nodes=nodes,
        seconds=seconds,
        seed=seed,
        out_dir=str(out),
        options={
            "clients": clients,
            "keys": keys,
            "ops_per_key": ops_per_key,
            "node_args": extra,
            "stale_reads": stale_reads,
            "txn_share": txn_share,
            "heal_within": heal_within,
            "cluster_key": key,
        },
    )
    network = NetnsNetwork(nodes, subnet=subnet, rng=rng)
    cluster: NetnsCluster | None = None
    workload: Workload | None = None
    stop = threading.Event()
    ticker: threading.Thread | None = None
    current = ["starting"]
    try:
        network.create()
        report.capabilities = {
            "subnet": str(network.subnet),
            "iptables": network.iptables,
            "netem": network.netem,
        }
        say(f"network {network.subnet} ({network.prefix}); starting {nodes} nodes")
        cluster = NetnsCluster(network, out, extra, key=key)
        cluster.start()
        leader = cluster.wait_for_leader(30.0)
        say(f"leader: node {leader.node_id}")
        endpoints = [Endpoint(n.node_id, n.address, HTTP_PORT) for n in cluster.nodes]
        origin = time.monotonic()

        def clock() -> float:
            return time.monotonic() - origin

        workload = Workload(
            endpoints,
            clients=clients,
            keys=keys,
            key_prefix=f"chaos{seed}",
            ops_per_key=ops_per_key,
            seed=seed,
            timeout=CLIENT_TIMEOUT,
            stale_reads=stale_reads,
            txn_share=txn_share,
            clock=clock,
        )
        workload.start()
        current[0] = "healthy"
        ticker = threading.Thread(
            target=_progress_loop,
            args=(workload, stop, lambda: current[0], say),
            name="leeky-chaos-progress",
            daemon=True,
        )
        ticker.start()

        def on_event(text: str) -> None:
            current[0] = text.removeprefix("fault: ") if text.startswith("fault") else "healthy"
            say(text)

        faults = run_schedule(
            the_nemesis,
            cluster,
            seconds=seconds,
            rng=rng,
            stop=threading.Event(),
            schedule=schedule,
            clock=clock,
            on_event=on_event,
        )
        healed = time.monotonic()
        report.faults = [f.to_dict() for f in faults]
        try:
            cluster.wait_for_leader(heal_within)
            report.leader_after_heal_seconds = time.monotonic() - healed
        except TimeoutError:
            report.problems.append(f"no leader within {heal_within} s of healing")
        the_nemesis.final_check(cluster)
        threading.Event().wait(2.0)  # let the clients see the healed cluster
        if not workload.stop():
            report.problems.append("some clients did not stop in time")
        current[0] = "final reads"
        within = max(1.0, heal_within - (time.monotonic() - healed))
        final = _final_reads(workload, within)
        report.final_reads = asdict(final)
        report.node_status = {
            n.node_id: {
                k: st.get(k)
                for k in ("role", "term", "leader", "commit_index", "applied_index", "elections")
            }
            for n in cluster.nodes
            if (st := cluster.status(n)) is not None
        }
        report.restarts = {n.node_id: n.starts - 1 for n in cluster.nodes}
        for node_id, codes in cluster.unexpected_deaths().items():
            report.problems.append(f"node {node_id} died unbidden (exit codes {codes})")
    finally:
        stop.set()
        if cluster is not None:
            the_nemesis.stop(cluster)
        report.problems += the_nemesis.problems()
        report.attacks = [dict(r) for r in the_nemesis.reports()]
        if workload is not None:
            workload.stop()
        if cluster is not None:
            cluster.stop()
        errors = network.delete()
        if errors:
            report.problems.append(f"cleanup: {errors}")
        if ticker is not None:
            ticker.join(timeout=5)
        if workload is not None:
            _judge(report, workload, out, _path(report_dir), say)
    say(report.summary_line())
    return report


def run_verify(
    endpoints: Sequence[Endpoint],
    seconds: float,
    out_dir: str | Path,
    *,
    clients: int = 10,
    keys: int = 3,
    key_prefix: str | None = None,
    seed: int | None = None,
    timeout: float = 10.0,
    txn_share: float = 0.0,
    progress: Callable[[str], None] | None = None,
    report_dir: str | Path | None = None,
) -> ChaosReport:
    """Run the recorded workload against a running cluster and check it (no faults).

    Keys get a prefix of their own (``verify<seed>`` by default), so the
    cluster's other data is never touched. Times in the history are seconds
    since the clients started. ``report_dir``: write the plots and
    ``index.html`` there too.
    """
    seed = random.randrange(1 << 31) if seed is None else seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda text: None)
    report = ChaosReport(
        nemesis="none (verify)", nodes=len(endpoints), seconds=seconds, seed=seed, out_dir=str(out)
    )
    origin = time.monotonic()
    workload = Workload(
        endpoints,
        clients=clients,
        keys=keys,
        key_prefix=key_prefix or f"verify{seed}",
        seed=seed,
        timeout=timeout,
        txn_share=txn_share,
        clock=lambda: time.monotonic() - origin,
    )
    stop = threading.Event()
    ticker = threading.Thread(
        target=_progress_loop, args=(workload, stop, lambda: "running", say), daemon=True
    )
    try:
        workload.start()
        ticker.start()
        stop.wait(seconds)
        if not workload.stop():
            report.problems.append("some clients did not stop in time")
        report.final_reads = asdict(_final_reads(workload, 30.0))
    finally:
        stop.set()
        workload.stop()
        _judge(report, workload, out, _path(report_dir), say)
    say(report.summary_line())
    return report


def _path(folder: str | Path | None) -> Path | None:
    return None if folder is None else Path(folder)


# ----------------------------------------------------------------- command line


def _plots_wanted(asked: str | None, say: Callable[[str], None]) -> bool | None:
    """Return whether to write report folders, or None when the command must stop.

    Without matplotlib an explicit ``--report`` stops the command with one
    line; the default folder is skipped with a note.
    """
    from leeky_twisted.plots import PlotsUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotsUnavailable as e:
        if asked is not None:
            say(str(e))
            return None
        say(f"no report folder ({e})")
        return False
    return True


def _report_folder(asked: str | None, run_out: Path, name: str | None) -> Path:
    """Return a run's report folder: ``--report DIR`` (``DIR/NAME`` with ``--each``),
    else ``report`` in the run's output folder."""
    if asked is None:
        return run_out / "report"
    return Path(asked) / name if name is not None else Path(asked)


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    a, b = float(low), float(high or low)
    if not 0 < a <= b:
        raise ValueError(f"expected MIN,MAX with 0 < MIN <= MAX, not {text!r}")
    return a, b


def _endpoints(text: str) -> list[Endpoint]:
    out = []
    for i, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        node_id, sep, address = part.rpartition("=")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad endpoint {part!r}: expected [ID=]HOST:HTTP_PORT")
        out.append(Endpoint(node_id if sep else str(i + 1), host, int(port)))
    if not out:
        raise ValueError("no endpoints")
    return out


def _run_coordination(args: Any, verify: bool, out: Path, say: Callable[[str], None]) -> int:
    """Run ``--workload watch|lock|lease`` (verify or chaos); return the exit code."""
    from leeky_twisted.chaos.coordrun import run_coordination_chaos, run_coordination_verify
    from leeky_twisted.chaos.netns import netns_available

    if verify:
        if not args.amp:
            say("error: --workload watch, lock and lease need --amp HOST:PORT,... too")
            return 2
        http = [f"{e.host}:{e.port}" for e in _endpoints(args.endpoints)]
        amp = [a.strip() for a in args.amp.split(",") if a.strip()]
        report = run_coordination_verify(
            args.workload,
            amp,
            http,
            args.time,
            out,
            seed=args.seed,
            election_timeout=args.election_timeout,
            progress=say,
        )
        print(report.render())
        return 0 if report.ok else 1
    reason = netns_available()
    if reason is not None:
        say(f"cannot run: {reason}")
        return 2
    report = run_coordination_chaos(
        args.workload,
        args.nodes,
        args.time,
        [n.strip() for n in args.nemesis.split(",") if n.strip()],
        out,
        seed=args.seed,
        schedule=Schedule(fault=args.fault, quiet=args.quiet),
        heal_within=args.heal_within,
        subnet=args.subnet,
        progress=say,
    )
    print(report.render(), flush=True)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line: ``python -m leeky_twisted.chaos [verify] ...``; return the exit code.

    ``prog`` names the command in help and errors (``leekyraft chaos`` when
    started from the ``leekyraft`` command line).

    0: the run passed; 1: it failed (non-linearizable, unreadable, or a
    problem); 2: it could not run (not root, bad arguments).
    """
    import argparse
    import signal
    import sys

    from leeky_twisted.chaos.nemesis import NEMESES
    from leeky_twisted.chaos.netns import netns_available

    args_in = list(sys.argv[1:] if argv is None else argv)
    verify = bool(args_in) and args_in[0] == "verify"
    if verify:
        args_in = args_in[1:]
    parser = argparse.ArgumentParser(
        prog=prog or "python -m leeky_twisted.chaos" + (" verify" if verify else ""),
        description=(
            "Run the recorded workload against a running cluster and check it."
            if verify
            else "Run a Leeky Raft cluster in network namespaces under a nemesis (as root), "
            "record a client history, check it for linearizability."
        ),
    )
    parser.add_argument("--time", type=float, default=60.0, help="seconds of workload")
    parser.add_argument("--out", default=None, help="folder for history and report")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--keys", type=int, default=3, help="keys in use at a time")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--workload",
        default="register",
        choices=["register", "watch", "lock", "lease"],
        help="register: get/put/cas checked for linearizability (default); watch: watch "
        "completeness; lock: lock safety with fencing tokens; lease: lease expiry bound",
    )
    parser.add_argument(
        "--txn-share",
        type=float,
        default=0.0,
        help="register workload: share of two-key transactions (0 to 1; default 0)",
    )
    parser.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="folder for index.html and the plots (default: OUT/report; needs matplotlib: "
        "pip install 'leeky-twisted[plots]')",
    )
    if verify:
        parser.add_argument(
            "--endpoints", required=True, help="JSON-RPC addresses: [ID=]HOST:PORT,..."
        )
        parser.add_argument("--key-prefix", default=None)
        parser.add_argument(
            "--amp",
            default=None,
            help="the nodes' client (AMP) addresses HOST:PORT,... (watch, lock and lease)",
        )
        parser.add_argument(
            "--election-timeout",
            type=float,
            default=1.0,
            help="the cluster's --election-timeout: the lease bound depends on it",
        )
    else:
        parser.add_argument("--nodes", type=int, default=5)
        parser.add_argument(
            "--nemesis",
            default="mixed",
            help=f"one of {', '.join(sorted(NEMESES))}, or several joined by commas",
        )
        parser.add_argument(
            "--each", action="store_true", help="run each listed nemesis in turn, not mixed"
        )
        parser.add_argument("--ops-per-key", type=int, default=1000)
        parser.add_argument("--fault", type=_pair, default=(3.0, 8.0), help="MIN,MAX seconds")
        parser.add_argument("--quiet", type=_pair, default=(2.0, 4.0), help="MIN,MAX seconds")
        parser.add_argument("--heal-within", type=float, default=30.0)
        parser.add_argument("--subnet", default=None, help="private /24 (default 10.99.X.0/24)")
        parser.add_argument("--unsafe-stale-reads", action="store_true", help="break reads")
        parser.add_argument("--stale-reads", action="store_true", help="ask for stale reads")
        parser.add_argument(
            "--no-cluster-key",
            action="store_true",
            help="run the nodes without a cluster key (gossip --insecure): what an "
            "unauthenticated cluster suffers under the hostile nemeses",
        )
    try:
        args = parser.parse_args(args_in)
    except SystemExit as e:
        return 2 if e.code else 0
    out = Path(args.out or time.strftime("chaos-%Y%m%d-%H%M%S"))

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    plots = _plots_wanted(args.report, say)
    if plots is None:
        return 2
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        if args.workload != "register":
            return _run_coordination(args, verify, out, say)
        if verify:
            report = run_verify(
                _endpoints(args.endpoints),
                args.time,
                out,
                clients=args.clients,
                keys=args.keys,
                key_prefix=args.key_prefix,
                seed=args.seed,
                txn_share=args.txn_share,
                progress=say,
                report_dir=_report_folder(args.report, out, None) if plots else None,
            )
            print(report.render())
            return 0 if report.ok else 1
        reason = netns_available()
        if reason is not None:
            say(f"cannot run: {reason}")
            return 2
        names = [n.strip() for n in args.nemesis.split(",") if n.strip()]
        runs = [[n] for n in names] if args.each else [names]
        passed = True
        for run in runs:
            run_out = out / run[0] if args.each else out
            name = run[0] if args.each else None
            report = run_chaos(
                args.nodes,
                args.time,
                run,
                run_out,
                clients=args.clients,
                keys=args.keys,
                ops_per_key=args.ops_per_key,
                seed=args.seed,
                stale_reads=args.stale_reads,
                unsafe_stale_reads=args.unsafe_stale_reads,
                txn_share=args.txn_share,
                schedule=Schedule(fault=args.fault, quiet=args.quiet),
                heal_within=args.heal_within,
                subnet=args.subnet,
                key=not args.no_cluster_key,
                progress=say,
                report_dir=_report_folder(args.report, run_out, name) if plots else None,
            )
            print(report.render(), flush=True)
            passed = passed and report.ok
        return 0 if passed else 1
    except ValueError as e:
        say(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped and deleted")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
