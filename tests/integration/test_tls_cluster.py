"""A 3-node cluster of real ``twistd -n leekyraft`` processes with mutual TLS on loopback.

Certificates come from :mod:`leeky_twisted.security.certs`; clients are the real
``leekyraft`` command with ``--tls-dir``/``--tls-name``. Whoever lacks a
certificate from the cluster's CA is refused, and the node logs the refusal.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import (
    LOOPBACK,
    LocalCluster,
    NodeProcess,
    free_ports,
    jsonrpc,
    twistd_path,
)
from leeky_twisted.security.certs import NODES_NAME, make_client_cert, make_dev_ca, make_node_cert

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")
DEADLINE = 20.0

#: An AMP ``Status`` request box, as a client would send it.
STATUS_BOX = b"\x00\x08_command\x00\x06Status\x00\x04_ask\x00\x011\x00\x00"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cluster's CA (nodes 1-3, client alice); another CA (mallory); and a mix of both."""
    root = tmp_path_factory.mktemp("certs")
    good, evil, mixed = root / "good", root / "evil", root / "mixed"
    make_dev_ca(str(good))
    for node_id in ("1", "2", "3"):
        make_node_cert(str(good), node_id)
    make_client_cert(str(good), "alice")
    make_dev_ca(str(evil), name="Some other CA")
    make_client_cert(str(evil), "mallory")
    # Trusts the cluster's CA, but presents a certificate from the other one.
    mixed.mkdir()
    shutil.copy(good / "ca.pem", mixed / "ca.pem")
    for suffix in ("pem", "key"):
        shutil.copy(evil / f"client-mallory.{suffix}", mixed / f"client-mallory.{suffix}")
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[LocalCluster]:
    """Three TLS nodes with an elected leader; every process is stopped afterwards."""
    c = LocalCluster(
        tmp_path_factory.mktemp("tls-cluster"),
        nodes=3,
        extra_args=FAST,
        tls_dir=certs / "good",
        tls_client="alice",
    )
    try:
        c.start()
        c.wait_for_leader(timeout=DEADLINE)
        yield c
    finally:
        c.stop()


def addresses(nodes: list[NodeProcess]) -> str:
    """Return the --cluster value for ``nodes``."""
    return ",".join(f"{LOOPBACK}:{n.client_port}" for n in nodes)


def cli(
    *args: str, where: str, tls: tuple[Path, str] | None, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    """Run ``leekyraft`` against ``where``, with the client certificate ``tls`` (or none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEEKYRAFT_")}
    argv = [CLI, "--cluster", where, "--timeout", str(timeout)]
    if tls is not None:
        argv += ["--tls-dir", str(tls[0]), "--tls-name", tls[1]]
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


class LogWatch:
    """What a node logs from now on."""

    def __init__(self, node: NodeProcess) -> None:
        self.path = node.log_path
        self.start = self.path.stat().st_size

    def text(self) -> str:
        """Return everything logged since the watch began."""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace")

    def wait_for(self, *needles: str, timeout: float = DEADLINE) -> str:
        """Wait until a line holds every needle; return that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if all(n in line for n in needles):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.path} never logged {needles}:\n{self.text()[-3000:]}")
            time.sleep(0.05)  # noqa: TID251 - polling another process's log under a deadline


