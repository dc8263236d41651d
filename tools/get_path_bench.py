"""CPU per linearizable get on the leader's request path, in one process, without the network.

    PYTHONPATH=<tree> python tools/get_path_bench.py [--batches 400] [--clients 64]

Drives the node's own code for a JSON-RPC ``get`` from the request bytes to the answer
bytes: the HTTP/1.1 protocol, the JSON-RPC dispatcher, the frontend, the request meter,
``RaftNode.read``'s bookkeeping (its pending reads), and, once the read is safe,
``RaftNode.serve_reads`` with the key-value state machine. Only Raft is left out: each
batch of ``--clients`` reads is made safe at once, as one ReadIndex round would. Run it
once per source tree, alternated, to compare trees (process CPU, best of 5).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from leeky_twisted.api.amp_api import make_frontend
from leeky_twisted.api.http_server import JSONRPCHTTPProtocol
from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.dashboard.meter import MeteredNode, RequestMeter
from leeky_twisted.security.connlimits import ConnectionGuard, GuardedFactory, PortCaps
from leeky_twisted.server.applier import LocalApplier
from leeky_twisted.server.node import RaftNode
from leeky_twisted.server.pending import PendingRequests
from leeky_twisted.server.tap import tune_collector
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import KeyValueStateMachine


class _LeaderStandIn:
    """The parts of a RaftNode a linearizable read touches, with Raft left out."""

    def __init__(self, applier: LocalApplier) -> None:
        self.applier = applier
        self.pending = PendingRequests()
        self.applied_index = 0
        self.safe: list[int] = []

    def local_state_machine(self) -> Any:
        return self.applier.state_machine

    def want_eager_commits(self, eager: bool) -> None:
        """A leader is told of commits by its own core: nothing to ask."""

    def on_removed(self, observer: Any) -> None:
        """The stand-in is never removed from a cluster: nothing to tell."""

    def read(self, request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        ctx = self.pending.next_read_id()
        self.safe.append(ctx)
        return self.pending.add_read(ctx, request, timeout)

    def round_confirmed(self) -> None:
        """Every read so far is safe at the applied index: serve them as the node does."""
        for ctx in self.safe:
            self.pending.read_ready(self.applied_index, ctx)
        self.safe = []
        RaftNode.serve_reads(self)  # type: ignore[arg-type]


def build(clients: int, guarded: bool = False) -> tuple[_LeaderStandIn, list[Any], list[bytes]]:
    """A leader stand-in with 1,000 keys, ``clients`` HTTP connections, and their requests.

    With ``guarded``, each connection sits under the HTTP port's connection guard, as
    the node's listener puts it.
    """
    sm = KeyValueStateMachine()
    for i in range(1000):
        sm.apply(i + 1, kv.encode_command(kv.Put(f"bench/reads/{i:08d}", "v" * 100)))
    node = _LeaderStandIn(LocalApplier(sm))
    node.applied_index = 1000
    clock = Clock()
    frontend = make_frontend(MeteredNode(node, RequestMeter(clock)), clock, forward=False)
    rpc = KeyValueJSONRPC(frontend, 1 << 20)
    factory = Factory.forProtocol(lambda: JSONRPCHTTPProtocol(rpc, lambda: {}))
    if guarded:
        caps = PortCaps(max_connections=clients, max_per_host=clients)
        guard = ConnectionGuard(
            "http", caps, clock, request_read_timeout=30.0, max_held_bytes=256 << 20
        )
        factory = GuardedFactory(factory, guard)
    protocols = []
    for _ in range(clients):
        p = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        p.makeConnection(StringTransport())
        protocols.append(p)
    requests = []
    for i in range(clients):
        body = json.dumps(
            {"jsonrpc": "2.0", "method": "get", "params": [f"bench/reads/{i:08d}"], "id": i + 1}
        ).encode()
        requests.append(
            b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    return node, protocols, requests


def run(batches: int, clients: int, guarded: bool = False) -> float:
    """Return the best of 5 process-CPU timings, in microseconds per get."""
    node, protocols, requests = build(clients, guarded)
    tune_collector()  # as the node process does
    pairs = list(zip(protocols, requests, strict=True))
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(batches):
            for p, r in pairs:
                p.dataReceived(r)
            node.round_confirmed()
        best = min(best, (time.process_time() - t0) / (batches * clients) * 1e6)
        for p in protocols:
            transport = p.transport
            transport = getattr(transport, "transport", transport)  # under the guard
            assert isinstance(transport, StringTransport)
            answer = transport.value()
            assert answer.count(b"200 OK") == batches and b'"result": "vvv' in answer
            transport.clear()
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=400)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--guarded", action="store_true", help="under the HTTP connection guard")
    args = ap.parse_args()
    print(f"{run(args.batches, args.clients, args.guarded):.2f} us per get (best of 5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
