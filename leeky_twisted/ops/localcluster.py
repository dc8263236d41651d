"""Start and watch a cluster of real ``twistd -n leekyraft`` processes on loopback.

Used by ``leekyraft local`` and by the integration tests. Every process it
starts is tracked by PID and stopped by :meth:`LocalCluster.stop` (SIGTERM,
then SIGKILL); nothing is ever killed by name.

With ``tls_dir`` (made by ``leekyraft certs``) the nodes run with
``--tls-dir`` and the status helpers speak HTTPS with a client certificate.

Every cluster gets its own key, ``root/cluster.key`` (made on first use, mode
0600), passed to every node with ``--gossip-key-file``: the nodes derive one
random cluster id from it, and gossip, if turned on, is authenticated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leeky_twisted.ops.lastwords import last_words
from leeky_twisted.security.clusterkey import KEY_FILE_NAME, create_key_file

LOOPBACK = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct free TCP ports on loopback."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def twistd_path() -> str:
    """Return the twistd next to this Python, else the one on PATH."""
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


class RpcError(Exception):
    """A JSON-RPC error answer; ``error`` is the error object."""

    def __init__(self, error: Any) -> None:
        super().__init__(str(error))
        self.error = error


def https_context(tls_dir: Path | str, client: str) -> ssl.SSLContext:
    """Return an SSL context trusting ``tls_dir``/ca.pem, presenting client-<client>.pem.

    The node's certificate must name the address dialled (``leekyraft
    certs`` adds 127.0.0.1 and localhost by default).
    """
    folder = Path(tls_dir)
    context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    context.load_cert_chain(folder / f"client-{client}.pem", folder / f"client-{client}.key")
    return context


def jsonrpc(
    port: int,
    method: str,
    *params: Any,
    timeout: float = 5.0,
    context: ssl.SSLContext | None = None,
    host: str = LOOPBACK,
) -> Any:
    """Call a JSON-RPC 2.0 method on a node's HTTP port (blocking); HTTPS with ``context``."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    scheme = "https" if context is not None else "http"
    req = urllib.request.Request(
        f"{scheme}://{host}:{port}/jsonrpc",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        reply = json.loads(resp.read())
    if reply.get("error") is not None:
        raise RpcError(reply["error"])
    return reply.get("result")


@dataclass
class NodeProcess:
    """One node's ports, folders and process."""

    node_id: str
    peer_port: int
    client_port: int
    http_port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  #: where the current run's lines start in its log

    @property
    def log_path(self) -> Path:
        """Return the node's log file."""
        return self.folder / "node.log"

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.proc is not None and self.proc.poll() is None


#: The file, in a local cluster's folder, that records its nodes and their ports.
LAYOUT_FILE = "cluster.json"


class ClusterSizeMismatch(ValueError):
    """The folder holds a cluster of another size than the one asked for."""


def saved_layout(root: Path | str) -> list[dict[str, Any]] | None:
    """Return the nodes recorded in ``root``/cluster.json, or None when there is none.

    Raises ValueError when the file exists but is not a layout this module wrote.
    """
    path = Path(root) / LAYOUT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        nodes = json.loads(text)["nodes"]
        for n in nodes:
            str(n["id"]), int(n["peer"]), int(n["client"]), int(n["http"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a local cluster layout: {e!r}") from None
    return list(nodes)


class LocalCluster:
    """N nodes on loopback with data under ``root``; ports are kept in root/cluster.json."""

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        extra_args: list[str] | None = None,
        base_port: int | None = None,
        tls_dir: Path | str | None = None,
        tls_client: str | None = None,
    ) -> None:
        """Lay out (or reload from root/cluster.json) ``nodes`` nodes.

        With ``base_port`` B, node i (1-based) uses client port B+i, peer port
        B+100+i and HTTP port B+200+i; otherwise free ports are picked. With
        ``tls_dir``, nodes get ``--tls-dir`` and :meth:`status` uses HTTPS with
        the client certificate ``tls_client`` from that folder.
        """
        # Absolute: each node runs in its own folder, and a relative --data-dir
        # would nest the data a second time below it.
        self.root = Path(root).absolute()
        saved = saved_layout(self.root)
        if saved is not None and len(saved) != nodes:
            raise ClusterSizeMismatch(
                f"{self.root} holds a {len(saved)}-node cluster, not {nodes} nodes: run it "
                f"with {len(saved)} nodes, or use another folder (or delete this one) for "
                f"a {nodes}-node cluster"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.key_path = self.root / KEY_FILE_NAME
        if not self.key_path.exists():
            create_key_file(str(self.key_path))
        self.extra_args = ["--gossip-key-file", str(self.key_path.resolve())]
        self.extra_args += list(extra_args or [])
        self.https: ssl.SSLContext | None = None
        #: the pipe each node watches (``--supervisor-fd``): (read end, write end)
        self._lifeline: tuple[int, int] | None = None
        if tls_dir is not None:
            if tls_client is None:
                raise ValueError("tls_dir needs tls_client (a client certificate name)")
            self.extra_args += ["--tls-dir", str(Path(tls_dir).resolve())]
            self.https = https_context(tls_dir, tls_client)
        layout = self.root / LAYOUT_FILE
        if saved is not None:
            self.nodes = [
                NodeProcess(
                    str(n["id"]), n["peer"], n["client"], n["http"], self.root / f"node{n['id']}"
                )
                for n in saved
            ]
        else:
            if base_port is not None:
                ports = (
                    [base_port + 100 + i for i in range(1, nodes + 1)]
                    + [base_port + i for i in range(1, nodes + 1)]
                    + [base_port + 200 + i for i in range(1, nodes + 1)]
                )
            else:
                ports = free_ports(3 * nodes)
            self.nodes = [
                NodeProcess(
                    str(i + 1),
                    ports[i],
                    ports[nodes + i],
                    ports[2 * nodes + i],
                    self.root / f"node{i + 1}",
                )
                for i in range(nodes)
            ]
            layout.write_text(
                json.dumps(
                    {
                        "nodes": [
                            {
                                "id": n.node_id,
                                "peer": n.peer_port,
                                "client": n.client_port,
                                "http": n.http_port,
                            }
                            for n in self.nodes
                        ]
                    },
                    indent=1,
                )
            )

    def peers_arg(self) -> str:
        """Return the --peers value for this cluster."""
        return ",".join(f"{n.node_id}={LOOPBACK}:{n.peer_port}" for n in self.nodes)

    def argv(self, node: NodeProcess) -> list[str]:
        """Return the command line that runs ``node``."""
        return [
            twistd_path(),
            "-n",
            "--pidfile=",
            "leekyraft",
            "--id",
            node.node_id,
            "--peers",
            self.peers_arg(),
            "--data-dir",
            str(node.folder / "data"),
            "--client-port",
            str(node.client_port),
            "--http-port",
            str(node.http_port),
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start every node that is not running."""
        for node in self.nodes:
            if not node.alive():
                self.start_node(node)

    def lifeline(self) -> int:
        """Return the read end of the pipe the nodes watch, made on first use.

        Only this process holds the write end (a pipe's ends are not inherited
        unless passed): when it ends, however it ends, every node sees the pipe
        close and stops (``--supervisor-fd``, server/lifeline.py).
        """
        if self._lifeline is None:
            self._lifeline = os.pipe()
        return self._lifeline[0]

    def start_node(self, node: NodeProcess) -> None:
        """Start one node's process, appending to its log file.

        The node gets ``--supervisor-fd``: it stops when this process ends.
        """
        node.folder.mkdir(parents=True, exist_ok=True)
        lifeline = self.lifeline()
        with open(node.log_path, "ab") as logf:
            node.log_offset = os.fstat(logf.fileno()).st_size
            node.proc = subprocess.Popen(
                [*self.argv(node), "--supervisor-fd", str(lifeline)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=node.folder,
                start_new_session=True,
                pass_fds=(lifeline,),
            )

    def kill(self, node: NodeProcess, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node; for SIGKILL and SIGTERM wait for it to end."""
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process this cluster started: SIGTERM, then SIGKILL after 5 s."""
        for node in self.nodes:
            if node.alive():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGCONT)
                node.proc.terminate()
        deadline = time.monotonic() + 5
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
        self.close_lifeline()

    def close_lifeline(self) -> None:
        """Close both ends of the nodes' pipe (a running node would then stop)."""
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None

    def status(self, node: NodeProcess, timeout: float = 1.0) -> dict[str, Any] | None:
        """Return a node's status, or None when it does not answer."""
        if not node.alive():
            return None
        try:
            st = jsonrpc(node.http_port, "status", timeout=timeout, context=self.https)
        except (OSError, RpcError, ValueError):
            return None
        return st if isinstance(st, dict) else None

    def leader(self) -> NodeProcess | None:
        """Return the node that reports itself leader (the highest term wins), or None."""
        best: tuple[int, NodeProcess] | None = None
        for node in self.nodes:
            st = self.status(node)
            if st and st.get("role") == "leader" and (best is None or st["term"] > best[0]):
                best = (st["term"], node)
        return best[1] if best else None

    @staticmethod
    def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``check`` until it returns something truthy; raise after ``timeout``.

        It needs no cluster: tests that run ``leekyraft local`` call it on the class."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)  # noqa: TID251 - polling a condition under a deadline

    def wait_for_leader(self, timeout: float = 30.0) -> NodeProcess:
        """Wait until some node leads and return it."""

        def check() -> NodeProcess | None:
            if not any(n.alive() for n in self.nodes):
                raise RuntimeError(f"every node exited; see {self.nodes[0].log_path}")
            return self.leader()

        return self.wait_for("a leader", check, timeout)

    def bench(self, *args: str, without: NodeProcess | None = None) -> str:
        """Run ``leekyraft bench ARGS`` on the cluster (minus ``without``); return its output."""
        cluster = ",".join(f"{LOOPBACK}:{n.client_port}" for n in self.nodes if n is not without)
        cli = str(Path(sys.executable).parent / "leekyraft")
        done = subprocess.run(
            [cli, "--cluster", cluster, "bench", *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe_exit(code: int | None) -> str:
    """Return how a process ended, from its return code (negative: killed by a signal)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class UnknownNode(LookupError):
    """A control request names a node this cluster does not have (bad input)."""


class NoLeaderNow(LookupError):
    """A control request names ``leader``, and no node leads at the moment."""


class Supervisor:
    """Keep a :class:`LocalCluster` running and act out failures on it.

    A node that dies is reported, never followed by the others: the cluster
    keeps running without it until ``restart``. :meth:`watch` reports deaths,
    leader changes and restarted nodes once they know the leader again; :meth:`act` kills
    (SIGKILL), pauses (SIGSTOP), resumes (SIGCONT) or restarts a node, named
    by id or as ``leader``. Paused nodes are not polled (they cannot answer).
    """

    def __init__(self, cluster: LocalCluster, say: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.say = say
        self.paused: set[str] = set()
        self.reported: set[str] = set()  #: dead nodes already reported
        self.coming_back: set[str] = set()  #: restarted nodes that have not answered yet
        self.removed: set[str] = set()  #: running nodes reported as removed from the cluster
        self.leader_id: str | None = None
        self.leader_term: int | None = None

    def node(self, ref: str) -> NodeProcess:
        """Return the node ``ref`` names (an id, or ``leader``).

        Raises UnknownNode for an id the cluster does not have, NoLeaderNow
        for ``leader`` while no node leads.
        """
        if ref == "leader":
            found = self.find_leader()
            if found is None:
                raise NoLeaderNow("no node is leader at the moment")
            return found[0]
        for n in self.cluster.nodes:
            if n.node_id == ref:
                return n
        ids = ", ".join(n.node_id for n in self.cluster.nodes)
        raise UnknownNode(f"no node {ref!r}: this cluster's nodes are {ids}")

    def status(self, node: NodeProcess) -> dict[str, Any] | None:
        """Return the status of a running, unpaused node, or None."""
        if node.node_id in self.paused or not node.alive():
            return None
        return self.cluster.status(node, timeout=0.5)

    def find_leader(
        self, statuses: dict[str, dict[str, Any] | None] | None = None
    ) -> tuple[NodeProcess, int] | None:
        """Return the answering node that leads at the highest term, with that term.

        ``statuses`` (node id to :meth:`status`) saves asking the nodes again.
        """
        best: tuple[NodeProcess, int] | None = None
        for n in self.cluster.nodes:
            st = statuses[n.node_id] if statuses is not None else self.status(n)
            if st and st.get("role") == "leader" and (best is None or st["term"] > best[1]):
                best = (n, st["term"])
        return best

    def act(self, action: str, ref: str) -> str:
        """Apply ``action`` to the node ``ref``; return what was done.

        Raises LookupError for an unknown node, ValueError when the action
        does not apply (killing a node that is not running, ...).
        """
        node = self.node(ref)
        nid = node.node_id
        if action == "kill":
            if not node.alive():
                raise ValueError(f"node {nid} is not running")
            self.cluster.kill(node, signal.SIGKILL)
            self.paused.discard(nid)
            done = f"killed node {nid} (SIGKILL)"
        elif action == "pause":
            if not node.alive():
                raise ValueError(f"node {nid} is not running")
            if nid in self.paused:
                raise ValueError(f"node {nid} is already paused")
            self.cluster.kill(node, signal.SIGSTOP)
            self.paused.add(nid)
            done = f"paused node {nid} (SIGSTOP): it runs no code until `resume {nid}`"
        elif action == "resume":
            if nid not in self.paused or not node.alive():
                raise ValueError(f"node {nid} is not paused")
            self.cluster.kill(node, signal.SIGCONT)
            self.paused.discard(nid)
            done = f"resumed node {nid} (SIGCONT)"
        elif action == "restart":
            if node.alive():
                assert node.proc is not None
                node.proc.send_signal(signal.SIGCONT)
                self.cluster.kill(node, signal.SIGTERM)
            self.paused.discard(nid)
            self.cluster.start_node(node)
            self.reported.discard(nid)
            self.coming_back.add(nid)
            assert node.proc is not None
            done = f"restarted node {nid} on its data (pid {node.proc.pid})"
        else:
            raise ValueError(f"unknown action {action!r}")
        self.say(done)
        return done

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request ``{"action": ..., "node": ...}``.

        A refusal carries ``kind``: ``unknown-node`` (the request named no
        node of this cluster), ``no-leader``, or ``state`` (the action does
        not apply to the node as it is).
        """
        action, ref = request.get("action"), request.get("node")
        if not isinstance(action, str) or not isinstance(ref, str):
            return {"ok": False, "error": "a request names an action and a node"}
        try:
            return {"ok": True, "message": self.act(action, ref)}
        except (LookupError, ValueError) as e:
            kind = (
                "unknown-node"
                if isinstance(e, UnknownNode)
                else "no-leader"
                if isinstance(e, NoLeaderNow)
                else "state"
            )
            return {"ok": False, "error": str(e.args[0]) if e.args else str(e), "kind": kind}

    def watch(self) -> None:
        """Report new deaths, a leader change, and restarted nodes that answer."""
        for n in self.cluster.nodes:
            if n.proc is not None and not n.alive() and n.node_id not in self.reported:
                assert n.proc is not None
                self.reported.add(n.node_id)
                self.coming_back.discard(n.node_id)
                self.removed.discard(n.node_id)
                self.paused.discard(n.node_id)
                code = n.proc.returncode
                why = last_words(n.log_path, n.log_offset) if code and code > 0 else None
                said = f": {why} (log: {n.log_path})" if why else ""
                self.say(
                    f"node {n.node_id} exited ({describe_exit(code)}){said}; the others "
                    f"keep running. Bring it back: leekyraft local restart {n.node_id}"
                )
        statuses = {n.node_id: self.status(n) for n in self.cluster.nodes}
        found = self.find_leader(statuses)
        now = found[0].node_id if found else None
        if now != self.leader_id:
            was = f"node {self.leader_id}" if self.leader_id else "none"
            if found is None:
                self.say(f"leader changed: {was} -> none (an election is under way)")
            else:
                self.say(f"leader changed: {was} -> node {now} (term {found[1]})")
            self.leader_id = now
            self.leader_term = found[1] if found else None
        self._report_removals(statuses)
        for nid in sorted(self.coming_back):
            st = statuses[nid]
            # Back means back in the cluster: it knows (or is) the leader of today.
            if st and st.get("leader") is not None:
                self.coming_back.discard(nid)
                role = st.get("role")
                of = f" of node {st['leader']}" if role == "follower" else ""
                self.say(f"node {nid} is back: {role}{of} (term {st.get('term')})")

    def _report_removals(self, statuses: dict[str, dict[str, Any] | None]) -> None:
        """Report, once, a running node that is no longer a member, and when it is again."""
        for n in self.cluster.nodes:
            st = statuses[n.node_id]
            if st is None:
                continue
            nid = n.node_id
            if st.get("role") == "removed" and nid not in self.removed:
                self.removed.add(nid)
                self.coming_back.discard(nid)
                self.say(
                    f"node {nid} was removed from the cluster: it runs but serves nothing. "
                    f"Add it back: leekyraft add-server {nid} {LOOPBACK}:{n.peer_port}"
                )
            elif st.get("role") != "removed" and nid in self.removed:
                self.removed.discard(nid)
                self.say(f"node {nid} is a member again: {st.get('role')} (term {st.get('term')})")
