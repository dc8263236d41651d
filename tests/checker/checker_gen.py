"""Build histories for the checker's tests: by hand, from a sequential model, and mutated.

``generate`` simulates clients against one true register per key: each
operation gets an interval and a linearization point inside it, the points are
applied in order, and results come from the register, so the history is
linearizable by construction. The mutations below each make a history
*certainly* non-linearizable (values are unique, so a value names its writer).
"""

from __future__ import annotations

import random
from dataclasses import replace

from leeky_twisted.checker.history import Operation, OpKind, Outcome


def op(
    index: int,
    kind: str,
    invoke: float,
    complete: float | None,
    *,
    key: str = "k",
    value: str | None = None,
    expected: str | None = None,
    new: str | None = None,
    result: str | bool | None = None,
    outcome: str | None = None,
    client: int = 0,
) -> Operation:
    """Return one operation; outcome defaults to ok, or unknown when ``complete`` is None."""
    if outcome is None:
        outcome = "unknown" if complete is None else "ok"
    return Operation(
        index=index,
        client=client,
        key=key,
        kind=OpKind(kind),
        invoke=invoke,
        complete=complete,
        outcome=Outcome(outcome),
        value=value,
        expected=expected,
        new=new,
        result=result,
    )


def generate(
    seed: int,
    *,
    clients: int = 5,
    ops: int = 60,
    keys: int = 2,
    unknown: float = 0.05,
    fail: float = 0.05,
    integer_times: bool = False,
) -> list[Operation]:
    """Return a linearizable history of ``ops`` operations by ``clients`` clients.

    With ``integer_times`` every time is a small integer, so many intervals
    touch or tie. An unknown write took effect or not, at random; a failed one
    did not.
    """
    rng = random.Random(seed)
    key_names = [f"k{i}" for i in range(keys)]
    cursor = [0.0] * clients
    written: dict[str, list[str]] = {k: [] for k in key_names}
    plans = []
    for index in range(ops):
        c = rng.randrange(clients)
        invoke = cursor[c] + (rng.randint(0, 2) if integer_times else rng.random())
        length = rng.randint(0, 4) if integer_times else rng.random() * 3
        complete = invoke + length
        cursor[c] = complete + (1 if integer_times else 0.001)
        key = rng.choice(key_names)
        roll = rng.random()
        value = f"{index}"
        if roll < 0.4:
            kind, args = OpKind.GET, {}
        elif roll < 0.75:
            kind, args = OpKind.PUT, {"value": value}
            written[key].append(value)
        else:
            pool = written[key][-4:]
            expected = rng.choice(pool) if pool and rng.random() < 0.8 else None
            kind, args = OpKind.CAS, {"expected": expected, "new": value}
            written[key].append(value)
        r = rng.random()
        outcome = Outcome.UNKNOWN if r < unknown else Outcome.FAIL if r < unknown + fail else None
        applied = outcome is None or (outcome is Outcome.UNKNOWN and rng.random() < 0.5)
        point = rng.uniform(invoke, complete)
        plans.append((point, index, c, key, kind, args, invoke, complete, outcome, applied))

    state: dict[str, str | None] = dict.fromkeys(key_names)
    history = []
    for point, index, c, key, kind, args, invoke, complete, outcome, applied in sorted(plans):
        del point
        result: str | bool | None = None
        if applied:
            if kind is OpKind.GET:
                result = state[key]
            elif kind is OpKind.PUT:
                state[key] = args["value"]
            else:
                result = state[key] == args["expected"]
                if result:
                    state[key] = args["new"]
        final = outcome or Outcome.OK
        history.append(
            Operation(
                index=index,
                client=c,
                key=key,
                kind=kind,
                invoke=invoke,
                complete=None if final is Outcome.UNKNOWN else complete,
                outcome=final,
                result=result if final is Outcome.OK else None,
                **args,
            )
        )
    history.sort(key=lambda o: o.index)
    return history


def _writes(history: list[Operation]) -> dict[str, Operation]:
    """Map each value to the ok operation that certainly wrote it."""
    out = {}
    for o in history:
        if o.outcome is not Outcome.OK:
            continue
        if o.kind is OpKind.PUT and o.value is not None:
            out[o.value] = o
        elif o.kind is OpKind.CAS and o.result is True and o.new is not None:
            out[o.new] = o
    return out


def _gets(history: list[Operation]) -> list[Operation]:
    return [o for o in history if o.kind is OpKind.GET and o.outcome is Outcome.OK]


def _swap(history: list[Operation], new: Operation) -> list[Operation]:
    return [new if o.index == new.index else o for o in history]


def mutate_future_read(history: list[Operation], rng: random.Random) -> list[Operation] | None:
    """Make a get return a value whose only writer starts after the get ends."""
    writers = [o for o in history if o.kind is not OpKind.GET and o.outcome is not Outcome.FAIL]
    options = []
    for g in _gets(history):
        assert g.complete is not None
        for w in writers:
            if w.key == g.key and w.invoke > g.complete:
                options.append((g, w.value if w.kind is OpKind.PUT else w.new))
    if not options:
        return None
    g, value = rng.choice(options)
    return _swap(history, replace(g, result=value))


def mutate_stale_read(history: list[Operation], rng: random.Random) -> list[Operation] | None:
    """Make a get return a value that a later, completed write had already replaced."""
    writes = _writes(history)
    options = []
    for g in _gets(history):
        for v, w1 in writes.items():
            if w1.key != g.key or w1.complete is None:
                continue
            for w2 in writes.values():
                if (
                    w2.key == g.key
                    and w2 is not w1
                    and w2.invoke > w1.complete
                    and w2.complete is not None
                    and w2.complete < g.invoke
                ):
                    options.append((g, v))
                    break
    if not options:
        return None
    g, value = rng.choice(options)
    return _swap(history, replace(g, result=value))


def mutate_phantom_read(history: list[Operation], rng: random.Random) -> list[Operation] | None:
    """Make a get return a value that nobody ever wrote."""
    gets = _gets(history)
    if not gets:
        return None
    g = rng.choice(gets)
    return _swap(history, replace(g, result="never-written"))


MUTATIONS = [mutate_future_read, mutate_stale_read, mutate_phantom_read]


def squash_values(history: list[Operation], alphabet: str = "abc") -> list[Operation]:
    """Map every value onto a tiny alphabet, so values repeat (the checker must not rely
    on unique values for its soundness, only for its speed)."""

    def sq(v: str | None) -> str | None:
        return None if v is None else alphabet[int(v) % len(alphabet)]

    return [
        replace(
            o,
            value=sq(o.value),
            expected=sq(o.expected),
            new=sq(o.new),
            result=sq(o.result) if isinstance(o.result, str) else o.result,
        )
        for o in history
    ]