def amp_without_certificate(port: int, ca: Path) -> bytes | Exception:
    """Send a Status box over TLS without a client certificate; return the answer or error."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=NODES_NAME) as conn,
        ):
            conn.sendall(STATUS_BOX)
            return conn.recv(4096)
    except (ssl.SSLError, ConnectionError) as e:
        return e


def leader_and_followers(cluster: LocalCluster) -> tuple[NodeProcess, list[NodeProcess]]:
    """Return the leader (over HTTPS with alice's certificate) and the other nodes."""
    leader = cluster.wait_for_leader(timeout=DEADLINE)
    return leader, [n for n in cluster.nodes if n is not leader]


def test_tls_cluster_elects_and_serves_put_and_get_with_a_client_certificate(
    cluster: LocalCluster, certs: Path
) -> None:
    """With alice's certificate, put and get work, and status shows every node over TLS."""
    good = (certs / "good", "alice")
    everyone = addresses(cluster.nodes)
    r = cli("put", "pizzatoppings", "peporoni", "cheddar", where=everyone, tls=good)
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'Success! Set "pizzatoppings" to: "peporoni cheddar"\n'
    r = cli("get", "pizzatoppings", where=everyone, tls=good)
    assert (r.returncode, r.stdout) == (0, "peporoni cheddar\n"), r.stderr
    r = cli("status", where=everyone, tls=good)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("leader") >= 1 and "unreachable" not in r.stdout
    for node in cluster.nodes:
        assert "TLS is OFF" not in node.log_path.read_text()
    # HTTPS with a client certificate reaches the same data.
    leader, _ = leader_and_followers(cluster)
    assert jsonrpc(leader.http_port, "get", "pizzatoppings", context=cluster.https) == (
        "peporoni cheddar"
    )


def test_a_put_through_a_follower_is_forwarded_to_the_leader_over_tls(
    cluster: LocalCluster, certs: Path
) -> None:
    """A client that knows only a follower writes and reads: the follower forwards over TLS."""
    good = (certs / "good", "alice")
    _, (f1, f2) = leader_and_followers(cluster)
    r = cli("put", "via-follower", "forwarded", where=addresses([f1]), tls=good)
    assert r.returncode == 0, r.stderr
    r = cli("get", "via-follower", where=addresses([f2]), tls=good)
    assert (r.returncode, r.stdout) == (0, "forwarded\n"), r.stderr


def test_a_client_without_a_certificate_is_refused_and_the_node_logs_it(
    cluster: LocalCluster, certs: Path
) -> None:
    """Plaintext, and TLS without a client certificate, are refused on client and HTTP ports."""
    node = cluster.nodes[0]
    watch = LogWatch(node)
    r = cli("get", "pizzatoppings", where=addresses([node]), tls=None, timeout=2)
    assert r.returncode != 0 and r.stdout == ""
    watch.wait_for("refused TLS connection from 127.0.0.1")

    watch = LogWatch(node)
    answer = amp_without_certificate(node.client_port, certs / "good" / "ca.pem")
    assert isinstance(answer, Exception) or answer == b"", answer
    watch.wait_for("refused TLS connection from 127.0.0.1", "did not return a certificate")

    watch = LogWatch(node)
    no_cert = ssl.create_default_context(cafile=str(certs / "good" / "ca.pem"))
    with pytest.raises(OSError):
        jsonrpc(node.http_port, "status", context=no_cert)
    watch.wait_for("refused TLS connection from 127.0.0.1", "did not return a certificate")


def test_a_client_certificate_from_another_ca_is_refused_and_the_node_logs_it(
    cluster: LocalCluster, certs: Path
) -> None:
    """Mallory's certificate, from another CA, gets nowhere, whichever CA mallory trusts."""
    node = cluster.nodes[1]
    watch = LogWatch(node)
    r = cli("put", "stolen", "x", where=addresses([node]), tls=(certs / "evil", "mallory"))
    assert r.returncode != 0, r.stdout
    assert "TLS" in r.stderr
    watch.wait_for("refused TLS connection from 127.0.0.1")

    watch = LogWatch(node)
    r = cli("put", "stolen", "x", where=addresses([node]), tls=(certs / "mixed", "mallory"))
    assert r.returncode != 0, r.stdout
    assert "refused the TLS connection" in r.stderr
    watch.wait_for("refused TLS connection from 127.0.0.1", "certificate verify failed")

    r = cli("get", "stolen", where=addresses(cluster.nodes), tls=(certs / "good", "alice"))
    assert r.returncode == 2, (r.stdout, r.stderr)  # never written


def test_a_node_without_tls_cannot_join_the_tls_cluster(
    cluster: LocalCluster, certs: Path, tmp_path: Path
) -> None:
    """A plaintext node claiming id 3 is refused at the peer ports; the cluster carries on."""
    good = (certs / "good", "alice")
    watches = [LogWatch(n) for n in cluster.nodes if n.node_id != "3"]
    peer, client, http = free_ports(3)
    peers = ",".join(
        f"{n.node_id}={LOOPBACK}:{peer if n.node_id == '3' else n.peer_port}" for n in cluster.nodes
    )
    log_path = tmp_path / "impostor.log"
    argv = [
        twistd_path(),
        "-n",
        "--pidfile=",
        "leekyraft",
        "--id",
        "3",
        "--peers",
        peers,
        "--data-dir",
        str(tmp_path / "data"),
        "--client-port",
        str(client),
        "--http-port",
        str(http),
        *FAST,
    ]
    with open(log_path, "ab") as logf:
        impostor = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
        )
    try:
        for watch in watches:  # its votes never get past the TLS handshake
            watch.wait_for("refused TLS connection from 127.0.0.1")
        deadline = time.monotonic() + DEADLINE
        while "closed before our Hello was answered" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)  # noqa: TID251 - polling another process's log under a deadline
        # Let it campaign for a while: nothing reaches the cluster.
        time.sleep(1.0)  # noqa: TID251 - giving the impostor time to try
        text = log_path.read_text()
        assert "TLS is OFF" in text
        assert "peer connection from" not in text  # nobody got through to it either
        assert jsonrpc(http, "status")["role"] != "leader"
        for watch in watches:  # it never even got to say Hello
            assert "refused peer connection" not in watch.text()
        r = cli("put", "still", "working", where=addresses(cluster.nodes), tls=good)
        assert r.returncode == 0, r.stderr
    finally:
        if impostor.poll() is None:
            impostor.terminate()
            try:
                impostor.wait(timeout=10)
            except subprocess.TimeoutExpired:
                impostor.kill()
                impostor.wait(timeout=10)


def test_an_alpn_client_like_curl_gets_jsonrpc_over_https(
    cluster: LocalCluster, certs: Path
) -> None:
    """A client offering ALPN h2 + http/1.1 (curl's default) is served, not sent a TLS alert."""
    good = certs / "good"
    context = ssl.create_default_context(cafile=str(good / "ca.pem"))
    context.load_cert_chain(str(good / "client-alice.pem"), str(good / "client-alice.key"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    node = cluster.nodes[0]
    body = b'{"jsonrpc": "2.0", "method": "status", "params": [], "id": 1}'
    request = (
        b"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    with (
        socket.create_connection((LOOPBACK, node.http_port), timeout=DEADLINE) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        assert conn.selected_alpn_protocol() == "http/1.1"
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"result"' in answer
