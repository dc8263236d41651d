"""A linearizability checker for histories of a key-value register.

The search is Wing and Gong's, in the form Lowe gave it ("Testing for
linearizability", 2017) and Porcupine implements: the history's invoke and
completion events sit in one time-ordered doubly linked list; the search
repeatedly picks an operation whose invoke comes before the first completion
still in the list (a *minimal* operation), applies it to the model and, if the
model accepts it, unlinks its two events (*lifting* it). When the first event of
the list is a completion, the operation it belongs to can no longer be placed:
the search backtracks. A cache of configurations already explored, each the set
of linearized operations (a bitset) plus the model's state, keeps it from
exploring the same configuration twice.

Operations of unknown outcome are what makes such searches blow up: each one
stays pending to the end, so a plain cache tells apart every subset of them
that happened to be linearized and then overwritten. Two refinements keep the
search small, both sound because an unknown operation can always be moved to
the very end of a linearization (it completes at +infinity and accepts any
result):

* a configuration is pruned when a configuration with the same known
  operations, the same state and a *subset* of its unknown operations has
  already failed (whatever the larger one could do, the smaller one could do
  by placing the extra unknown operations last);
* only *canonical* linearizations are searched. In them every run of unknown
  operations comes right before a known operation that the state before the run
  does not allow, and inside a run only the first operation may be a put and
  every operation changes the state. Any linearization can be rewritten into
  this form by moving unknown operations later: one that changes nothing, or
  that a later write in its run overwrites, can go last; a run before a known
  operation that was allowed anyway can go last too (that operation fixes the
  state, or, for a failed cas, leaves it as it was, and the run can follow it).

Among *anonymous* unknown puts (whose values no operation reads or expects)
only the earliest invoked one still pending is tried: any linearization using a
later one can swap the two. Candidates are tried known operations first.

The history is split by key first (P-compositionality, Horn and Kroening 2015):
a history of independent registers is linearizable exactly when each key's
sub-history is, and the small searches are much cheaper than one big one.

A transaction (:attr:`OpKind.TXN`) couples the keys it touches: they form one
object whose state is every one of their values, and the transaction is one
atomic step of it (:mod:`leeky_twisted.checker.txnmodel`). The split merges
the keys that a transaction couples (the keys of its ranges are the history's
keys in them); each merged group is searched by :func:`check_group`, the same
search with a multi-key state and a plain cache of (linearized set, state)
(without the unknown-operation refinements, which assume one register). Keys
no transaction touches keep the single-key search and its speed.

Outcomes (see :mod:`leeky_twisted.checker.history`):

* ``fail`` operations never took effect and are left out;
* ``unknown`` gets are left out too (they change nothing and returned nothing);
* ``unknown`` puts and cases complete at +infinity: they may take effect at any
  point after their invoke, or never (placing them after every known operation is
  the same as never), and any result is accepted for them.

The checker is pure: no clock, no I/O. Its work is bounded by a step budget; a
search that runs out of budget answers :attr:`Verdict.UNKNOWN`, never a guess.
"""

from __future__ import annotations

import enum
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from leeky_twisted.checker.history import Operation, OpKind, Outcome
from leeky_twisted.checker.txnmodel import State, TxnSpec, group_step, parse_txn, txn_keys

__all__ = [
    "DEFAULT_MAX_STEPS",
    "CheckResult",
    "KeyResult",
    "Verdict",
    "Violation",
    "check_group",
    "check_history",
    "check_key",
    "register_step",
]

#: Default budget of model steps for one key's search.
DEFAULT_MAX_STEPS = 10_000_000

#: How many operations of the best partial linearization a violation shows.
_TAIL = 8
#: At most this many concurrent operations and candidate values in a violation.
_AROUND = 16

_NO_RUN = object()


class Verdict(enum.StrEnum):
    """The checker's answer."""

    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown (search budget exhausted)"


@dataclass(frozen=True)
class Violation:
    """Where the search got stuck, for a readable report.

    ``op`` is the earliest-completing operation that no linearization of the
    operations before it can place: every search path that got furthest stopped
    there. ``linearized`` is the tail of one longest partial linearization (in
    linearization order) and ``state`` the register's value after it;
    ``possible_values`` lists the values the register could hold just before
    ``op`` on any explored path. ``concurrent`` holds the operations whose
    intervals overlap ``op``'s.
    """

    key: str
    op: Operation
    linearized: tuple[Operation, ...]
    state: str | None
    possible_values: tuple[str | None, ...]
    concurrent: tuple[Operation, ...]

    def render(self) -> str:
        """Return a multi-line, human-readable account of the violation."""
        values = ", ".join(repr(v) for v in self.possible_values)
        lines = [
            f"key {self.key!r}: no linearization gets past",
            f"    {self.op.describe()}",
            f"  the register could only hold one of: {values}",
            "  a longest partial linearization ends with:",
        ]
        lines += [f"    {op.describe()}" for op in self.linearized] or ["    (nothing)"]
        lines.append(f"  after which the register holds {self.state!r}")
        lines.append("  operations concurrent with it:")
        lines += [f"    {op.describe()}" for op in self.concurrent] or ["    (none)"]
        return "\n".join(lines)


