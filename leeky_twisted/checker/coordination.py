"""Checkers for the coordination workloads: watch completeness, lock safety, lease expiry.

Each takes the JSON record a workload of :mod:`leeky_twisted.chaos.coordwork`
wrote (plain dicts and lists, described on each function) and returns a
:class:`CoordResult`: a verdict, the violations found (each one readable line)
and a few figures for the report. Pure: no clock, no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COORD_WORKLOADS",
    "FAILED",
    "PASSED",
    "CoordResult",
    "check_coordination",
    "check_lease",
    "check_lock",
    "check_watch",
]

PASSED = "passed"
FAILED = "failed"
#: The workloads this module checks, and what each proves.
COORD_WORKLOADS = {
    "watch": "watch completeness",
    "lock": "lock safety (fencing tokens)",
    "lease": "lease expiry within the bound",
}
#: At most this many violations are listed (the count is always exact).
_SHOWN = 50

#: An event as recorded: [revision, "put"|"delete", key, value or None].
EventRow = tuple[int, str, str, str | None]


@dataclass
class CoordResult:
    """A coordination check's verdict (``passed`` exactly when no violation)."""

    check: str
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    @property
    def verdict(self) -> str:
        """Return ``passed`` or ``failed``."""
        return PASSED if self.count == 0 else FAILED

    def add(self, text: str) -> None:
        """Record one violation."""
        self.count += 1
        if len(self.violations) < _SHOWN:
            self.violations.append(text)

    def render(self) -> str:
        """Return the verdict, the figures and the violations, one a line."""
        lines = [f"{self.check}: {self.verdict} ({self.count} violations)"]
        lines += [f"  {k}: {v}" for k, v in self.figures.items()]
        lines += [f"  VIOLATION: {v}" for v in self.violations]
        if self.count > len(self.violations):
            lines.append(f"  ... and {self.count - len(self.violations)} more")
        return "\n".join(lines)


def _row(e: Sequence[Any]) -> EventRow:
    return (int(e[0]), str(e[1]), str(e[2]), None if e[3] is None else str(e[3]))


def _diff(got: list[EventRow], want: list[EventRow]) -> str:
    """Say how a watcher's events differ from the committed ones: missing, extra, order."""
    got_set, want_set = set(got), set(want)
    missing = [e for e in want if e not in got_set]
    extra = [e for e in got if e not in want_set]
    dups = len(got) - len(set(got))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} never committed (first {extra[0]})")
    if dups:
        parts.append(f"{dups} duplicated")
    if not parts:
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
        parts.append(f"reordered from position {first}: got {got[first]}, expected {want[first]}")
    return "; ".join(parts)


