"""A synthetic history with known operations, outcomes and two fault windows."""

from __future__ import annotations

from leeky_twisted.checker.history import Operation, OpKind, Outcome

#: Two fault windows, as the nemesis records them (seconds on the history's clock).
FAULTS = [
    {"nemesis": "partition", "detail": "partition: [1 2] | [3 4 5]", "nodes": ["1", "2"],
     "start": 2.0, "end": 3.5},
    {"nemesis": "kill", "detail": "kill: node 3", "nodes": ["3"], "start": 6.0, "end": 7.25},
]  # fmt: skip

#: Indexes of the failed and the unknown operations.
FAILED = (10, 11, 25, 26)
UNKNOWN = (13, 24)


def history() -> list[Operation]:
    """Return 30 ops on key k by 3 clients: 24 ok, 4 failed, 2 unknown; linearizable.

    Client 0 gets, clients 1 and 2 put. Client c runs op n at 0.8 n + 0.1 c
    for 0.05 s (a failed one for 0.5 s). The failed and unknown ones fall in
    the fault windows; the unknown put gave up after 4.5 s, the unknown get
    has no give-up time.
    """
    ops: list[Operation] = []
    last = None
    for n in range(10):
        for c in range(3):
            i = len(ops)
            t = 0.8 * n + 0.1 * c
            if i in FAILED:
                outcome, done = Outcome.FAIL, t + 0.5
            elif i in UNKNOWN:
                outcome, done = Outcome.UNKNOWN, None
            else:
                outcome, done = Outcome.OK, t + 0.05
            if c == 0:
                op = Operation(
                    i,
                    c,
                    "k",
                    OpKind.GET,
                    t,
                    done,
                    outcome,
                    result=last if outcome is Outcome.OK else None,
                )
            else:
                op = Operation(
                    i,
                    c,
                    "k",
                    OpKind.PUT,
                    t,
                    done,
                    outcome,
                    value=f"c{c}.{n}",
                    gave_up=t + 4.5 if outcome is Outcome.UNKNOWN else None,
                )
                if outcome is Outcome.OK:
                    last = op.value
            ops.append(op)
    return ops


def bad_history() -> list[Operation]:
    """Return a non-linearizable history: a get reads a value nobody wrote, on key k."""
    ops = history()
    wrong = Operation(len(ops), 4, "k", OpKind.GET, 9.0, 9.1, Outcome.OK, result="never")
    return [*ops, wrong]
