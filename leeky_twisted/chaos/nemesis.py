"""Nemeses: faults injected into a :class:`~leeky_twisted.chaos.netns.NetnsCluster` on a schedule.

Each nemesis has two moves: :meth:`Nemesis.inject` starts one fault and says
what it did; :meth:`Nemesis.heal` ends it. :func:`run_schedule` alternates
quiet spells and faults for a given time, then :func:`heal_everything` removes
every fault there could be (firewall rules, routes, qdiscs, paused or dead
processes), whatever happened before, also on error.

=================  ===========================================================
``partition``      split the nodes into a random minority (half the time with
                   the leader) and majority; no packets cross, either way
``isolate-leader`` cut the current leader off from every other node
``one-way``        the leader (or a random minority) can no longer *send* to
                   the others, but still hears them
``netem``          delay and drop packets on some nodes (``tc netem``; without
                   netem in the kernel, a ``tbf`` slow link plus random loss)
``kill``           SIGKILL a minority (sometimes the leader, sometimes a
                   majority), restart them on their data when the fault ends
``pause``          SIGSTOP the leader or a minority; SIGCONT when it ends
``mixed``          one of the above, chosen at random for each fault
=================  ===========================================================

The hostile nemeses (``forged-gossip``, ``huge-term``, ``conn-flood``,
``slow-client``, and ``hostile`` for one of them at random) attack from a
namespace of their own: see :mod:`leeky_twisted.chaos.hostile`. A nemesis
reports what it saw go wrong through :meth:`Nemesis.problems`.

Clients are never partitioned: rules match only the nodes' own addresses, so
the host's clients keep reaching every node (and see what a minority does).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from leeky_twisted.chaos.netns import ClusterNode, NetnsCluster

__all__ = [
    "NEMESES",
    "Fault",
    "IsolateLeader",
    "KillRestart",
    "Mixed",
    "Nemesis",
    "NetworkDelay",
    "OneWayPartition",
    "Partition",
    "Pause",
    "heal_everything",
    "make_nemesis",
    "run_schedule",
]


@dataclass
class Fault:
    """One fault: which nemesis, what it did, to whom, and when (monotonic seconds)."""

    nemesis: str
    detail: str
    nodes: list[str]
    start: float
    end: float | None = None

    def to_dict(self, origin: float = 0.0) -> dict[str, object]:
        """Return a JSON-able form with times relative to ``origin``."""
        return {
            "nemesis": self.nemesis,
            "detail": self.detail,
            "nodes": self.nodes,
            "start": round(self.start - origin, 3),
            "end": None if self.end is None else round(self.end - origin, 3),
        }


class Nemesis:
    """A kind of fault. Subclasses set ``name`` and implement the two moves."""

    name: ClassVar[str] = "none"

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Start one fault; return a description and the node ids it touched."""
        raise NotImplementedError

    def heal(self, cluster: NetnsCluster) -> None:
        """End the fault started last (harmless when there is none)."""
        raise NotImplementedError

    def stop(self, cluster: NetnsCluster) -> None:
        """End anything of its own still running (an attack process); no checks."""

    def final_check(self, cluster: NetnsCluster) -> None:
        """Check the healed cluster for what this nemesis may have broken."""

    def problems(self) -> list[str]:
        """Return what this nemesis saw go wrong (the runner fails a run that has any)."""
        return []

    def reports(self) -> list[dict[str, object]]:
        """Return what each attack of this nemesis reported (hostile nemeses only)."""
        return []

    def node_args(self) -> list[str]:
        """Return options the nodes must run with for this nemesis (appended last)."""
        return []


def _ids(nodes: Sequence[ClusterNode]) -> list[str]:
    return sorted((n.node_id for n in nodes), key=int)


