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

    def all_see(self, node_id: str, state: MemberState, among: list[GossipCore] | None = None) -> bool:
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
            if any(members.get(nid) is None or members[nid].state is not MemberState.ALIVE for nid in ids):
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