@dataclass(frozen=True)
class KeyResult:
    """The verdict on one key's sub-history.

    ``operations`` counts the operations searched (failed operations and
    unknown gets excluded), ``steps`` the model steps tried and
    ``configurations`` the configurations explored.
    """

    key: str
    verdict: Verdict
    operations: int
    steps: int
    configurations: int
    violation: Violation | None = None


@dataclass(frozen=True)
class CheckResult:
    """The verdict on a whole history: linearizable only if every key is."""

    verdict: Verdict
    keys: tuple[KeyResult, ...] = field(default_factory=tuple)

    @property
    def violations(self) -> list[Violation]:
        """Return the violations found, one per non-linearizable key."""
        return [k.violation for k in self.keys if k.violation is not None]

    def render(self) -> str:
        """Return the verdict, one line per key, and each violation in full."""
        lines = [f"verdict: {self.verdict.value}"]
        for k in self.keys:
            lines.append(
                f"  key {k.key!r}: {k.verdict.value} ({k.operations} ops, "
                f"{k.steps} steps, {k.configurations} configurations)"
            )
        for v in self.violations:
            lines.append(v.render())
        return "\n".join(lines)


def register_step(state: str | None, op: Operation) -> tuple[bool, str | None]:
    """Apply ``op`` to a register holding ``state`` (None: absent).

    Return whether the register's sequential specification allows the
    operation's recorded result here, and the state after it. An operation of
    unknown outcome allows any result.
    """
    known = op.outcome is Outcome.OK
    if op.kind is OpKind.GET:
        return (not known or op.result == state), state
    if op.kind is OpKind.PUT:
        return True, op.value
    swaps = state == op.expected
    if known and op.result != swaps:
        return False, state
    return True, (op.new if swaps else state)


def _searched(op: Operation) -> bool:
    """Return whether the search must place ``op``."""
    if op.outcome is Outcome.FAIL:
        return False
    return not (op.outcome is Outcome.UNKNOWN and op.kind is OpKind.GET)


def known_op(op: Operation) -> bool:
    """Return whether ``op``'s outcome is known (ok)."""
    return op.outcome is Outcome.OK


