"""A simulated datagram network for gossip cores: seeded, lossy, no real time."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership.gossip_core import Address, GossipConfig, GossipCore, MemberState

CLUSTER = "sim"


def address_of(i: int) -> Address:
    """Return the gossip address of simulated node ``i``."""
    return (f"10.0.{i // 250}.{i % 250 + 1}", 7946)


class SimNetwork:
    """Gossip cores joined by a network that loses, delays and cuts datagrams.

    One :meth:`step` is one tick: every live core ticks, then every datagram
    due is delivered (replies sent with no delay arrive in the same step).
    """

    def __init__(self, seed: int, loss: float = 0.0, max_delay: int = 0, **config: Any) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.max_delay = max_delay
        self.config = config
        self.nodes: dict[Address, GossipCore] = {}
        self.down: set[Address] = set()
        self.cuts: set[frozenset[Address]] = set()
        self.now = 0
        self.sent = 0
        self.dropped = 0
        self._queue: list[tuple[int, int, Address, Address, bytes]] = []
        self._order = 0

    def add(self, i: int, metadata: dict[str, str] | None = None, **config: Any) -> GossipCore:
        """Create node ``i`` (id ``n<i>``) and return its core."""
        settings = {**self.config, **config}
        cfg = GossipConfig(
            NodeId(f"n{i}"),
            address_of(i),
            settings.pop("cluster_id", CLUSTER),
            metadata if metadata is not None else {"peer": f"{address_of(i)[0]}:7000"},
            **settings,
        )
        core = GossipCore(cfg, random.Random(self.rng.getrandbits(64)))
        self.nodes[cfg.address] = core
        return core

    def core(self, i: int) -> GossipCore:
        """Return node ``i``'s core."""
        return self.nodes[address_of(i)]

    def step(self) -> None:
        """Advance one tick."""
        self.now += 1
        for addr, core in self.nodes.items():
            if addr not in self.down:
                core.tick()
                self._collect(addr, core)
        self._deliver()

    def run(self, ticks: int) -> None:
        """Advance ``ticks`` ticks."""
        for _ in range(ticks):
            self.step()

    def run_until(self, done: Callable[[], bool], limit: int) -> int | None:
        """Step until ``done()``; return the ticks taken, or None after ``limit``."""
        for n in range(limit + 1):
            if done():
                return n
            self.step()
        return None

    def flush(self) -> None:
        """Deliver what cores queued outside a step (after join or leave)."""
        for addr, core in self.nodes.items():
            if addr not in self.down:
                self._collect(addr, core)
        self._deliver()

    def crash(self, i: int) -> None:
        """Stop node ``i``: it neither ticks nor receives, and its queue is lost."""
        self.down.add(address_of(i))
        self.core(i).take_outbox()

    def restart(self, i: int, **config: Any) -> GossipCore:
        """Replace node ``i`` by a fresh core (same id and address, no memory) and bring it up."""
        self.down.discard(address_of(i))
        return self.add(i, **config)

    def cut(self, a: int, b: int) -> None:
        """Drop every datagram between nodes ``a`` and ``b``."""
        self.cuts.add(frozenset((address_of(a), address_of(b))))

    def heal(self) -> None:
        """Remove every cut."""
        self.cuts.clear()

    def _collect(self, src: Address, core: GossipCore) -> None:
        for dst, data in core.take_outbox():
            self.sent += 1
            if self.loss and self.rng.random() < self.loss:
                self.dropped += 1
                continue
            delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
            self._order += 1
            heapq.heappush(self._queue, (self.now + delay, self._order, src, dst, data))

    def _deliver(self) -> None:
        while self._queue and self._queue[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            if dst in self.down or dst not in self.nodes or frozenset((src, dst)) in self.cuts:
                continue
            core = self.nodes[dst]
            core.receive(src, data)
            self._collect(dst, core)

    # ---------------------------------------------------------------- views

    def live(self) -> list[GossipCore]:
        """Return the cores that are up."""
        return [c for a, c in self.nodes.items() if a not in self.down]

    def all_see(
        self, node_id: str, state: MemberState, among: list[GossipCore] | None = None
    ) -> bool:
        """Return True when every live core (but ``node_id`` itself) holds it in ``state``."""
        for core in among if among is not None else self.live():
            if core.node_id == node_id:
                continue
            m = core.members().get(NodeId(node_id))
            if m is None or m.state is not state:
                return False
        return True

    def converged(self) -> bool:
        """Return True when every live core sees every live core alive and has nothing to gossip."""
        ids = {c.node_id for c in self.live()}
        for core in self.live():
            members = core.members()
            if any(
                members.get(nid) is None or members[nid].state is not MemberState.ALIVE
                for nid in ids
            ):
                return False
            if core.pending_broadcasts():
                return False
        return True


def build_cluster(n: int, seed: int, **kwargs: Any) -> SimNetwork:
    """Return a network of ``n`` nodes that joined through node 0 and converged."""
    net = SimNetwork(seed, **kwargs)
    net.add(0)
    for i in range(1, n):
        net.add(i).join([address_of(0)])
    net.flush()
    took = net.run_until(net.converged, 20000)
    assert took is not None, "cluster did not converge"
    return net


# -------------------------------------------------------------------- measurements


def periods(net: SimNetwork, ticks: int) -> float:
    """Return ``ticks`` in protocol periods of this network's cores."""
    first = next(iter(net.nodes.values()))
    return ticks / first.config.probe_period_ticks


def join_dissemination(n: int, seed: int, loss: float = 0.0) -> float:
    """Return the periods until all of ``n`` members see a newcomer alive."""
    net = build_cluster(n, seed)
    net.loss = loss
    newcomer = net.add(n)
    newcomer.join([address_of(net.rng.randrange(n))])
    net.flush()
    took = net.run_until(lambda: net.all_see(f"n{n}", MemberState.ALIVE), 5000)
    assert took is not None
    return periods(net, took)


def failure_detection(n: int, seed: int, loss: float = 0.0) -> tuple[float, float]:
    """Crash a member; return periods until the first suspicion and until all see it DEAD."""
    net = build_cluster(n, seed)
    net.loss = loss
    victim = f"n{n - 1}"
    net.crash(n - 1)
    first = net.run_until(
        lambda: any(c.members()[NodeId(victim)].state is not MemberState.ALIVE for c in net.live()),
        5000,
    )
    rest = net.run_until(lambda: net.all_see(victim, MemberState.DEAD), 5000)
    assert first is not None and rest is not None
    return periods(net, first), periods(net, first + rest)


def false_positives(n: int, loss: float, rounds: int, seed: int) -> dict[str, float]:
    """Run ``rounds`` periods of a healthy cluster under ``loss``; count wrong verdicts.

    Nobody fails, so every suspicion and every DEAD verdict is false.
    ``dead_per_probe`` is the number of times some member declared a live member
    dead, divided by the number of probes sent.
    """
    net = build_cluster(n, seed)
    net.loss = loss
    before = {c.node_id: dict(c.counters) for c in net.live()}
    ever_dead: set[NodeId] = set()

    def watch(member: Any) -> None:
        if member.state is MemberState.DEAD:
            ever_dead.add(member.node_id)

    for core in net.live():
        core.subscribe(watch)
    net.run(rounds * next(iter(net.nodes.values())).config.probe_period_ticks)

    def total(name: str) -> int:
        return sum(c.counters[name] - before[c.node_id][name] for c in net.live())

    probes = total("probes")
    return {
        "probes": probes,
        "probe_timeouts": total("probe_timeouts"),
        "suspicions": total("suspicions"),
        "dead_verdicts": total("deaths"),
        "dead_per_probe": total("deaths") / probes,
        "members_ever_declared_dead": len(ever_dead),
        "refutations": total("refutations"),
    }


def main() -> None:
    """Print the gossip figures (``python tests/membership/gossip_sim.py``)."""
    seeds = range(10)
    print("periods until every member knows of a join (mean / max over 10 seeds)")
    for loss in (0.0, 0.1):
        for n in (4, 8, 16, 32):
            runs = [join_dissemination(n, s, loss) for s in seeds]
            print(f"  loss {loss:.0%} N={n:2}: {sum(runs) / len(runs):.2f} / {max(runs):.1f}")
    print("periods to detect a crashed member (first suspicion; all DEAD), mean over 10 seeds")
    for n in (8, 16, 32):
        runs = [failure_detection(n, s) for s in seeds]
        first = sum(r[0] for r in runs) / len(runs)
        dead = sum(r[1] for r in runs) / len(runs)
        print(f"  N={n:2}: {first:.2f}; {dead:.2f} (max {max(r[1] for r in runs):.1f})")
    net = build_cluster(16, seed=1)
    before = sum(c.counters["bytes_sent"] for c in net.live())
    net.run(1000)
    sent = sum(c.counters["bytes_sent"] for c in net.live()) - before
    print(f"steady traffic, N=16, no loss: {sent / 16 / 100:.0f} bytes per member per period")
    print("false positives in a healthy cluster of 16 over 500 periods")
    for loss in (0.1, 0.3):
        fp = false_positives(16, loss, 500, seed=1)
        print(f"  loss {loss:.0%}: {fp}")


if __name__ == "__main__":
    main()
