"""Real node processes against connection floods and oversized requests (issue 19, findings 5, 6).

The nodes run with an open-files limit of 256 (hard and soft, as ``ulimit -n 256``),
a cap of 50 connections on each client port and a 5-second idle timeout. A flood of
idle connections to a follower must not take it down: the connections past the cap are
closed at once, the idle ones after the timeout, and the follower still votes and
persists in the next election (before the fix it ran out of descriptors and stopped
itself writing its hard state). A put of hundreds of MiB is refused as its first bytes
past the request bound arrive, and the node's memory does not grow by the value.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import struct
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LOOPBACK, LocalCluster, NodeProcess, jsonrpc

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CAP = 50
LIMITS = [
    "--max-client-connections",
    str(CAP),
    "--max-connections-per-host",
    str(CAP),
    "--idle-timeout",
    "5",
]
NOFILE = 256
_CLIENT = 'port="client"'
_WITH_NOFILE = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class LimitedCluster(LocalCluster):
    """A local cluster whose nodes start under ``ulimit -n 256``."""

    def argv(self, node: NodeProcess) -> list[str]:
        return [sys.executable, "-c", _WITH_NOFILE, *super().argv(node)]


@pytest.fixture
def cluster(tmp_path: Path):
    c = LimitedCluster(tmp_path / "limited", nodes=3, extra_args=FAST + LIMITS)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def open_fds(node: NodeProcess) -> int:
    assert node.proc is not None
    return len(list(Path(f"/proc/{node.proc.pid}/fd").iterdir()))


def rss_bytes(node: NodeProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def metric(node: NodeProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{node.http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{labels}}} in /metrics")


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the node closed ``sock`` (EOF or reset)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_idle_flood_is_capped_and_timed_out_and_the_follower_still_elects(cluster):
    """Three times the cap of idle connections to a follower under ulimit -n 256: the
    extra ones are closed at once, the rest after the idle timeout, and when the leader
    dies the follower still takes part in electing a new one and serves requests."""
    leader = cluster.wait_for_leader()
    target = next(n for n in cluster.nodes if n is not leader)
    flood = []
    try:
        for _ in range(3 * CAP):
            s = socket.create_connection((LOOPBACK, target.client_port), timeout=10)
            s.sendall(b"\x00")  # one byte: past the first-bytes timeout, then silent
            flood.append(s)
        assert open_fds(target) < NOFILE

        def refused_at_once():
            return sum(closed_by_peer(s) for s in flood) >= 2 * CAP

        cluster.wait_for("the connections past the cap to be closed", refused_at_once, 10)
        refused = metric(target, "leeky_connections_refused_total", _CLIENT + ',reason="port_cap"')
        assert refused >= 2 * CAP
        # The follower's own descriptors are intact: it votes and persists.
        cluster.kill(leader, signal.SIGKILL)
        survivors = [n for n in cluster.nodes if n is not leader]

        def new_leader():
            for n in survivors:
                st = cluster.status(n)
                if st and st["role"] == "leader":
                    return n
            return None

        elected = cluster.wait_for("a new leader", new_leader)
        assert target.alive()
        jsonrpc(target.http_port, "put", "after", "flood")
        assert jsonrpc(elected.http_port, "get", "after") == "flood"

        def all_idle_closed():
            return all(closed_by_peer(s) for s in flood)

        cluster.wait_for("the idle connections to be closed", all_idle_closed, 20)
        idle = metric(target, "leeky_connections_timed_out_total", _CLIENT + ',reason="idle"')
        assert idle >= CAP
        assert metric(target, "leeky_connections_open", _CLIENT) == 0
    finally:
        for s in flood:
            s.close()
    # The port takes new clients again.
    with socket.create_connection((LOOPBACK, target.client_port), timeout=5) as s:
        s.sendall(_amp_box({b"_command": b"Status", b"_ask": b"1"}))
        s.settimeout(5)
        assert b"_answer" in s.recv(65536)


def _amp_box(fields: dict[bytes, bytes]) -> bytes:
    out = b"".join(
        struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v for k, v in fields.items()
    )
    return out + b"\x00\x00"


def test_a_put_of_hundreds_of_mib_is_refused_early_and_memory_stays_flat(cluster):
    """Three unfinished 256 MiB puts: each connection is closed after a few MiB, and the
    node's resident memory does not grow by anything like the values."""
    cluster.wait_for_leader()
    node = cluster.nodes[0]
    before = rss_bytes(node)
    piece = b"v" * 65535
    for _ in range(3):
        s = socket.create_connection((LOOPBACK, node.client_port), timeout=10)
        head = _amp_box({b"_ask": b"1", b"_command": b"Put", b"key": b"k"})[:-2]
        sent = 0
        deadline = time.monotonic() + 30
        try:
            s.sendall(head + struct.pack("!H", 5) + b"value" + struct.pack("!H", 65535) + piece)
            n = 1
            while sent < 256 * 1024 * 1024 and time.monotonic() < deadline:
                key = b"value.%d" % n
                s.sendall(struct.pack("!H", len(key)) + key + struct.pack("!H", 65535) + piece)
                sent += 65535
                n += 1
        except OSError:
            pass  # the node closed the connection
        finally:
            s.close()
        assert sent < 64 * 1024 * 1024, "the node kept reading far past the request bound"
    assert node.alive()
    assert rss_bytes(node) - before < 64 * 1024 * 1024
    assert jsonrpc(node.http_port, "status")["id"] == node.node_id


