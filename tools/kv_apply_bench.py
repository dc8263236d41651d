"""Micro-benchmark of the key-value state machine's apply path and ranges (issue #16).

Applies 100,000 committed puts (10,000 distinct keys, 16-byte values), with
and without client sessions, to: the state machine of a base git revision
(default ``main``), this tree's, and this tree's with a watch hub attached (as
in a running node). Runs interleaved, best of N. Then times ranges over
100,000 keys.

    PYTHONPATH=$PWD python tools/kv_apply_bench.py [--base main] [--reps 9]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet.task import Clock

from leeky_twisted.api.watch import WatchHub, attach
from leeky_twisted.statemachine import kv as new
from leeky_twisted.statemachine.commands import Delete, Put, Range, Session, encode_command

N, KEYS = 100_000, 10_000


def load_base(revision: str) -> object:
    source = subprocess.run(
        ["git", "show", f"{revision}:leeky_twisted/statemachine/kv.py"],
        capture_output=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "kv_base.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("kv_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kv_base"] = module
    spec.loader.exec_module(module)
    return module


def once(module: object, commands: list[bytes], session: bool, hub: bool = False) -> float:
    sm = module.KeyValueStateMachine()  # type: ignore[attr-defined]
    if session:
        sm.apply(1, b'["register","abc"]')
    if hub:
        attach(sm, WatchHub(Clock(), 0))
    started = time.perf_counter()
    for index, command in enumerate(commands, 2):
        sm.apply(index, command)
    return time.perf_counter() - started


def puts(base: object, reps: int) -> None:
    for session in (False, True):
        commands = [
            encode_command(
                Put(f"key/{i % KEYS:06d}", "v" * 16, Session("1.abc", i, i) if session else None)
            )
            for i in range(N)
        ]
        best = {"base": float("inf"), "tree": float("inf"), "tree + watch hub": float("inf")}
        for _ in range(reps):
            best["base"] = min(best["base"], once(base, commands, session))
            best["tree"] = min(best["tree"], once(new, commands, session))
            best["tree + watch hub"] = min(
                best["tree + watch hub"], once(new, commands, session, True)
            )
        shown = ", ".join(f"{k} {v * 1e6 / N:.2f} us/put" for k, v in best.items())
        print(f"100k puts, sessions={session}: {shown}")


def ranges() -> None:
    sm = new.KeyValueStateMachine()
    index = 0
    for k in range(N):
        index += 1
        sm.apply(index, encode_command(Put(f"k/{(k * 7919) % N:06d}", "v")))
    started = time.perf_counter()
    sm.query(Range.prefix("k/00001"))
    print(f"first range (sorts {N} keys): {(time.perf_counter() - started) * 1e3:.1f} ms")
    started = time.perf_counter()
    for _ in range(1000):
        sm.query(Range.prefix("k/0123", limit=100))
    print(f"prefix range of 100 keys: {(time.perf_counter() - started) * 1e3:.0f} us")
    started = time.perf_counter()
    for n in range(1000):
        index += 1
        sm.apply(index, encode_command(Put(f"lock/{n:06d}", "x")))
        sm.query(Range.prefix("lock/", limit=1))
        index += 1
        sm.apply(index, encode_command(Delete(f"lock/{n:06d}")))
    elapsed = (time.perf_counter() - started) * 1e3
    print(f"create + prefix range + delete among {N} keys: {elapsed:.0f} us per round")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    puts(load_base(args.base), args.reps)
    ranges()


if __name__ == "__main__":
    main()
