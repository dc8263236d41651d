"""CPU a node spends fanning one event out to N AMP watchers of one key.

    PYTHONPATH=$PWD python tools/watch_fanout_bench.py [--watchers 100] [--events 1000] [--rounds 5]

One process, no network: a ``WatchHub`` with N watchers, each an AMP sink
(``api.amp_api._AMPWatchSink``) writing to an in-memory transport; the
watchers' backlogs are reset as if every client answered. Prints the best and
the median over the rounds of process CPU per event, in microseconds. Run it
from two source trees, alternated, for an A/B.
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


def fan_out_us(watchers: int, events: int, rounds: int) -> list[float]:
    """Return, per round, the process CPU microseconds per event fanned out."""
    hub = watches.WatchHub(Clock(), 0)
    transports = []
    for _ in range(watchers):
        proto = amp_api.ClientAPIProtocol(max_request_bytes=1 << 20)
        transport = StringTransport()
        proto.makeConnection(transport)
        sink = amp_api._AMPWatchSink(proto, hub)
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="watch_fanout_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    if min(a.watchers, a.events, a.rounds) < 1:
        p.error("--watchers, --events and --rounds must be at least 1")
    us = sorted(fan_out_us(a.watchers, a.events, a.rounds))
    print(
        f"{a.watchers} watchers: {min(us):.0f} us per event (best),"
        f" {us[len(us) // 2]:.0f} (median of {a.rounds})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
