"""CPU a node spends fanning one event out to N AMP watchers of one key (or, with
``--side client``, a client process spends taking it on N connections).

    PYTHONPATH=$PWD python tools/watch_fanout_bench.py [--watchers 100] [--events 1000] [--rounds 5]
    PYTHONPATH=$PWD python tools/watch_fanout_bench.py --side client
    PYTHONPATH=$PWD python tools/watch_fanout_bench.py --batched-acks [--side client]

One process, no network. Node: a ``WatchHub`` with N watchers, each an AMP sink
(``api.amp_api._AMPWatchSink``) writing to an in-memory transport; the
watchers' backlogs are reset as if every client answered. Client: N pooled
client connections (``protocol.connection._PooledAMP``), each carrying a
``client.watch.Watch`` of the key, each fed the node's WatchEvents box of every
event and answering it. With ``--batched-acks``, as a node and client that
acknowledge with WatchAck: the boxes ask no answer, and each watch sends a
WatchAck every ``ack_every`` events. Prints the best and the median over the rounds of
process CPU per event (all N copies), in microseconds. Run it from two source
trees, alternated, for an A/B.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from leeky_twisted.api import amp_api
from leeky_twisted.api import watch as watches
from leeky_twisted.statemachine.kv import Event

KEY = "coordbench/watched"


def fan_out_us(watchers: int, events: int, rounds: int, batched: bool = False) -> list[float]:
    """Return, per round, the process CPU microseconds per event fanned out."""
    hub = watches.WatchHub(Clock(), 0)
    transports = []
    for _ in range(watchers):
        proto = amp_api.ClientAPIProtocol(max_request_bytes=1 << 20)
        transport = StringTransport()
        proto.makeConnection(transport)
        sink = (
            amp_api._AMPWatchSink(proto, hub, batched)
            if batched
            else amp_api._AMPWatchSink(proto, hub)
        )
        hub.watch(KEY, KEY + "\0", None, sink)
        sink.open()
        transports.append(transport)
    value = "x" * 100
    out = []
    revision = 0
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(events):
            revision += 1
            hub.on_events([Event(revision, "put", KEY, value, 1, revision)])
            for transport in transports:
                transport.clear()
            for watcher in hub.watchers():
                watcher.backlog = 0  # as if each client answered
        out.append((time.process_time() - started) / events * 1e6)
    return out


def client_us(watchers: int, events: int, rounds: int, batched: bool = False) -> list[float]:
    """Return, per round, the process CPU microseconds per event taken on N connections."""
    import json
    from types import SimpleNamespace

    from twisted.protocols import amp

    from leeky_twisted.client.watch import Watch
    from leeky_twisted.protocol.connection import _PooledAMP

    clock = Clock()
    got = [0]

    def taken(batch: list[Event]) -> None:
        got[0] += len(batch)

    conns = []
    for n in range(watchers):
        proto = _PooledAMP(lambda p: None, clock)
        transport = StringTransport()
        proto.makeConnection(transport)
        stub = SimpleNamespace(_clock=clock)
        watch = Watch(stub, KEY, KEY + "\0", False, 1, taken)  # type: ignore[arg-type]
        if batched:  # as after a node's answer with ack_every
            watch._proto, watch._watch_id = proto, n + 1
            watch._ack_every = amp_api.watch_ack_every(watches.DEFAULT_MAX_BACKLOG)
        proto.watches[n + 1] = watch
        conns.append((proto, transport))
    value = "x" * 100
    out = []
    revision = 0
    for _ in range(rounds):
        wire = []  # the node's boxes, built before the clock starts
        for _ in range(events):
            revision += 1
            payload = json.dumps(
                [Event(revision, "put", KEY, value, 1, revision).to_json()], ensure_ascii=False
            ).encode("utf-8")
            ask = {} if batched else {"_ask": b"%x" % revision}
            wire.append(
                [
                    amp.AmpBox(
                        _command=b"WatchEvents",
                        **ask,
                        watch_id=b"%d" % (n + 1),
                        events=payload,
                        next_revision=b"%d" % (revision + 1),
                    ).serialize()
                    for n in range(watchers)
                ]
            )
        started = time.process_time()
        for boxes in wire:
            for (proto, transport), data in zip(conns, boxes, strict=True):
                proto.dataReceived(data)
                transport.clear()
        out.append((time.process_time() - started) / events * 1e6)
    if got[0] != watchers * events * rounds:
        raise SystemExit(f"delivered {got[0]} events, expected {watchers * events * rounds}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="watch_fanout_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--side", choices=("node", "client"), default="node")
    p.add_argument("--batched-acks", action="store_true", help="acknowledge with WatchAck")
    a = p.parse_args(argv)
    if min(a.watchers, a.events, a.rounds) < 1:
        p.error("--watchers, --events and --rounds must be at least 1")
    measure = client_us if a.side == "client" else fan_out_us
    us = sorted(measure(a.watchers, a.events, a.rounds, a.batched_acks))
    print(
        f"{a.watchers} watchers: {min(us):.0f} us per event (best),"
        f" {us[len(us) // 2]:.0f} (median of {a.rounds})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