def test_pipelined_gets_never_read_are_aborted_and_others_are_served(cluster):
    """A client pipelines gets of a 1 MiB value and never reads: the node stops reading
    it, aborts it past the unsent-bytes cap (counted as ``unsent``), and its memory does
    not grow by the answers; another client is served meanwhile."""
    leader = cluster.wait_for_leader()
    jsonrpc(leader.http_port, "put", "big", "v" * (1 << 20), timeout=10)
    before = rss_bytes(leader)
    get = _amp_box({b"_ask": b"1", b"_command": b"Get", b"key": b"big", b"stale": b"True"})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((LOOPBACK, leader.client_port))
    s.setblocking(False)
    try:
        burst = get * 300  # 12 KB of requests (one read): 300 MiB of answers
        sent = 0
        deadline = time.monotonic() + 30
        while sent < len(burst) and time.monotonic() < deadline:
            try:
                sent += s.send(burst[sent:])
            except BlockingIOError:
                select.select([], [s], [], 0.05)
            except OSError:
                break  # reset by the node
        counted = "leeky_connections_timed_out_total", _CLIENT + ',reason="unsent"'
        cluster.wait_for("the node to abort the reader", lambda: metric(leader, *counted), 30)
        assert metric(leader, *counted) == 1
        with pytest.raises(ConnectionResetError):  # what it had sent is dropped: reset
            s.setblocking(True)
            while s.recv(65536):
                pass
        assert jsonrpc(leader.http_port, "get", "big", timeout=10) == "v" * (1 << 20)
        assert rss_bytes(leader) - before < 128 * 1024 * 1024
    finally:
        s.close()


_EMFILE_SERVER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from twisted.internet import protocol, reactor, stdio

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

hog = []

class Control(protocol.Protocol):
    def dataReceived(self, data):
        for f in hog:
            f.close()
        hog.clear()
        print("freed", flush=True)

port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
stdio.StandardIO(Control())
try:
    while True:
        hog.append(open("/dev/null"))
except OSError:
    pass
print(port.getHost().port, flush=True)
reactor.run()
"""


def test_twisted_keeps_listening_through_emfile_on_accept(tmp_path):
    """What the caps lean on: when accept() fails with EMFILE, Twisted closes the waiting
    connection with its reserved descriptor and keeps listening; once descriptors are free
    again, new connections are served."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-c", _EMFILE_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())  # every descriptor is taken now
        for _ in range(3):
            with socket.create_connection((LOOPBACK, port), timeout=5) as s:
                s.settimeout(5)
                with contextlib.suppress(ConnectionResetError):  # or reset
                    assert s.recv(10) == b""  # closed, not left hanging
        assert proc.poll() is None
        proc.stdin.write("free\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "freed"
        with socket.create_connection((LOOPBACK, port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"hi")
            assert s.recv(10) == b"hi"
    finally:
        proc.kill()
        proc.wait(timeout=10)
