"""A node without cluster key or TLS starts only on loopback, or with --insecure (issue 19)."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from nodebuild import node_from, service_from
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from leeky_twisted.cli import build_parser, run_keygen
from leeky_twisted.ops.localcluster import twistd_path
from leeky_twisted.security.clusterkey import create_key_file, read_key_file
from leeky_twisted.security.peerauth import (
    UnauthenticatedPeersError,
    is_loopback_host,
    unauthenticated_peers_refusal,
)

OUTSIDE = "1=10.0.0.1:7101,2=10.0.0.2:7102,3=10.0.0.3:7103"
LOOPBACK = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("no-such-host.invalid", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """Loopback IPs (v4, v6, v4-mapped) and localhost are loopback; the rest, or unresolved, not."""
    assert is_loopback_host(host) is loopback


def test_only_a_keyless_node_beyond_loopback_is_refused() -> None:
    """A key, TLS or --insecure each lift the rule; on loopback it does not apply."""
    outside = ["127.0.0.1:7101", "10.0.0.2:7102"]
    refusal = unauthenticated_peers_refusal(outside, keyed=False, tls=False, insecure=False)
    assert refusal is not None and "10.0.0.2:7102" in refusal
    assert "leekyraft keygen" in refusal and "--insecure" in refusal and "\n" not in refusal
    for keyed, tls, insecure in [(True, False, False), (False, True, False), (False, False, True)]:
        assert (
            unauthenticated_peers_refusal(outside, keyed=keyed, tls=tls, insecure=insecure) is None
        )
    loop = ["127.0.0.1:7101", "[::1]:7102", "localhost:7103"]
    assert unauthenticated_peers_refusal(loop, keyed=False, tls=False, insecure=False) is None


def base(tmp_path: Path, peers: str, *more: str) -> list[str]:
    """Return node 1's options with ``peers`` and its own data folder."""
    return ["--id", "1", "--peers", peers, "--data-dir", str(tmp_path / "d"), *more]


def test_the_service_refuses_a_keyless_node_beyond_loopback(tmp_path: Path) -> None:
    """make_node_service itself refuses: every way of building a node passes through it."""
    with pytest.raises(UnauthenticatedPeersError, match=r"10\.0\.0\.1:7101 is not loopback"):
        service_from(base(tmp_path, OUTSIDE))


def test_a_key_file_or_insecure_starts_it(tmp_path: Path) -> None:
    """With --gossip-key-file the Hello carries a proof; --insecure starts with a warning."""
    key = tmp_path / "cluster.key"
    create_key_file(str(key))
    keyed = node_from(base(tmp_path / "a", OUTSIDE, "--gossip-key-file", str(key)))
    peer_transport = keyed.transport
    while not hasattr(peer_transport, "hello_auth"):  # under the counting wrappers
        peer_transport = peer_transport.inner
    assert peer_transport.hello_auth is not None
    seen: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_level") == LogLevel.warn:
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        insecure = node_from(base(tmp_path / "b", OUTSIDE, "--insecure"))
    finally:
        globalLogPublisher.removeObserver(observe)
    peer_transport = insecure.transport
    while not hasattr(peer_transport, "hello_auth"):
        peer_transport = peer_transport.inner
    assert peer_transport.hello_auth is None
    assert any("peer port is NOT authenticated (--insecure" in line for line in seen)


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    """`leekyraft keygen FILE` writes 32 random bytes as hex, mode 0600, never over a file."""
    path = tmp_path / "k" / "cluster.key"
    out, err = io.StringIO(), io.StringIO()
    assert run_keygen(build_parser().parse_args(["keygen", str(path)]), out, err) == 0
    key = read_key_file(str(path))
    assert len(key) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert f"--gossip-key-file {path}" in out.getvalue()
    assert run_keygen(build_parser().parse_args(["keygen", str(path)]), out, err) == 1
    assert err.getvalue() == f"leekyraft: keygen: {path} exists; not overwritten\n"
    assert read_key_file(str(path)) == key


def test_twistd_refuses_a_keyless_node_beyond_loopback_in_one_line(tmp_path: Path) -> None:
    """The real command: exit 1, one line naming the way out, no traceback, nothing listens."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [twistd_path(), "-n", "--pidfile=", "leekyraft", *base(tmp_path, OUTSIDE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("leekyraft: refusing to start: peer address 10.0.0.1:7101")
    assert "leekyraft keygen" in lines[0] and "--insecure" in lines[0]
