"""Linux network namespaces for fault injection: one bridge, one namespace per node.

:class:`NetnsNetwork` builds, as root::

    host namespace                 hub namespace           node namespaces
    <prefix>h 10.99.X.254/24 ──veth── vh ─┐
                                          br0 ── v1 ──veth── eth0 10.99.X.1/24  (<prefix>-n1)
                                              ── v2 ──veth── eth0 10.99.X.2/24  (<prefix>-n2)
                                              ...

The bridge lives in a namespace of its own, so the host's firewall and bridge
settings never see the traffic; the only thing added to the host namespace is
one veth with an address in the test's private /24, through which the test's
clients reach the nodes. Every name carries a random prefix, and
:meth:`NetnsNetwork.delete` removes everything :meth:`NetnsNetwork.create`
made, also after a partial failure.

Faults are applied *inside* the node namespaces, so they can never touch the
host's own traffic: partitions with ``iptables`` (INPUT rules on the
receiving side; ``ip route`` blackholes on the sending side where iptables is
missing), loss with iptables' ``statistic`` match, delay with ``tc netem``
where the kernel has it, else a slow link with ``tc tbf``.

:class:`NetnsCluster` runs ``twistd -n leekyraft`` in each node namespace
through ``ip netns exec`` (which execs in place, so the process id is the
node's own) and can kill, pause, resume and restart nodes by process id.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leeky_twisted.ops import localcluster
from leeky_twisted.ops.localcluster import RpcError, twistd_path
from leeky_twisted.security.clusterkey import (
    DEFAULT_CLUSTER_ID,
    KEY_FILE_NAME,
    cluster_id_from_key,
    create_key_file,
    read_key_file,
)

__all__ = [
    "CLIENT_PORT",
    "GOSSIP_PORT",
    "HTTP_PORT",
    "PEER_PORT",
    "NetnsCluster",
    "NetnsError",
    "NetnsNetwork",
    "NodeSlot",
    "netns_available",
    "parse_metrics",
]

PEER_PORT = 7000  #: every node's Raft port, on its own address
CLIENT_PORT = 7001  #: every node's AMP client port
HTTP_PORT = 7002  #: every node's JSON-RPC port
GOSSIP_PORT = 7003  #: every node's gossip (UDP) port
_HOST_OCTET = 254  #: the host end's last octet
_ATTACKER_OCTET = 200  #: the attacker namespace's last octet (see NetnsNetwork.attacker)


class NetnsError(RuntimeError):
    """A namespace, link or fault could not be set up."""


def _run(argv: Sequence[str], check: bool = True, timeout: float = 20.0) -> str:
    """Run a short command; return its stdout. NetnsError when it fails and ``check``."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise NetnsError(f"{' '.join(argv)}: {e}") from None
        return ""
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def netns_available() -> str | None:
    """Return None when this process can build namespaces, else the reason it cannot."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    name = f"lcxprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", name])
    except NetnsError as e:
        return f"cannot create a network namespace: {e}"
    finally:
        _run(["ip", "netns", "del", name], check=False)
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Return the IPv4 networks the host namespace already routes or holds."""
    nets = []
    for line in _run(["ip", "-4", "route", "show", "table", "all"], check=False).splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("default", "broadcast", "local", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1] if len(line.split()) > 1 else ""
        try:
            nets.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            continue
    return nets


