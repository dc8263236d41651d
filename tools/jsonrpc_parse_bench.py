"""CPU per request of the JSON-RPC body parse and method lookup, old way against new.

    python tools/jsonrpc_parse_bench.py [--n 200000] [--rounds 2]

Alternates the two in one process and prints the best of 5 timings (process CPU time)
per round, in microseconds per call.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from txjsonrpc.jsonrpc import BaseSubhandler

from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.protocol.jsonrpc import _refuse_constant, decode_body


class _Bare(KeyValueJSONRPC):
    """The resource's lookup alone, without a frontend."""

    def __init__(self) -> None:
        BaseSubhandler.__init__(self)
        self._functions = {}


def _best_us(fn: Callable[[], Any], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    call = {
        "jsonrpc": "2.0",
        "method": "put",
        "params": ["bench/conc/00001234", "ab" * 50],
        "id": 17,
    }
    body = json.dumps(call).encode()
    rpc = _Bare()
    for rnd in range(args.rounds):
        old_parse = _best_us(lambda: json.loads(body, parse_constant=_refuse_constant), args.n)
        new_parse = _best_us(lambda: decode_body(body), args.n)
        old_find = _best_us(lambda: rpc._getFunction("put"), args.n)
        new_find = _best_us(lambda: rpc._functions.get("put") or rpc._lookup("put"), args.n)
        print(
            f"round {rnd}: parse json.loads {old_parse:.2f} us, shared decoder {new_parse:.2f} us; "
            f"lookup _getFunction {old_find:.2f} us, remembered {new_find:.2f} us"
        )


if __name__ == "__main__":
    main()
