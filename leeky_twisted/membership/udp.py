"""Run a gossip core over UDP on a Twisted reactor.

:class:`GossipProtocol` feeds received datagrams to the core and writes what
the core queues; :class:`GossipService` listens, ticks the core with a
``LoopingCall`` on the injected reactor, and stops both. Every failure on
input or output is caught, logged and counted: a bad datagram never stops the
node, and the core never sees the network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership.gossip_core import Address, GossipConfig, GossipCore

log = Logger()

ADAPTER_COUNTERS = ("receive_errors", "send_errors", "resolve_errors", "tick_errors", "unsent")


class GossipProtocol(DatagramProtocol):
    """Carry datagrams between a UDP port and a :class:`GossipCore`.

    Host names in the core's destinations (seeds given as names, advertised
    names) are resolved with ``reactor.resolve`` and cached for
    ``resolve_ttl`` seconds; datagrams wait for their name, and are dropped and
    counted if it does not resolve.
    """

    def __init__(self, reactor: Any, core: GossipCore, resolve_ttl: float = 30.0) -> None:
        self.reactor = reactor
        self.core = core
        self.resolve_ttl = resolve_ttl
        self.counters: dict[str, int] = dict.fromkeys(ADAPTER_COUNTERS, 0)
        self._names: dict[str, tuple[str, float]] = {}  # name -> (ip, expiry)
        self._waiting: dict[str, list[tuple[bytes, int]]] = {}  # name -> datagrams

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Hand ``datagram`` to the core, then send whatever it answers."""
        try:
            self.core.receive((str(addr[0]), int(addr[1])), datagram)
        except Exception:
            self.counters["receive_errors"] += 1
            log.failure("gossip core failed on a datagram from {addr}", addr=addr)
        self.flush()

    def flush(self) -> None:
        """Write every datagram the core has queued (dropped and counted when not listening)."""
        for address, data in self.core.take_outbox():
            if self.transport is None:
                self.counters["unsent"] += 1
                continue
            self._write(address, data)

    def _write(self, address: Address, data: bytes) -> None:
        host, port = address
        if isIPAddress(host) or isIPv6Address(host):
            self._write_now(data, (host, port))
            return
        cached = self._names.get(host)
        if cached is not None and cached[1] > self.reactor.seconds():
            self._write_now(data, (cached[0], port))
            return
        waiting = self._waiting.get(host)
        if waiting is not None:
            waiting.append((data, port))
            return
        self._waiting[host] = [(data, port)]
        try:
            d = self.reactor.resolve(host)
        except Exception:
            self._resolved_failed(host)
            return
        d.addCallbacks(
            lambda ip: self._resolved(host, str(ip)), lambda _f: self._resolved_failed(host)
        )

    def _resolved(self, host: str, ip: str) -> None:
        self._names[host] = (ip, self.reactor.seconds() + self.resolve_ttl)
        for data, port in self._waiting.pop(host, []):
            if self.transport is None:
                self.counters["unsent"] += 1
            else:
                self._write_now(data, (ip, port))

    def _resolved_failed(self, host: str) -> None:
        dropped = self._waiting.pop(host, [])
        self.counters["resolve_errors"] += 1
        self.counters["unsent"] += len(dropped)
        log.warn("cannot resolve gossip host {host}", host=host)

    def _write_now(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            self.transport.write(data, address)
        except Exception as exc:
            self.counters["send_errors"] += 1
            log.debug("gossip datagram to {address} failed: {exc!r}", address=address, exc=exc)


class GossipService(service.Service):
    """Listen for gossip on UDP ``port`` and tick ``core`` every ``tick_interval`` seconds.

    A core configured to advertise port 0 advertises the port actually bound.

    The tick is one call per interval even when the reactor ran late: a busy
    node stretches its own gossip time rather than timing out acks that are
    waiting to be read.
    """

    def __init__(
        self,
        reactor: Any,
        core: GossipCore,
        port: int,
        interface: str = "",
        tick_interval: float = 0.1,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError("tick_interval must be positive")
        self.reactor = reactor
        self.core = core
        self.port = port
        self.interface = interface
        self.tick_interval = tick_interval
        self.protocol = GossipProtocol(reactor, core)
        self.listening: Any = None
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        """Listen, start ticking, and send anything queued before (joins)."""
        super().startService()
        self.listening = self.reactor.listenUDP(self.port, self.protocol, interface=self.interface)
        host, advertised = self.core.config.address
        if advertised == 0:  # "whatever port the OS picks": advertise the one it picked
            self.core.set_address((host, int(self.listening.getHost().port)))
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(self.tick_interval, now=False)
        self.protocol.flush()

    def stopService(self) -> Any:
        """Stop ticking and listening; return a Deferred (or None) for the port."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        listening, self.listening = self.listening, None
        if listening is not None:
            return listening.stopListening()
        return None

    def tick(self) -> None:
        """Advance the core by one tick and send what it queued."""
        try:
            self.core.tick()
        except Exception:
            self.protocol.counters["tick_errors"] += 1
            log.failure("gossip core failed on tick")
        self.protocol.flush()

    def join(self, seeds: Iterable[Address]) -> None:
        """Join the cluster through ``seeds`` (host, port); names are resolved."""
        self.core.join(seeds)
        if self.running:
            self.protocol.flush()

    def leave(self) -> None:
        """Announce a graceful departure now (call before stopping to decommission)."""
        self.core.leave()
        if self.running:
            self.protocol.flush()

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        """Advertise new metadata, e.g. once a port chosen by the OS is known."""
        self.core.set_metadata(metadata)
        if self.running:
            self.protocol.flush()

    def counters(self) -> dict[str, int]:
        """Return the core's and the adapter's counters together."""
        return {**self.core.counters, **self.protocol.counters}

    def bound_port(self) -> int | None:
        """Return the UDP port actually bound (useful with port 0), or None when stopped."""
        if self.listening is None:
            return None
        return int(self.listening.getHost().port)


def make_gossip_service(
    reactor: Any,
    node_id: str,
    advertise: Address,
    cluster_id: str,
    metadata: Mapping[str, str],
    port: int | None = None,
    interface: str = "",
    key: bytes | None = None,
    tick_interval: float = 0.1,
    rng: random.Random | None = None,
    **knobs: Any,
) -> GossipService:
    """Build a core and its service in one call.

    ``advertise`` is the (host, port) other members send to; the service
    listens on ``port`` (default: the advertised port) at ``interface``.
    ``knobs`` are the timing fields of :class:`GossipConfig`, in ticks.
    """
    config = GossipConfig(NodeId(node_id), advertise, cluster_id, dict(metadata), key=key, **knobs)

    def core_log(line: str) -> None:
        log.debug("gossip: {line}", line=line)

    core = GossipCore(config, rng or random.Random(), logger=core_log)
    listen = advertise[1] if port is None else port
    return GossipService(reactor, core, listen, interface, tick_interval)