def check_watch(record: Mapping[str, Any]) -> CoordResult:
    """Check that every watcher saw exactly the committed modifications of its prefix.

    ``record``: ``committed`` (the events of the prefix read at the end, in
    order, from the lowest start revision through ``final_revision``),
    ``final_revision``, ``final_kvs`` (``[key, value]`` of a range read at the
    end), ``writes`` (``{kind, key, value, outcome, revision, existed}``: each
    writer's request) and ``watchers`` (``{id, start_revision, events,
    restarts, error}``). The committed events are checked against the writes
    acknowledged (each at its revision) and the final range; each watcher's
    events must equal the committed ones at or after its start revision, in
    order: nothing missing, duplicated, reordered or invented.
    """
    out = CoordResult("watch completeness")
    final = int(record["final_revision"])
    committed = [_row(e) for e in record["committed"]]
    for a, b in itertools.pairwise(committed):
        if b[0] < a[0]:
            out.add(f"the committed events go back from revision {a[0]} to {b[0]}")
    at = {(e[0], e[2]): e for e in committed}
    lowest = min((int(w["start_revision"]) for w in record["watchers"]), default=final + 1)
    acked = 0
    for w in record["writes"]:
        if w.get("outcome") != "ok" or w.get("revision") is None:
            continue
        if w["kind"] == "delete" and not w.get("existed"):
            continue  # deleting an absent key changes nothing
        acked += 1
        rev = int(w["revision"])
        if not lowest <= rev <= final:
            continue
        want = (rev, w["kind"], w["key"], w.get("value") if w["kind"] == "put" else None)
        if at.get((rev, w["key"])) != want:
            out.add(f"acknowledged write {want} is not among the committed events")
    state: dict[str, str | None] = {}
    for _rev, kind, key, value in committed:
        state[key] = value if kind == "put" else None
    final_kvs = {str(k): v for k, v in record.get("final_kvs", ())}
    for key, value in state.items():
        if final_kvs.get(key) != value:
            out.add(
                f"key {key!r}: the committed events end with {value!r}, "
                f"the final range says {final_kvs.get(key)!r}"
            )
    events_total = 0
    for w in record["watchers"]:
        start = int(w["start_revision"])
        got = [_row(e) for e in w["events"] if int(e[0]) <= final]
        events_total += len(got)
        want = [e for e in committed if e[0] >= start]
        if w.get("error"):
            out.add(f"watcher {w['id']} ended: {w['error']}")
        if got != want:
            out.add(
                f"watcher {w['id']} (from revision {start}, {len(got)} events, "
                f"{len(want)} committed): {_diff(got, want)}"
            )
    out.figures = {
        "watchers": len(record["watchers"]),
        "watch restarts": sum(int(w.get("restarts", 0)) for w in record["watchers"]),
        "writes": len(record["writes"]),
        "writes acknowledged": acked,
        "committed events": len(committed),
        "events delivered": events_total,
        "final revision": final,
    }
    return out


def check_lock(record: Mapping[str, Any]) -> CoordResult:
    """Check that the protected writes of lock holders never interleave with a stale token.

    ``record``: ``acquisitions`` (``{contender, token}``), ``writes`` (each
    holder's protected write: ``{contender, token, key, outcome, succeeded,
    revision}``) and ``log`` (``[revision, token, key]`` of every protected
    write committed, read at the end). In revision order the tokens of the
    committed protected writes must never go down (a lower token after a
    higher one is a stale holder's write accepted after its successor's); each
    acknowledged write must be in the log at its revision with its token, and a
    write refused by its fencing compare must not be.
    """
    out = CoordResult("lock safety")
    log = sorted((int(r), int(t), str(k)) for r, t, k in record["log"])
    top = 0
    for rev, token, key in log:
        if token < top:
            out.add(
                f"protected write {key} with token {token} committed at revision {rev}, "
                f"after a write with token {top}: a stale holder acted on the lock"
            )
        top = max(top, token)
    by_key = {k: (r, t) for r, t, k in log}
    tokens = [int(a["token"]) for a in record["acquisitions"]]
    if len(set(tokens)) != len(tokens):
        out.add("two acquisitions got the same fencing token")
    refused = 0
    for w in record["writes"]:
        if w.get("outcome") != "ok":
            continue
        if w.get("succeeded"):
            if by_key.get(w["key"]) != (w["revision"], w["token"]):
                out.add(f"acknowledged protected write {w['key']} is not in the log as answered")
        else:
            refused += 1
            if w["key"] in by_key:
                out.add(f"protected write {w['key']} was refused yet is in the log")
    out.figures = {
        "acquisitions": len(tokens),
        "protected writes": len(record["writes"]),
        "committed protected writes": len(log),
        "stale writes refused by fencing": refused,
        "holders that stalled past their lease": int(record.get("stalls", 0)),
    }
    return out