def _pick_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """Pick a free 10.99.X.0/24 that no host route touches."""
    used = _used_networks()
    for _ in range(64):
        net = ipaddress.IPv4Network(f"10.99.{rng.randrange(1, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise NetnsError("no free 10.99.X.0/24 subnet found")


@dataclass(frozen=True)
class NodeSlot:
    """One node's namespace and address (index counts from 1)."""

    index: int
    namespace: str
    address: str


class NetnsNetwork:
    """A bridge in its own namespace, ``nodes`` node namespaces on it, and a host link.

    :param subnet: a private IPv4 /24 (``"10.99.0.0/24"``); by default a free
        10.99.X.0/24 is picked.
    :param prefix: names start with it; random by default (at most 9 characters,
        since a Linux interface name has at most 15).
    """

    def __init__(
        self,
        nodes: int,
        *,
        subnet: str | None = None,
        prefix: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= nodes < _ATTACKER_OCTET:
            raise ValueError(f"nodes must be between 1 and {_ATTACKER_OCTET - 1}")
        rng = rng or random.Random()
        self.prefix = prefix or f"lcx{rng.getrandbits(24):06x}"
        if len(self.prefix) > 9 or not self.prefix.isalnum():
            raise ValueError("prefix must be at most 9 letters or digits")
        net = ipaddress.IPv4Network(subnet) if subnet else _pick_subnet(rng)
        if net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"subnet must be a private /24, not {net}")
        self.subnet = net
        base = str(net.network_address).rsplit(".", 1)[0]
        self.hub = f"{self.prefix}-hub"
        self.host_link = f"{self.prefix}h"
        self.host_address = f"{base}.{_HOST_OCTET}"
        self.slots = [
            NodeSlot(i, f"{self.prefix}-n{i}", f"{base}.{i}") for i in range(1, nodes + 1)
        ]
        self.attacker_slot = NodeSlot(0, f"{self.prefix}-x", f"{base}.{_ATTACKER_OCTET}")
        self._attacker_made = False
        self._namespaces: list[str] = []
        self._host_link_made = False
        self.iptables = shutil.which("iptables") is not None
        self.netem: bool | None = None  # probed by create()

    # ------------------------------------------------------------ lifecycle

    def create(self) -> None:
        """Build the hub, the bridge, each node namespace and the host link.

        On failure, whatever was made is deleted before the error propagates.
        """
        try:
            self._add_namespace(self.hub)
            self._ip(self.hub, "link", "add", "br0", "type", "bridge")
            self._ip(self.hub, "link", "set", "br0", "up")
            self._ip(self.hub, "link", "set", "lo", "up")
            for slot in self.slots:
                self._add_namespace(slot.namespace)
                port = f"v{slot.index}"
                self._ip(
                    self.hub, "link", "add", port, "type", "veth",
                    "peer", "name", "eth0", "netns", slot.namespace,
                )  # fmt: skip
                self._ip(self.hub, "link", "set", port, "master", "br0", "up")
                self._ip(slot.namespace, "addr", "add", f"{slot.address}/24", "dev", "eth0")
                self._ip(slot.namespace, "link", "set", "eth0", "up")
                self._ip(slot.namespace, "link", "set", "lo", "up")
            _run(
                ["ip", "link", "add", self.host_link, "type", "veth",
                 "peer", "name", "vh", "netns", self.hub]
            )  # fmt: skip
            self._host_link_made = True
            self._ip(self.hub, "link", "set", "vh", "master", "br0", "up")
            _run(["ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_link])
            _run(["ip", "link", "set", self.host_link, "up"])
            self.iptables = self.iptables and self._iptables_works()
            self.netem = self._netem_works()
        except BaseException:
            self.delete()
            raise

    def delete(self) -> list[str]:
        """Delete the host link and every namespace made; return the errors (best effort).

        Stop the processes inside first: a namespace lives on while a process uses it.
        """
        errors = []
        if self._host_link_made:
            try:
                _run(["ip", "link", "del", self.host_link])
                self._host_link_made = False
            except NetnsError as e:
                errors.append(str(e))
        for name in reversed(self._namespaces):
            try:
                _run(["ip", "netns", "del", name])
            except NetnsError as e:
                errors.append(str(e))
        self._namespaces = []
        self._attacker_made = False
        return errors

    def __enter__(self) -> NetnsNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._namespaces.append(name)

    @staticmethod
    def _ip(namespace: str, *args: str) -> str:
        return _run(["ip", "-n", namespace, *args])

    def _iptables_works(self) -> bool:
        ns = self.slots[0].namespace
        return bool(_run(["ip", "netns", "exec", ns, "iptables", "-S", "INPUT"], check=False))

    def _netem_works(self) -> bool:
        ns = self.slots[0].namespace
        tc = ["ip", "netns", "exec", ns, "tc", "qdisc"]
        try:
            _run([*tc, "add", "dev", "eth0", "root", "netem", "delay", "1ms"])
        except NetnsError:
            return False
        _run([*tc, "del", "dev", "eth0", "root"], check=False)
        return True

    def attacker(self) -> NodeSlot:
        """Return the attacker's namespace on the bridge, made on first use.

        A hostile nemesis runs its processes there: an address of its own on
        the nodes' network, never one of the nodes', and never the host's
        (whose clients must not share the attacker's per-address caps).
        :meth:`delete` removes it with the rest.
        """
        slot = self.attacker_slot
        if not self._attacker_made:
            self._add_namespace(slot.namespace)
            self._ip(
                self.hub, "link", "add", "vx", "type", "veth",
                "peer", "name", "eth0", "netns", slot.namespace,
            )  # fmt: skip
            self._ip(self.hub, "link", "set", "vx", "master", "br0", "up")
            self._ip(slot.namespace, "addr", "add", f"{slot.address}/24", "dev", "eth0")
            self._ip(slot.namespace, "link", "set", "eth0", "up")
            self._ip(slot.namespace, "link", "set", "lo", "up")
            self._attacker_made = True
        return slot

    # ------------------------------------------------------------- commands

    def exec_argv(self, slot: NodeSlot, argv: Sequence[str]) -> list[str]:
        """Return ``argv`` wrapped to run inside ``slot``'s namespace."""
        return ["ip", "netns", "exec", slot.namespace, *argv]

    def run_in(self, slot: NodeSlot, argv: Sequence[str], check: bool = True) -> str:
        """Run a short command inside ``slot``'s namespace; return its stdout."""
        return _run(self.exec_argv(slot, argv), check=check)

    # ---------------------------------------------------------------- faults

    def block(self, src: NodeSlot, dst: NodeSlot) -> None:
        """Drop every packet from ``src`` to ``dst`` (one direction only)."""
        if src == dst:
            return
        if self.iptables:
            self.run_in(dst, ["iptables", "-I", "INPUT", "-s", src.address, "-j", "DROP"])
        else:
            self.run_in(src, ["ip", "route", "replace", "blackhole", f"{dst.address}/32"])

    def set_loss(self, slot: NodeSlot, probability: float) -> bool:
        """Drop incoming packets at random with ``probability``; False when unsupported."""
        if not self.iptables:
            return False
        rule = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.3f}"]
        self.run_in(slot, ["iptables", "-I", "INPUT", *rule, "-j", "DROP"])
        return True

    def set_delay(self, slot: NodeSlot, delay_ms: int, jitter_ms: int, loss: float) -> str:
        """Delay (and lose) the node's outgoing packets; return what was applied.

        With netem: ``delay D J loss L%``. Without: a slow link (``tbf``, whose
        queue adds delay under load) plus random loss through iptables.
        """
        tc = ["tc", "qdisc", "replace", "dev", "eth0", "root"]
        if self.netem:
            self.run_in(
                slot,
                [*tc, "netem", "delay", f"{delay_ms}ms", f"{jitter_ms}ms",
                 "loss", f"{loss * 100:.1f}%"],
            )  # fmt: skip
            return f"netem delay {delay_ms}ms±{jitter_ms}ms loss {loss:.0%}"
        self.run_in(slot, [*tc, "tbf", "rate", "512kbit", "burst", "8kb", "latency", "300ms"])
        lossy = self.set_loss(slot, loss)
        return "tbf 512kbit (no netem in this kernel)" + (f" + loss {loss:.0%}" if lossy else "")

    def heal(self, slot: NodeSlot) -> None:
        """Remove every fault from ``slot``'s namespace (firewall, routes, qdisc)."""
        if self.iptables:
            self.run_in(slot, ["iptables", "-F", "INPUT"], check=False)
        for other in self.slots:
            self.run_in(
                slot, ["ip", "route", "del", "blackhole", f"{other.address}/32"], check=False
            )
        self.run_in(slot, ["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

    def heal_all(self) -> None:
        """Remove every fault from every node namespace."""
        for slot in self.slots:
            self.heal(slot)


# --------------------------------------------------------------------- cluster


def jsonrpc(host: str, port: int, method: str, *params: Any, timeout: float = 2.0) -> Any:
    """Call one JSON-RPC 2.0 method on ``host`` (blocking); RpcError on an error answer."""
    return localcluster.jsonrpc(port, method, *params, timeout=timeout, host=host)


def parse_metrics(text: str) -> dict[str, float]:
    """Return the samples of a Prometheus text page: ``name{labels}`` -> value."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


@dataclass
class ClusterNode:
    """One node of a :class:`NetnsCluster`: its slot, folder, process and history."""

    node_id: str
    slot: NodeSlot
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    kills: int = 0
    killed: bool = False  #: the process ended by our SIGKILL
    deaths: list[int] = field(default_factory=list)  #: exit codes of unexpected ends

    @property
    def address(self) -> str:
        """Return the node's address on the bridge."""
        return self.slot.address

    @property
    def log_path(self) -> Path:
        """Return the node's log file."""
        return self.folder / "node.log"

    def alive(self) -> bool:
        """Return True while the process runs (paused counts as running)."""
        return self.proc is not None and self.proc.poll() is None


class NetnsCluster:
    """``twistd -n leekyraft`` nodes, one per namespace of ``network``, data under ``root``.

    Every process is tracked by its id; :meth:`stop` ends them all (SIGCONT,
    SIGTERM, then SIGKILL). Nothing is ever signalled by name.

    Like a real cluster, it runs with a cluster key (``root/cluster.key``, the
    same file for every node: the peer Hello proves it, gossip is signed with
    it, the cluster id derives from it) and with gossip and the autopilot on
    (every node joins the others' gossip ports). ``key=False`` runs without a
    key, and then with ``--insecure``; ``gossip=False`` without gossip.
    """

    def __init__(
        self,
        network: NetnsNetwork,
        root: Path,
        extra_args: Sequence[str] = (),
        *,
        key: bool = True,
        gossip: bool = True,
    ) -> None:
        self.network = network
        self.root = Path(root)
        self.extra_args = list(extra_args)
        self.gossip = gossip
        self.nodes = [
            ClusterNode(str(slot.index), slot, self.root / f"node{slot.index}")
            for slot in network.slots
        ]
        self.key_path: Path | None = None
        self.key: bytes | None = None
        if key:
            self.root.mkdir(parents=True, exist_ok=True)
            self.key_path = self.root / KEY_FILE_NAME
            self.key = (
                read_key_file(str(self.key_path))
                if self.key_path.exists()
                else create_key_file(str(self.key_path))
            )
        self._lock = threading.Lock()

    @property
    def cluster_id(self) -> str:
        """Return the cluster id the nodes run with (derived from the key when there is one)."""
        return cluster_id_from_key(self.key) if self.key is not None else DEFAULT_CLUSTER_ID

    def peers_arg(self) -> str:
        """Return the --peers value: every node's bridge address and Raft port."""
        return ",".join(f"{n.node_id}={n.address}:{PEER_PORT}" for n in self.nodes)

    def argv(self, node: ClusterNode) -> list[str]:
        """Return the node's command line (inside its namespace)."""
        twistd = [
            twistd_path(), "-n", "--pidfile=", "leekyraft",
            "--id", node.node_id, "--peers", self.peers_arg(),
            "--data-dir", str(node.folder / "data"),
            "--client-port", str(CLIENT_PORT), "--http-port", str(HTTP_PORT),
        ]  # fmt: skip
        if self.key_path is not None:
            twistd += ["--gossip-key-file", str(self.key_path.resolve())]
        else:  # bridge addresses are not loopback: a keyless node needs --insecure
            twistd += ["--insecure"]
        if self.gossip:
            others = [f"{n.address}:{GOSSIP_PORT}" for n in self.nodes if n is not node]
            twistd += [
                "--address",
                f"{node.address}:{PEER_PORT}",
                "--gossip-port",
                str(GOSSIP_PORT),
            ]
            twistd += ["--join", ",".join(others)] if others else []
        twistd += self.extra_args
        return self.network.exec_argv(node.slot, twistd)

    def start(self) -> None:
        """Start every node that is not running."""
        for node in self.nodes:
            if not node.alive():
                self.start_node(node)

    def start_node(self, node: ClusterNode) -> None:
        """Start (or restart, on the same data) one node's process."""
        with self._lock:
            if node.alive():
                return
            if node.proc is not None and node.proc.returncode is not None and not node.killed:
                node.deaths.append(node.proc.returncode)  # it died, and not by our hand
            node.folder.mkdir(parents=True, exist_ok=True)
            with open(node.log_path, "ab") as logf:
                node.proc = subprocess.Popen(
                    self.argv(node),
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    cwd=node.folder,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            node.killed = False
            node.paused = False
            node.starts += 1

    def unexpected_deaths(self) -> dict[str, list[int]]:
        """Return, per node, the exit codes of processes that ended without our SIGKILL."""
        out = {}
        for node in self.nodes:
            codes = list(node.deaths)
            proc = node.proc
            if proc is not None and proc.poll() is not None and not node.killed:
                codes.append(proc.returncode)
            if codes:
                out[node.node_id] = codes
        return out

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL a node and reap it."""
        with self._lock:
            if node.proc is None or node.proc.poll() is not None:
                return
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=10)
            node.killed = True
            node.kills += 1
            node.paused = False

    def pause(self, node: ClusterNode) -> None:
        """SIGSTOP a node."""
        with self._lock:
            if node.alive() and not node.paused:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGSTOP)
                node.paused = True

    def resume(self, node: ClusterNode) -> None:
        """SIGCONT a node."""
        with self._lock:
            if node.alive() and node.paused:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGCONT)
            node.paused = False

    def stop(self) -> None:
        """Stop every process this cluster started: SIGCONT + SIGTERM, SIGKILL after 5 s."""
        with self._lock:
            for node in self.nodes:
                if node.alive():
                    assert node.proc is not None
                    node.proc.send_signal(signal.SIGCONT)
                    node.proc.terminate()
            deadline = time.monotonic() + 5
            for node in self.nodes:
                if node.proc is None or node.proc.returncode is not None:
                    continue
                try:
                    node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(timeout=10)
                node.paused = False

    def status(self, node: ClusterNode, timeout: float = 1.0) -> dict[str, Any] | None:
        """Return a node's status, or None when it does not answer."""
        if not node.alive() or node.paused:
            return None
        try:
            st = jsonrpc(node.address, HTTP_PORT, "status", timeout=timeout)
        except (OSError, RpcError, ValueError):
            return None
        return st if isinstance(st, dict) else None

    def metrics(self, node: ClusterNode, timeout: float = 2.0) -> dict[str, float] | None:
        """Return a node's Prometheus samples (``name{labels}`` -> value), or None."""
        if not node.alive() or node.paused:
            return None
        url = f"http://{node.address}:{HTTP_PORT}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return parse_metrics(answer.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return None

    def leader(self) -> ClusterNode | None:
        """Return the node claiming leadership with the highest term, or None."""
        best: tuple[int, ClusterNode] | None = None
        for node in self.nodes:
            st = self.status(node)
            if st and st.get("role") == "leader" and (best is None or st["term"] > best[0]):
                best = (int(st["term"]), node)
        return best[1] if best else None

    def wait_for_leader(self, timeout: float, stop: threading.Event | None = None) -> ClusterNode:
        """Wait until a majority agrees on one leader (itself included) and return it.

        TimeoutError after ``timeout`` seconds (or when ``stop`` is set).
        """
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop.is_set():
            statuses = [st for st in (self.status(n) for n in self.nodes) if st]
            leaders = [st for st in statuses if st.get("role") == "leader"]
            if leaders:
                top = max(leaders, key=lambda st: int(st["term"]))
                agree = sum(
                    1
                    for st in statuses
                    if st.get("term") == top["term"] and str(st.get("leader")) == str(top["id"])
                )
                if agree * 2 > len(self.nodes):
                    return next(n for n in self.nodes if n.node_id == str(top["id"]))
            stop.wait(0.1)
        raise TimeoutError(f"no leader a majority follows within {timeout} s")