def check_key(
    key: str,
    ops: Iterable[Operation],
    initial: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> KeyResult:
    """Decide whether one key's operations are linearizable from ``initial``.

    ``ops`` must all be on ``key``. Candidates are tried known operations
    first, then unknown ones, so a history whose unknown writes were never
    observed linearizes without backtracking over them.
    """
    rel = [op for op in ops if op.key == key and _searched(op)]
    m = len(rel)
    known = [op.outcome is Outcome.OK for op in rel]
    remaining = sum(known)
    if remaining == 0:
        return KeyResult(key, Verdict.LINEARIZABLE, m, 0, 0)

    # Events: (time, 0 for invoke / 1 for completion, op position). At equal
    # times invokes sort first, so touching intervals count as concurrent.
    events = sorted(
        [(op.invoke, 0, pos) for pos, op in enumerate(rel)]
        + [
            (op.complete if op.complete is not None else math.inf, 1, pos)
            for pos, op in enumerate(rel)
        ]
    )
    n = len(events)
    end = n + 1  # node 0 is the head sentinel, node n + 1 the tail sentinel
    nxt = [*range(1, n + 2), end]
    prv = [0, *range(n + 1)]
    is_call = [False] * (n + 2)
    op_of = [-1] * (n + 2)
    call_node = [0] * m
    ret_node = [0] * m
    for node, (_, kind, pos) in enumerate(events, start=1):
        op_of[node] = pos
        if kind == 0:
            is_call[node] = True
            call_node[pos] = node
        else:
            ret_node[pos] = node

    def lift(pos: int) -> None:
        for node in (call_node[pos], ret_node[pos]):
            nxt[prv[node]] = nxt[node]
            prv[nxt[node]] = prv[node]

    def unlift(pos: int) -> None:
        for node in (ret_node[pos], call_node[pos]):
            nxt[prv[node]] = node
            prv[nxt[node]] = node

    # An unknown put whose value no searched operation reads or expects is
    # *anonymous*: no operation can tell its value from another anonymous one's.
    referenced = {op.result for op in rel if op.kind is OpKind.GET and known_op(op)}
    referenced |= {op.expected for op in rel if op.kind is OpKind.CAS}
    anonymous = [
        op.kind is OpKind.PUT and not known_op(op) and op.value not in referenced for op in rel
    ]

    def minimal() -> tuple[list[int], int]:
        """Return the minimal operations (known first) and the blocking one (-1: none).

        Of the anonymous unknown puts only the earliest invoked is offered: in a
        linearization that uses a later one, the two can swap places.
        """
        first: list[int] = []
        later: list[int] = []
        offered_anonymous = False
        node = nxt[0]
        while node != end and is_call[node]:
            pos = op_of[node]
            if known[pos]:
                first.append(pos)
            elif not anonymous[pos]:
                later.append(pos)
            elif not offered_anonymous:
                later.append(pos)
                offered_anonymous = True
            node = nxt[node]
        return first + later, (op_of[node] if node != end else -1)

    is_cas = [op.kind is OpKind.CAS for op in rel]
    state = initial
    known_bits = 0
    unknown_bits = 0
    # The state before the current run of unknown operations (_NO_RUN: none).
    run_start: object = _NO_RUN
    # Configurations outside a run whose search failed: (known set, state) ->
    # the unknown sets they had.
    failed: dict[tuple[int, str | None], list[int]] = defaultdict(list)
    stack: list[tuple[int, str | None, object, list[int], int, int]] = []
    candidates, blocking = minimal()
    tried = 0
    steps = 0
    configurations = 0
    best_node = -1
    best_path: list[int] = []
    best_state = initial
    best_values: set[str | None] = set()

    while True:
        if remaining == 0:
            return KeyResult(key, Verdict.LINEARIZABLE, m, steps, configurations)
        if blocking >= 0:
            if ret_node[blocking] > best_node:
                best_node = ret_node[blocking]
                best_path = [frame[0] for frame in stack]
                best_state = state
                best_values = {state}
            elif ret_node[blocking] == best_node and len(best_values) < _AROUND:
                best_values.add(state)
        advanced = False
        in_run = run_start is not _NO_RUN
        while tried < len(candidates):
            pos = candidates[tried]
            tried += 1
            steps += 1
            op = rel[pos]
            allowed, new_state = register_step(state, op)
            if not allowed:
                continue
            bit = 1 << pos
            if known[pos]:
                if in_run and register_step(run_start, op)[0]:  # type: ignore[arg-type]
                    continue  # it needs no run before it: that run can move after it
                kbits, ubits, new_run = known_bits | bit, unknown_bits, _NO_RUN
            elif new_state == state or (in_run and not is_cas[pos]):
                continue  # it could as well come last: a no-op, or overwritten
            else:
                kbits, ubits = known_bits, unknown_bits | bit
                new_run = run_start if in_run else state
            if any(f & ~ubits == 0 for f in failed.get((kbits, new_state), ())):
                continue
            configurations += 1
            stack.append((pos, state, run_start, candidates, tried, blocking))
            lift(pos)
            known_bits, unknown_bits, state, run_start = kbits, ubits, new_state, new_run
            if known[pos]:
                remaining -= 1
            advanced = True
            break
        if steps > max_steps:
            return KeyResult(key, Verdict.UNKNOWN, m, steps, configurations)
        if advanced:
            candidates, blocking = minimal()
            tried = 0
            continue
        if not stack:
            violation = _violation(
                key, rel, events[best_node - 1][2], best_path, best_state, best_values
            )
            return KeyResult(key, Verdict.NOT_LINEARIZABLE, m, steps, configurations, violation)
        if not in_run:
            failed[(known_bits, state)].append(unknown_bits)
        pos, state, run_start, candidates, tried, blocking = stack.pop()
        unlift(pos)
        if known[pos]:
            known_bits &= ~(1 << pos)
            remaining += 1
        else:
            unknown_bits &= ~(1 << pos)


def _violation(
    key: str,
    rel: list[Operation],
    culprit_pos: int,
    path: list[int],
    state: str | None,
    values: set[str | None],
) -> Violation:
    """Describe the furthest point the search reached (see :class:`Violation`)."""
    culprit = rel[culprit_pos]
    end = culprit.complete if culprit.complete is not None else math.inf

    def overlaps(op: Operation) -> bool:
        op_end = op.complete if op.complete is not None else math.inf
        return op is not culprit and op.invoke <= end and op_end >= culprit.invoke

    # Known operations first, then the unknown ones invoked nearest to it.
    around = sorted(
        (op for op in rel if overlaps(op)),
        key=lambda op: (op.outcome is not Outcome.OK, abs(op.invoke - culprit.invoke)),
    )[:_AROUND]
    return Violation(
        key=key,
        op=culprit,
        linearized=tuple(rel[p] for p in path[-_TAIL:]),
        state=state,
        possible_values=tuple(sorted(values, key=lambda v: (v is not None, v or ""))),
        concurrent=tuple(sorted(around, key=lambda op: op.invoke)),
    )


def check_history(
    ops: Iterable[Operation],
    initial: Mapping[str, str | None] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> CheckResult:
    """Decide whether a whole history is linearizable, one key (or coupled group) at a time.

    :param initial: each key's value before the history (absent keys: None).
    :param max_steps: the step budget of each key's (or group's) search.

    ValueError when a transaction holds something the model cannot check
    (see :mod:`leeky_twisted.checker.txnmodel`).
    """
    ops = list(ops)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.kind is not OpKind.TXN:
            by_key[op.key].append(op)
    specs = {op.index: parse_txn(op.txn or "") for op in ops if op.kind is OpKind.TXN}
    start = dict(initial or {})
    if not specs:
        results = tuple(
            check_key(key, by_key[key], start.get(key), max_steps) for key in sorted(by_key)
        )
        return CheckResult(_overall(results), results)
    all_keys = set(by_key) | {k for spec in specs.values() for k in spec.point_keys()}
    parent = {k: k for k in all_keys}

    def root(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    touched: dict[int, set[str]] = {}
    for op in ops:
        if op.kind is OpKind.TXN:
            keys = txn_keys(specs[op.index], all_keys) or {op.key}
            touched[op.index] = keys
            for k in keys:
                parent.setdefault(k, k)
            first, *rest = sorted(keys)
            for k in rest:
                parent[root(k)] = root(first)
    groups: dict[str, set[str]] = defaultdict(set)
    for k in parent:
        groups[root(k)].add(k)
    members: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        key = min(touched[op.index]) if op.kind is OpKind.TXN else op.key
        members[root(key)].append(op)
    results_list: list[KeyResult] = []
    for r in sorted(groups, key=lambda r: min(groups[r])):
        keys = sorted(groups[r])
        if len(keys) == 1 and not any(op.kind is OpKind.TXN for op in members[r]):
            results_list.append(check_key(keys[0], members[r], start.get(keys[0]), max_steps))
        else:
            results_list.append(check_group(keys, members[r], start, specs, max_steps))
    results = tuple(results_list)
    return CheckResult(_overall(results), results)


def _overall(results: tuple[KeyResult, ...]) -> Verdict:
    if any(r.verdict is Verdict.NOT_LINEARIZABLE for r in results):
        return Verdict.NOT_LINEARIZABLE
    if any(r.verdict is Verdict.UNKNOWN for r in results):
        return Verdict.UNKNOWN
    return Verdict.LINEARIZABLE


def check_group(
    keys: Sequence[str],
    ops: Iterable[Operation],
    initial: Mapping[str, str | None] | None = None,
    specs: Mapping[int, TxnSpec] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> KeyResult:
    """Decide whether the operations on a group of coupled keys are linearizable.

    ``keys`` are the group's keys (every key its operations touch), ``specs``
    the parsed documents of its transactions by operation index (parsed here
    when missing). The search is Lowe's: minimal operations, lifting, and a
    cache of (linearized set, state); the result's ``key`` names the group as
    ``k1+k2+...``.
    """
    keys = sorted(keys)
    name = "+".join(keys)
    index = {k: i for i, k in enumerate(keys)}
    rel = [op for op in ops if _searched(op)]
    m = len(rel)
    spec_of: list[TxnSpec | None] = []
    answer_of: list[object] = []
    for op in rel:
        if op.kind is OpKind.TXN:
            spec = (specs or {}).get(op.index) or parse_txn(op.txn or "")
            spec_of.append(spec)
            answer = None
            if op.outcome is Outcome.OK:
                try:
                    answer = json.loads(str(op.result))
                except ValueError:
                    raise ValueError(f"op {op.index}: txn result is not JSON") from None
            answer_of.append(answer)
        else:
            spec_of.append(None)
            answer_of.append(None)
    init = initial or {}
    state: State = tuple((init.get(k), 0 if init.get(k) is None else 1) for k in keys)
    known = [op.outcome is Outcome.OK for op in rel]
    remaining = sum(known)
    if remaining == 0:
        return KeyResult(name, Verdict.LINEARIZABLE, m, 0, 0)
    events = sorted(
        [(op.invoke, 0, pos) for pos, op in enumerate(rel)]
        + [
            (op.complete if op.complete is not None else math.inf, 1, pos)
            for pos, op in enumerate(rel)
        ]
    )
    n = len(events)
    end = n + 1
    nxt = [*range(1, n + 2), end]
    prv = [0, *range(n + 1)]
    is_call = [False] * (n + 2)
    op_of = [-1] * (n + 2)
    call_node = [0] * m
    ret_node = [0] * m
    for node, (_, kind, pos) in enumerate(events, start=1):
        op_of[node] = pos
        if kind == 0:
            is_call[node] = True
            call_node[pos] = node
        else:
            ret_node[pos] = node

    def lift(pos: int) -> None:
        for node in (call_node[pos], ret_node[pos]):
            nxt[prv[node]] = nxt[node]
            prv[nxt[node]] = prv[node]

    def unlift(pos: int) -> None:
        for node in (ret_node[pos], call_node[pos]):
            nxt[prv[node]] = node
            prv[nxt[node]] = node

    def minimal() -> tuple[list[int], int]:
        first: list[int] = []
        later: list[int] = []
        node = nxt[0]
        while node != end and is_call[node]:
            pos = op_of[node]
            (first if known[pos] else later).append(pos)
            node = nxt[node]
        return first + later, (op_of[node] if node != end else -1)

    seen: set[tuple[int, State]] = set()
    bits = 0
    stack: list[tuple[int, State, list[int], int]] = []
    candidates, blocking = minimal()
    tried = 0
    steps = 0
    configurations = 0
    best_node = -1
    best_path: list[int] = []
    best_state = state
    while True:
        if remaining == 0:
            return KeyResult(name, Verdict.LINEARIZABLE, m, steps, configurations)
        if blocking >= 0 and ret_node[blocking] > best_node:
            best_node = ret_node[blocking]
            best_path = [frame[0] for frame in stack]
            best_state = state
        advanced = False
        while tried < len(candidates):
            pos = candidates[tried]
            tried += 1
            steps += 1
            allowed, new_state = group_step(
                keys, index, state, rel[pos], spec_of[pos], answer_of[pos]
            )
            if not allowed:
                continue
            new_bits = bits | (1 << pos)
            if (new_bits, new_state) in seen:
                continue
            seen.add((new_bits, new_state))
            configurations += 1
            stack.append((pos, state, candidates, tried))
            lift(pos)
            bits, state = new_bits, new_state
            if known[pos]:
                remaining -= 1
            advanced = True
            break
        if steps > max_steps:
            return KeyResult(name, Verdict.UNKNOWN, m, steps, configurations)
        if advanced:
            candidates, blocking = minimal()
            tried = 0
            continue
        if not stack:
            culprit = rel[events[best_node - 1][2]] if best_node > 0 else rel[0]
            violation = _group_violation(name, rel, culprit, best_path, best_state, keys)
            return KeyResult(name, Verdict.NOT_LINEARIZABLE, m, steps, configurations, violation)
        pos, state, candidates, tried = stack.pop()
        unlift(pos)
        bits &= ~(1 << pos)
        if known[pos]:
            remaining += 1


def _group_violation(
    name: str,
    rel: list[Operation],
    culprit: Operation,
    path: list[int],
    state: State,
    keys: Sequence[str],
) -> Violation:
    """Describe where a group's search got stuck (values shown as ``{key: value}``)."""
    shown = repr({k: v for k, (v, _) in zip(keys, state, strict=True) if v is not None})
    end = culprit.complete if culprit.complete is not None else math.inf

    def overlaps(op: Operation) -> bool:
        op_end = op.complete if op.complete is not None else math.inf
        return op is not culprit and op.invoke <= end and op_end >= culprit.invoke

    around = sorted(
        (op for op in rel if overlaps(op)),
        key=lambda op: (op.outcome is not Outcome.OK, abs(op.invoke - culprit.invoke)),
    )[:_AROUND]
    return Violation(
        key=name,
        op=culprit,
        linearized=tuple(rel[p] for p in path[-_TAIL:]),
        state=shown,
        possible_values=(shown,),
        concurrent=tuple(sorted(around, key=lambda op: op.invoke)),
    )