def check_lease(record: Mapping[str, Any]) -> CoordResult:
    """Check that leases end within the bound once cut off, and never while kept alive.

    ``record``: ``ttl``, ``bound`` (seconds after the ttl within which the keys
    must be gone, docs/coordination.md) and ``leases``: ``{id, put_acked,
    keepalives: [[sent, acked]], cut_at, reads: [[invoke, complete, present]]}``
    (times on the workload's clock; only reads that answered are recorded).
    A lease whose keepalive sent at ``s`` was acknowledged lives until at least
    ``s + ttl``: a read completed before that which finds its key absent is a
    violation. Once the last acknowledged keepalive was acknowledged (at
    ``a``; the leader got it before), the leader expires the lease by ``a +
    ttl``; a leader that takes office at ``c`` before then (``leaders``:
    ``[time first seen, term, node]``) counts ``ttl + extension`` from ``c``;
    ``outages`` (``[start, end]`` with no leader found) delay "before then".
    A read invoked more than ``bound`` after the last such deadline that finds
    the key is a violation, and so is a cut-off lease whose key was never seen
    gone.
    """
    out = CoordResult("lease expiry")
    ttl = float(record["ttl"])
    bound = float(record["bound"])
    extension = float(record.get("extension", 0.0))
    changes = sorted(float(t) for t, *_ in record.get("leaders", ()))
    outages = sorted((float(a), float(b)) for a, b in record.get("outages", ()))
    latencies = []
    for lease in record["leases"]:
        if lease.get("put_acked") is None:
            continue  # its keys were never known to exist
        acked = [(float(s), float(a)) for s, a in lease["keepalives"] if a is not None]
        last_sent = max((s for s, _ in acked), default=float(lease["granted"]))
        last_acked = max((a for _, a in acked), default=float(lease["put_acked"]))
        alive_until = last_sent + ttl
        deadline = (
            _lease_deadline(last_acked + ttl, changes, ttl + extension, bound, outages) + bound
        )
        reads = [
            (float(i), float(c), bool(p))
            for i, c, p in lease["reads"]
            if float(i) >= float(lease["put_acked"])
        ]
        for invoke, complete, present in reads:
            if not present and complete < alive_until:
                out.add(
                    f"lease {lease['id']}: key gone at {complete:.3f}, before {alive_until:.3f} "
                    f"(ttl after the last acknowledged keepalive, sent at {last_sent:.3f})"
                )
            if present and invoke > deadline:
                out.add(
                    f"lease {lease['id']}: key still there at {invoke:.3f}, "
                    f"{invoke - last_acked:.2f} s after the last keepalive was acknowledged "
                    f"(bound {deadline - last_acked:.2f} s, leader changes counted)"
                )
        gone = [c for _, c, p in reads if not p and c >= alive_until]
        if lease.get("cut_at") is not None:
            if not gone:
                out.add(f"lease {lease['id']}: key never seen gone after it was cut off")
            else:
                latencies.append(min(gone) - last_acked)
    out.figures = {
        "leases": len(record["leases"]),
        "reads": sum(len(x["reads"]) for x in record["leases"]),
        "leader terms seen": len(changes),
        "keepalives acknowledged": sum(
            1 for x in record["leases"] for _, a in x["keepalives"] if a is not None
        ),
        "ttl": ttl,
        "bound after the last keepalive acknowledged, no leader change (s)": round(ttl + bound, 3),
        "seen gone after it, at most (s)": round(max(latencies), 3) if latencies else None,
    }
    return out


def _lease_deadline(
    deadline: float,
    changes: Sequence[float],
    fresh: float,
    slack: float,
    outages: Sequence[tuple[float, float]] = (),
) -> float:
    """Return when the last leader that could still hold a lease would expire it.

    ``deadline`` is the current leader's; a new leader seen at ``c`` before the
    lease was surely gone (``deadline + slack``) counts ``fresh`` (ttl +
    extension) from ``c`` (docs/coordination.md). While no node leads
    (``outages``: ``[start, end]`` of the polls that found no leader, say the
    whole cluster killed) nobody can expire a lease, so an outage that starts
    before the lease was surely gone moves that moment on by its length.
    """
    surely_gone = deadline + slack
    for start, end in outages:
        if start <= surely_gone:
            surely_gone += max(0.0, end - max(start, deadline - fresh))
    for c in changes:
        if c <= surely_gone:
            deadline = max(deadline, c + fresh)
    return deadline


def check_coordination(record: Mapping[str, Any]) -> CoordResult:
    """Check a record by its ``workload`` field; ValueError for an unknown one."""
    kind = record.get("workload")
    if kind == "watch":
        return check_watch(record)
    if kind == "lock":
        return check_lock(record)
    if kind == "lease":
        return check_lease(record)
    raise ValueError(f"unknown coordination workload {kind!r}")
