"""CPU and timers per AppendEntries a follower handles, node side, A/B between source trees.

A follower ``RaftNode`` on in-memory stores and the real reactor (whose loop
is not run: each append is one read, then ``runUntilCurrent`` stands for the
next turn) handles one-entry appends. A stub transport reports the end of
each read as the peer inbox does; the node uses whichever of its methods the
tree knows. Prints CPU per append and the ``callLater`` calls per append.
Each tree runs in its own process, alternated.

    python tools/follower_turn_bench.py --tree main=/work/main --tree new=. [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r"""
import random, sys, time
sys.path.insert(0, sys.argv[1])
from twisted.internet import reactor
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import AppendEntries, Entry, HardState, NodeId
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.server.node import NodeSettings, RaftNode
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore


class Transport:
    reading = False

    def send(self, m): pass
    def send_batch(self, ms): pass
    def set_receiver(self, r): self.receiver = r
    def set_after_read(self, a): self.after_read = a
    def defer_to_end_of_read(self): return self.reading
    def close(self): pass

    def read(self, m):
        self.reading = True
        self.receiver(m)
        self.reading = False
        self.after_read()


log = MemoryLogStore()
log.append(bootstrap_entries([(NodeId(v), b"") for v in "123"]))
stable = MemoryStableStore()
stable.save(HardState(1, None, 3))
t = Transport()
node = RaftNode(
    reactor, CoreConfig(NodeId("1"), election_ticks=10**9, heartbeat_ticks=2), log, stable,
    MemorySnapshotStore(), t, KeyValueStateMachine(), NodeSettings(tick_interval=1000),
    rng=random.Random(1),
)
reactor.runUntilCurrent()
at = [node.core.log.last_index()]


def one():
    i = at[0]
    entry = Entry(i + 1, 2, data=b"x" * 100)
    t.read(AppendEntries(NodeId("2"), NodeId("1"), 2, i, 2 if i > 3 else 1, (entry,), i))
    at[0] = i + 1
    reactor.runUntilCurrent()


for _ in range(2000):
    one()
made = [0]
call_later = reactor.callLater


def counting(*a, **k):
    made[0] += 1
    return call_later(*a, **k)


reactor.callLater = counting
for _ in range(1000):
    one()
reactor.callLater = call_later
n = int(sys.argv[2])
t0 = time.process_time()
for _ in range(n):
    one()
print(f"{(time.process_time() - t0) / n * 1e6:.2f} {made[0] / 1000:.2f}")
"""


def main() -> None:
    """Run each tree's follower in turn, ``--rounds`` times; print per-round and best figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=SOURCE_ROOT")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appends", type=int, default=20_000)
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for name, root in trees:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, root, str(args.appends)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            us, timers = float(out[0]), float(out[1])
            best[name] = min(best.get(name, us), us)
            print(f"round {r} {name:8} {us:6.2f} us/append  {timers:.2f} callLater/append")
    for name, us in best.items():
        print(f"best {name:8} {us:6.2f} us/append")


if __name__ == "__main__":
    main()
