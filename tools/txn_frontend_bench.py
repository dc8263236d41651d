"""CPU of each end's AMP front end per transaction, in process, with no network.

    PYTHONPATH=$PWD python tools/txn_frontend_bench.py [--count 3000] [--rounds 5]

The transaction of ``tools/coord_bench.py``'s txn workload (4 value compares and
4 puts of 100-byte values, in a session):

- node: a client's Txn request, as bytes, handed to a node's AMP protocol
  (``api.amp_api``) over a fake node that commits at once: parse, checks,
  encoding, the state machine's apply, the answer written back as bytes;
- client: ``LeekyClient.txn`` to the request written, and the node's answer
  (canned bytes) to the Deferred fired with the ``TxnResult``.

Prints the best of the rounds per end, in microseconds per transaction. No
system calls are counted (the transports are in memory). Run it from two
source trees, alternated, for an A/B.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from leeky_twisted.api.amp_api import make_amp_factory
from leeky_twisted.client.library import LeekyClient
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.ampframes import split_box
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.testing.apifakes import FakeRaftNode

KEYS = [f"coordbench/txn/12/{j}" for j in range(4)]


def _value(seq: int) -> str:
    return f"{seq:010d}".ljust(100, "x")


def _document(seq: int) -> dict[str, Any]:
    return {
        "compare": [
            {"key": k, "target": "value", "op": "==", "value": _value(seq - 1)} for k in KEYS
        ],
        "success": [{"type": "put", "key": k, "value": _value(seq)} for k in KEYS],
        "failure": [],
    }


def node_side(count: int, rounds: int) -> float:
    """Return the best CPU microseconds per txn of a node's front end."""
    node = FakeRaftNode("1", "10.0.0.1:7001")
    node.state_machine.apply(1, kv.encode_command(kv.RegisterSession("b")))
    node.index = 1
    for j, k in enumerate(KEYS, 2):
        node.state_machine.apply(j, kv.encode_command(kv.Put(k, _value(0))))
        node.index = j
    proto = make_amp_factory(node, Clock()).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    seq, best = 0, []
    for _ in range(rounds):
        node.calls.clear()
        requests = []
        for _ in range(count):
            seq += 1
            arguments = {"txn": json.dumps(_document(seq)), "client_id": "1.b", "seq": seq}
            box = cc.Txn.makeArguments({**arguments, "ack": seq}, None)
            box[amp.COMMAND], box[amp.ASK] = b"Txn", b"%x" % seq
            requests.append(box.serialize())
        started = time.process_time()
        for request in requests:
            proto.dataReceived(request)
        best.append((time.process_time() - started) / count * 1e6)
        out = transport.value()
        transport.clear()
        if out.count(b"_answer") != count or b'"succeeded": true' not in out[-200:]:
            raise SystemExit(
                f"txn_frontend_bench: the node did not answer every txn: {out[-200:]!r}"
            )
    return min(best)


def client_side(count: int, rounds: int) -> float:
    """Return the best CPU microseconds per txn of the bundled client."""
    protos: list[Any] = []

    def connect(address: Any, proto: Any) -> Any:
        proto.makeConnection(StringTransport())
        protos.append(proto)
        return succeed(proto)

    client = LeekyClient(Clock(), [("10.0.0.1", 7001)], session_id="1.b", connect=connect)
    result = json.dumps({"succeeded": True, "revision": 9, "responses": [None] * 4}).encode()
    got: list[Any] = []
    seq, best = 0, []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            seq += 1
            document = _document(seq)
            client.txn(document["compare"], document["success"]).addCallback(got.append)
            transport = protos[0].transport
            request = transport.value()
            transport.clear()
            box = split_box(request, 0)
            if box is None:
                raise SystemExit("txn_frontend_bench: the client wrote no whole box")
            answer = amp.AmpBox({amp.ANSWER: box[0][amp.ASK], b"result": result})
            protos[0].dataReceived(answer.serialize())
        best.append((time.process_time() - started) / count * 1e6)
    if len(got) != count * rounds:
        raise SystemExit("txn_frontend_bench: the client did not fire every txn")
    return min(best)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="txn_frontend_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    if min(a.count, a.rounds) < 1:
        p.error("--count and --rounds must be at least 1")
    node = node_side(a.count, a.rounds)
    client = client_side(a.count, a.rounds)
    print(f"node {node:.1f}  client {client:.1f}  us per txn (best)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
