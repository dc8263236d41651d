"""The leekyraft command moves on from a paused node and names endpoints that are not Leeky Raft.

Real ``twistd -n leekyraft`` processes on loopback; one follower is paused
with SIGSTOP (always resumed afterwards). The garbage endpoints are tiny TCP
servers in a thread of this test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("failover"), nodes=3, extra_args=FAST)
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def cli(
    cluster_arg: str, *args: str, stdin: bytes = b""
) -> tuple[subprocess.CompletedProcess, float]:
    """Run the leekyraft command; return its result and how long it took."""
    env = {**os.environ, "LEEKYRAFT_CLUSTER": cluster_arg}
    started = time.monotonic()
    r = subprocess.run([CLI, *args], capture_output=True, input=stdin, timeout=120, env=env)
    return r, time.monotonic() - started


def address(node: NodeProcess) -> str:
    return f"127.0.0.1:{node.client_port}"


@pytest.fixture
def paused(cluster: LocalCluster) -> Iterator[NodeProcess]:
    """A follower stopped with SIGSTOP for the test, resumed after it."""
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    assert follower.proc is not None
    follower.proc.send_signal(signal.SIGSTOP)
    try:
        yield follower
    finally:
        follower.proc.send_signal(signal.SIGCONT)


def test_get_and_put_with_a_paused_node_cost_one_attempt_not_the_whole_timeout(
    cluster: LocalCluster, paused: NodeProcess
) -> None:
    """`--cluster paused,live,live`: get and put move on after one attempt timeout.

    A paused node accepts connections and never answers, so a client without
    its own per-node limit would wait out the whole --timeout (60 s here). The
    paused node costs one --attempt-timeout (1 s); measured against the same
    command without it, with a margin wide enough for a loaded machine.
    """
    live = [address(n) for n in cluster.nodes if n is not paused]
    cluster_arg = ",".join([address(paused), *live])
    limits = ("--timeout", "60", "--attempt-timeout", "1")
    r, _ = cli(",".join(live), *limits, "put", "failover", "still", "here")
    assert r.returncode == 0, r.stderr
    r, baseline = cli(",".join(live), *limits, "get", "failover")
    assert r.returncode == 0, r.stderr
    r, elapsed = cli(cluster_arg, *limits, "get", "failover")
    assert (r.returncode, r.stdout.strip()) == (0, b"still here"), r.stderr
    assert elapsed - baseline < 20, (elapsed, baseline)
    r, elapsed = cli(cluster_arg, *limits, "put", "failover", "-", stdin=b"moved on")
    assert r.returncode == 0, r.stderr
    assert elapsed - baseline < 20, (elapsed, baseline)
    r, _ = cli(",".join(live), "get", "failover")
    assert r.stdout.strip() == b"moved on"


def test_status_with_a_paused_node_reports_it_promptly(
    cluster: LocalCluster, paused: NodeProcess
) -> None:
    """`status` marks the paused node after one attempt timeout, not the whole --timeout."""
    nodes = ",".join(address(n) for n in cluster.nodes)
    r, elapsed = cli(nodes, "--timeout", "60", "--attempt-timeout", "1", "status")
    assert r.returncode == 3, r.stderr  # a node did not answer: the exit status says so
    assert b"1 of 3 nodes did not answer" in r.stderr
    assert b"connected but sent nothing" in r.stdout
    assert elapsed < 30, elapsed


class _Impostor:
    """A TCP server that speaks something else: a greeting on connect, or an HTTP answer."""

    def __init__(self, greeting: bytes = b"", answer: bytes = b"") -> None:
        self.greeting = greeting
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if self.greeting:
                        conn.sendall(self.greeting)
                    if conn.recv(4096) and self.answer:
                        conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    ("greeting", "answer", "shown"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", b"", b"SSH-2.0"),
        (b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 400"),
    ],
)
def test_cluster_option_pointing_at_another_service_is_one_line_exit_3(
    greeting: bytes, answer: bytes, shown: bytes
) -> None:
    """An SSH or HTTP port in --cluster: exit 3, one line naming it, no traceback."""
    impostor = _Impostor(greeting, answer)
    try:
        r, _ = cli(f"127.0.0.1:{impostor.port}", "get", "k")
    finally:
        impostor.close()
    assert r.returncode == 3, r.stderr
    assert r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr
    assert f"127.0.0.1:{impostor.port} does not speak Leeky Raft".encode() in r.stderr
    assert shown in r.stderr
