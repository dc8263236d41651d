"""CPU a node spends on the Python steps of one transaction, in process.

    PYTHONPATH=$PWD python tools/txn_steps_bench.py [--count 20000] [--rounds 5]

The transaction of ``tools/coord_bench.py``'s txn workload (4 value compares and 4
puts of 100-byte values, in a session): the frontend's parse and checks
(``api.coord.parse_txn``), the log entry's encoding and decoding
(``statemachine.commands``), the state machine's apply with a watch hub attached
(``KeyValueStateMachine.apply``: decode, compares, puts, events) and the answer's
JSON. Prints the best of the rounds per step, in microseconds per transaction. Run
it from two source trees, alternated, for an A/B.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

from twisted.internet.task import Clock

from leeky_twisted.api import coord
from leeky_twisted.api.amp_api import _json_result, make_frontend
from leeky_twisted.api.watch import WatchHub, attach
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import KeyValueStateMachine, TxnResult
from leeky_twisted.testing.apifakes import FakeRaftNode

KEYS = [f"coordbench/txn/12/{j}" for j in range(4)]


def _value(seq: int) -> str:
    return f"{seq:010d}".ljust(100, "x")


def _best(step: Callable[[], None], count: int, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        started = time.process_time()
        step()
        out.append((time.process_time() - started) / count * 1e6)
    return min(out)


def measure(count: int, rounds: int) -> dict[str, float]:
    """Return the best CPU microseconds per transaction of each step."""
    frontend = make_frontend(FakeRaftNode("1", "10.0.0.1:7001"), Clock())
    session = kv.Session("1.bench", 7, 7)
    document = {
        "compare": [{"key": k, "target": "value", "op": "==", "value": _value(0)} for k in KEYS],
        "success": [{"type": "put", "key": k, "value": _value(1)} for k in KEYS],
    }
    text = json.dumps(document, ensure_ascii=False)
    command = coord.parse_txn(frontend, json.loads(text), session)
    data = kv.encode_command(command)
    result = TxnResult(True, 1234, (None, None, None, None))

    def parse() -> None:
        for _ in range(count):
            coord.parse_txn(frontend, json.loads(text), session)

    def encode() -> None:
        for _ in range(count):
            kv.encode_command(command)

    def decode() -> None:
        for _ in range(count):
            kv.decode_command(data)

    def answer() -> None:
        for _ in range(count):
            _json_result(result)

    def apply_once() -> float:
        machine = KeyValueStateMachine()
        attach(machine, WatchHub(Clock(), 0))
        machine.apply(1, kv.encode_command(kv.RegisterSession("bench")))
        for j, k in enumerate(KEYS):
            machine.apply(2 + j, kv.encode_command(kv.Put(k, _value(0))))
        entries = [
            kv.encode_command(
                kv.Txn(
                    tuple(kv.Compare(k, "value", "==", _value(i)) for k in KEYS),
                    tuple(kv.Put(k, _value(i + 1)) for k in KEYS),
                    (),
                    kv.Session("1.bench", i + 1, i + 1),
                )
            )
            for i in range(count)
        ]
        started = time.process_time()
        for index, entry in enumerate(entries, 10):
            machine.apply(index, entry)
        return (time.process_time() - started) / count * 1e6

    return {
        "parse and check": _best(parse, count, rounds),
        "encode": _best(encode, count, rounds),
        "decode": _best(decode, count, rounds),
        "apply with events": min(apply_once() for _ in range(rounds)),
        "answer JSON": _best(answer, count, rounds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="txn_steps_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    if min(a.count, a.rounds) < 1:
        p.error("--count and --rounds must be at least 1")
    steps = measure(a.count, a.rounds)
    print("  ".join(f"{name} {us:.1f}" for name, us in steps.items()) + "  us per txn (best)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