def _minority(cluster: NetnsCluster, rng: random.Random) -> list[ClusterNode]:
    """Return a random non-empty minority of the nodes."""
    size = rng.randint(1, max(1, (len(cluster.nodes) - 1) // 2))
    return rng.sample(cluster.nodes, size)


def _leader_or_random(cluster: NetnsCluster, rng: random.Random) -> tuple[ClusterNode, bool]:
    leader = cluster.leader()
    if leader is not None:
        return leader, True
    return rng.choice(cluster.nodes), False


def _cut(cluster: NetnsCluster, side: Sequence[ClusterNode], *, both_ways: bool = True) -> None:
    """Drop packets from ``side`` to every other node (and back, if ``both_ways``)."""
    inside = {n.node_id for n in side}
    others = [n for n in cluster.nodes if n.node_id not in inside]
    for a in side:
        for b in others:
            cluster.network.block(a.slot, b.slot)
            if both_ways:
                cluster.network.block(b.slot, a.slot)


class _NetworkNemesis(Nemesis):
    def heal(self, cluster: NetnsCluster) -> None:
        cluster.network.heal_all()


class Partition(_NetworkNemesis):
    """Split the cluster into a random minority and the majority."""

    name = "partition"

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Cut a random minority off from the rest, both ways; half the time the
        minority holds the leader."""
        minority = _minority(cluster, rng)
        leader = cluster.leader() if rng.random() < 0.5 else None
        if leader is not None and leader not in minority:
            minority[0] = leader
        _cut(cluster, minority)
        rest = [n for n in cluster.nodes if n not in minority]
        return f"partition {_ids(minority)} | {_ids(rest)}", _ids(minority)


class IsolateLeader(_NetworkNemesis):
    """Cut the current leader off from every other node."""

    name = "isolate-leader"

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Isolate the leader (a random node when no leader is known)."""
        node, is_leader = _leader_or_random(cluster, rng)
        _cut(cluster, [node])
        what = "leader" if is_leader else "node (no leader known)"
        return f"isolate {what} {node.node_id}", [node.node_id]


class OneWayPartition(_NetworkNemesis):
    """The leader, or a random minority, can hear the others but not reach them."""

    name = "one-way"

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Drop what the chosen side sends to the others; their packets still arrive."""
        if rng.random() < 0.5:
            node, is_leader = _leader_or_random(cluster, rng)
            side, who = [node], ("leader" if is_leader else "node")
        else:
            side, who = _minority(cluster, rng), "minority"
        _cut(cluster, side, both_ways=False)
        return f"one-way: {who} {_ids(side)} cannot send to the others", _ids(side)


class NetworkDelay(_NetworkNemesis):
    """Delay and drop packets on some nodes."""

    name = "netem"

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Slow down and lose packets on a random non-empty subset of nodes."""
        chosen = rng.sample(cluster.nodes, rng.randint(1, len(cluster.nodes)))
        delay = rng.choice([20, 50, 100, 200])
        loss = rng.choice([0.05, 0.1, 0.2, 0.3])
        applied = ""
        for node in chosen:
            applied = cluster.network.set_delay(node.slot, delay, delay // 2, loss)
        return f"{applied} on {_ids(chosen)}", _ids(chosen)


class KillRestart(Nemesis):
    """SIGKILL nodes; restart them on the same data when the fault ends."""

    name = "kill"

    def __init__(self) -> None:
        self._killed: list[ClusterNode] = []

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Kill a minority (with the leader half the time), or now and then a majority."""
        roll = rng.random()
        if roll < 0.15:
            size = rng.randint(len(cluster.nodes) // 2 + 1, len(cluster.nodes))
            victims, what = rng.sample(cluster.nodes, size), "majority"
        elif roll < 0.6:
            node, is_leader = _leader_or_random(cluster, rng)
            victims, what = [node], "leader" if is_leader else "node"
        else:
            victims, what = _minority(cluster, rng), "minority"
        for node in victims:
            cluster.kill(node)
        self._killed = list(victims)
        return f"kill -9 {what} {_ids(victims)}", _ids(victims)

    def heal(self, cluster: NetnsCluster) -> None:
        """Restart the nodes killed last, on their own data."""
        for node in self._killed:
            cluster.start_node(node)
        self._killed = []


class Pause(Nemesis):
    """SIGSTOP nodes; SIGCONT them when the fault ends."""

    name = "pause"

    def __init__(self) -> None:
        self._paused: list[ClusterNode] = []

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Pause the leader (half the time) or a random minority."""
        if rng.random() < 0.5:
            node, is_leader = _leader_or_random(cluster, rng)
            victims, what = [node], "leader" if is_leader else "node"
        else:
            victims, what = _minority(cluster, rng), "minority"
        for node in victims:
            cluster.pause(node)
        self._paused = list(victims)
        return f"SIGSTOP {what} {_ids(victims)}", _ids(victims)

    def heal(self, cluster: NetnsCluster) -> None:
        """Resume the nodes paused last."""
        for node in self._paused:
            cluster.resume(node)
        self._paused = []


class Mixed(Nemesis):
    """Each fault is one of the other nemeses, chosen at random."""

    name = "mixed"

    def __init__(self, choices: Sequence[Nemesis] | None = None) -> None:
        self.choices = list(choices) if choices else [cls() for cls in _SIMPLE]
        self._current: Nemesis | None = None

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Pick a nemesis and inject its fault."""
        self._current = rng.choice(self.choices)
        detail, nodes = self._current.inject(cluster, rng)
        return f"{self._current.name}: {detail}", nodes

    def heal(self, cluster: NetnsCluster) -> None:
        """Heal the fault injected last."""
        if self._current is not None:
            self._current.heal(cluster)
        self._current = None

    def stop(self, cluster: NetnsCluster) -> None:
        """Stop whatever any of the choices still runs."""
        for choice in self.choices:
            choice.stop(cluster)

    def final_check(self, cluster: NetnsCluster) -> None:
        """Run every choice's final check."""
        for choice in self.choices:
            choice.final_check(cluster)

    def problems(self) -> list[str]:
        """Return every choice's problems."""
        return [p for choice in self.choices for p in choice.problems()]

    def reports(self) -> list[dict[str, object]]:
        """Return every choice's attack reports."""
        return [r for choice in self.choices for r in choice.reports()]

    def node_args(self) -> list[str]:
        """Return every choice's node options."""
        return [a for choice in self.choices for a in choice.node_args()]


_SIMPLE: list[type[Nemesis]] = [
    Partition,
    IsolateLeader,
    OneWayPartition,
    NetworkDelay,
    KillRestart,
    Pause,
]
# The hostile nemeses build on the classes above (a late import, not a cycle).
from leeky_twisted.chaos.hostile import HOSTILE, ForgedGossipKeyed, Hostile  # noqa: E402

_ALL: list[type[Nemesis]] = [*_SIMPLE, Mixed, *HOSTILE, ForgedGossipKeyed, Hostile]
NEMESES: dict[str, type[Nemesis]] = {cls.name: cls for cls in _ALL}


def make_nemesis(names: str | Sequence[str]) -> Nemesis:
    """Return the nemesis called ``names`` or, for several names (list or
    comma-separated), a :class:`Mixed` of them. ValueError for an unknown name."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in NEMESES]
    if unknown or not names:
        raise ValueError(f"unknown nemesis {unknown or names}; choose from {sorted(NEMESES)}")
    if len(names) == 1:
        return NEMESES[names[0]]()
    return Mixed([NEMESES[n]() for n in names])


def heal_everything(cluster: NetnsCluster) -> list[str]:
    """Remove every possible fault: network rules, paused and dead nodes. Return errors."""
    errors = []
    try:
        cluster.network.heal_all()
    except Exception as e:
        errors.append(f"network: {e}")
    for node in cluster.nodes:
        try:
            if node.paused:
                cluster.resume(node)
            if not node.alive():
                cluster.start_node(node)
        except Exception as e:
            errors.append(f"node {node.node_id}: {e}")
    return errors


@dataclass
class Schedule:
    """How long faults and the quiet spells between them last (uniform ranges, seconds)."""

    fault: tuple[float, float] = (3.0, 8.0)
    quiet: tuple[float, float] = (2.0, 4.0)
    faults: list[Fault] = field(default_factory=list)


def run_schedule(
    nemesis: Nemesis,
    cluster: NetnsCluster,
    *,
    seconds: float,
    rng: random.Random,
    stop: threading.Event,
    schedule: Schedule | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_event: Callable[[str], None] | None = None,
) -> list[Fault]:
    """Alternate quiet spells and faults for ``seconds``, then heal everything.

    Return the faults injected. A fault never outlasts the deadline, and
    :func:`heal_everything` runs at the end even when a move raised.
    """
    schedule = schedule or Schedule()
    faults = schedule.faults
    deadline = clock() + seconds
    margin = min(1.0, seconds / 10)  # no fault starts this close to the end
    say = on_event or (lambda text: None)
    try:
        while not stop.is_set():
            stop.wait(rng.uniform(*schedule.quiet))
            if stop.is_set() or clock() >= deadline - margin:
                break
            detail, nodes = nemesis.inject(cluster, rng)
            fault = Fault(nemesis.name, detail, nodes, clock())
            faults.append(fault)
            say(f"fault: {detail}")
            stop.wait(min(rng.uniform(*schedule.fault), max(0.0, deadline - clock())))
            nemesis.heal(cluster)
            fault.end = clock()
            say(f"healed: {detail}")
        stop.wait(max(0.0, deadline - clock()))
    finally:
        for fault in faults:
            if fault.end is None:
                fault.end = clock()
        nemesis.stop(cluster)
        errors = heal_everything(cluster)
        say("healed everything" + (f" (errors: {errors})" if errors else ""))
    return faults
