"""The leekyraft command and the JSON-RPC API against real node processes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, RpcError, free_ports, jsonrpc

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")
UNREACHABLE_HINT = (
    "leekyraft: is the cluster running, and are these its AMP client ports? Start one "
    "with `leekyraft local`, or name its nodes with --cluster HOST:PORT,... or "
    "$LEEKYRAFT_CLUSTER."
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("clients"), nodes=3, extra_args=FAST)
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def cli(cluster: LocalCluster | None, *args: str, cluster_arg: str | None = None):
    env = dict(os.environ)
    if cluster_arg is None and cluster is not None:
        cluster_arg = ",".join(f"127.0.0.1:{n.client_port}" for n in cluster.nodes)
    if cluster_arg is not None:
        env["LEEKYRAFT_CLUSTER"] = cluster_arg
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )


def test_cli_put_prints_the_original_success_line_and_get_reads_it(cluster):
    """`leekyraft put` joins the value words and prints the original's line."""
    r = cli(
        cluster, "put", "pizzatoppings", "peporoni", "peppr", "cheddar", "anchoves", "onn", "it"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        'Success! Set "pizzatoppings" to: "peporoni peppr cheddar anchoves onn it"'
    )
    r = cli(cluster, "get", "pizzatoppings")
    assert (r.returncode, r.stdout.strip()) == (0, "peporoni peppr cheddar anchoves onn it")


def test_cli_unknown_key_exits_2_with_one_line_on_stderr(cluster):
    """A missing key is exit code 2 and a single stderr line."""
    r = cli(cluster, "get", "no-such-key")
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_unreachable_cluster_exits_3(cluster):
    """No node listening: exit code 3 and a one-line message."""
    port = free_ports(1)[0]
    r = cli(None, "get", "k", cluster_arg=f"127.0.0.1:{port}")
    assert r.returncode == 3
    first, *rest = r.stderr.strip().splitlines()
    assert "connection refused (nothing listens on that port)" in first
    assert rest == [UNREACHABLE_HINT]  # what to check: is it running, are these its ports


def test_cli_output_into_a_closed_pipe_ends_quietly(cluster, tmp_path):
    """`leekyraft get big | head -c 10`: the reader goes away; no traceback, exit 141."""
    value = tmp_path / "big.txt"
    value.write_text("x" * 300_000)
    assert cli(cluster, "put", "big", "--file", str(value)).returncode == 0
    env = dict(os.environ)
    env["LEEKYRAFT_CLUSTER"] = ",".join(f"127.0.0.1:{n.client_port}" for n in cluster.nodes)
    p = subprocess.Popen(
        [CLI, "get", "big"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.read(10) == b"x" * 10
    p.stdout.close()  # more than a pipe's buffer is still to come
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err and err == ""


def test_cli_lock_stopped_by_sigterm_ends_its_command_before_releasing(cluster, tmp_path):
    """SIGTERM to `leekyraft lock NAME -- CMD`: CMD is sent TERM and the lock is still
    held while CMD stops (CMD itself looks); released once CMD ended; exit 143."""
    import signal

    env = dict(os.environ)
    env["LEEKYRAFT_CLUSTER"] = ",".join(f"127.0.0.1:{n.client_port}" for n in cluster.nodes)
    report = tmp_path / "report.txt"
    script = (
        f"trap '{CLI} ls --count jobs >> {report}; exit 0' TERM; "
        f"echo started >> {report}; while :; do sleep 0.1; done"
    )
    p = subprocess.Popen(
        [CLI, "lock", "jobs", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: the finally stops CMD too
    )
    try:
        cluster.wait_for(
            "the command to start",
            lambda: p.poll() is not None or (report.exists() and "started" in report.read_text()),
        )
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 143
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
    assert report.read_text().split() == ["started", "1"]  # held while CMD stopped
    assert cli(cluster, "ls", "--count", "jobs").stdout.strip() == "0"  # released after


def test_cli_refused_input_exits_5(cluster):
    """A key over the size limit is refused with exit code 5."""
    r = cli(cluster, "put", "k" * 5000, "v")
    assert r.returncode == 5
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_status_lists_every_node_and_json_mode(cluster):
    """`status` prints a row per node with exactly one leader; --json parses."""
    r = cli(cluster, "status")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 3
    assert sum(" leader " in f" {row} " for row in rows) == 1
    r = cli(cluster, "status", "--json")
    data = json.loads(r.stdout)
    roles = sorted(d["status"]["role"] for d in data) if "status" in data[0] else None
    assert roles == ["follower", "follower", "leader"]


def test_cli_cas_and_delete(cluster):
    """cas swaps only on the expected value; delete removes the key."""
    assert cli(cluster, "put", "c", "one").returncode == 0
    assert cli(cluster, "cas", "c", "two", "three").returncode == 6
    assert cli(cluster, "cas", "c", "one", "two").returncode == 0
    assert cli(cluster, "get", "c").stdout.strip() == "two"
    assert cli(cluster, "delete", "c").returncode == 0
    assert cli(cluster, "get", "c").returncode == 2


def _post(port: int, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_jsonrpc_bad_input_gets_errors_and_node_keeps_serving(cluster):
    """Malformed JSON, unknown method, wrong types, a several-MB body: errors, no crash."""
    node = cluster.nodes[0]
    _, reply = _post(node.http_port, b"{not json")
    assert reply["error"]["code"] == -32700
    _, reply = _post(node.http_port, b'{"jsonrpc":"2.0","method":"nope","params":[],"id":1}')
    assert reply["error"]["code"] == -32601
    _, reply = _post(node.http_port, b'{"jsonrpc":"2.0","method":"put","params":[1,2],"id":2}')
    assert reply["error"]["code"] == -32602
    big = json.dumps({"jsonrpc": "2.0", "method": "put", "params": ["k", "x" * 5_000_000], "id": 3})
    _status, reply = _post(node.http_port, big.encode())
    assert reply["error"]["code"] in (-32600, -32602)
    assert jsonrpc(node.http_port, "put", "alive", "yes") is True
    assert jsonrpc(node.http_port, "get", "alive") == "yes"


def test_every_acknowledged_put_survives_a_leader_kill_mid_stream(tmp_path):
    """Puts stream through a follower while the leader is killed; every ack is readable."""
    c = LocalCluster(tmp_path / "stream", nodes=3, extra_args=FAST)
    try:
        c.start()
        leader = c.wait_for_leader()
        entry = next(n for n in c.nodes if n is not leader)
        acked: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline and i < 2000:
                try:
                    jsonrpc(entry.http_port, "put", f"s{i}", str(i), timeout=5)
                    acked.append(i)
                except (RpcError, OSError):
                    pass
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        c.wait_for("some writes", lambda: len(acked) > 50, timeout=20)
        c.kill(leader, signal.SIGKILL)
        c.wait_for("writes after the kill", lambda: len(acked) > 150 or not t.is_alive(), 30)
        stop.set()
        t.join(30)
        assert len(acked) > 150
        for i in acked:
            assert jsonrpc(entry.http_port, "get", f"s{i}") == str(i)
    finally:
        c.stop()


def test_five_node_cluster_elects_and_commits(tmp_path):
    """Five nodes elect exactly one leader and commit a put readable on all of them."""
    c = LocalCluster(tmp_path / "c5", nodes=5, extra_args=FAST)
    try:
        c.start()
        leader = c.wait_for_leader()
        c.wait_for("every node to answer", lambda: all(c.status(n) for n in c.nodes))
        jsonrpc(leader.http_port, "put", "five", "nodes")
        for n in c.nodes:
            assert jsonrpc(n.http_port, "get", "five") == "nodes"
        roles = [c.status(n)["role"] for n in c.nodes]
        assert roles.count("leader") == 1
    finally:
        c.stop()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started with `&` by a script


@pytest.mark.parametrize(
    ("stop", "background"), [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["term", "int"]
)
def test_leekyraft_local_starts_serves_and_stops_leaving_no_process(tmp_path, stop, background):
    """`leekyraft local` elects, serves a put, and SIGTERM or SIGINT stops every node it started.

    SIGINT works even when the launcher started with it ignored (run in the background).
    """
    base = 20000 + (os.getpid() % 200) * 100 + (50 if background else 0)
    proc = subprocess.Popen(
        [
            CLI,
            "local",
            "--nodes",
            "3",
            "--dir",
            str(tmp_path / "local"),
            "--base-port",
            str(base),
            *[f"--node-arg={a}" for a in FAST],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        preexec_fn=_ignore_sigint if background else None,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        assert any(line.startswith("leader:") for line in lines), lines
        layout = json.loads((tmp_path / "local" / "cluster.json").read_text())
        ports = [n["http"] for n in layout["nodes"]]
        assert jsonrpc(ports[0], "put", "local", "works") is True
        pids = subprocess.run(
            ["pgrep", "-f", str(tmp_path / "local")], capture_output=True, text=True
        ).stdout.split()
        assert len(pids) >= 3
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0
        left = subprocess.run(
            ["pgrep", "-f", f"--data-dir {tmp_path / 'local'}"], capture_output=True, text=True
        ).stdout.split()
        assert left == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_bench_reports_throughput_and_percentiles(cluster):
    """`leekyraft bench` runs its bounded workload and prints rates and percentiles."""
    r = cli(cluster, "bench", "--clients", "4", "--ops", "200", "--seconds", "20")
    assert r.returncode == 0, r.stderr
    assert "put: 200 ops (0 errors)" in r.stdout
    assert "latency p50" in r.stdout and "p99" in r.stdout
    r = cli(cluster, "bench", "--workload", "get", "--clients", "4", "--ops", "100")
    assert r.returncode == 0 and "get: 100 ops (0 errors)" in r.stdout


def test_cli_bench_plot_draws_every_operation_and_a_histogram(cluster, tmp_path):
    """`leekyraft bench --plot FILE` writes a two-panel PNG of the run's 200 operations."""
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    r = cli(cluster, "bench", "--clients", "4", "--ops", "200", "--plot", str(plot))
    assert r.returncode == 0, r.stderr
    assert "put: 200 ops (0 errors)" in r.stdout
    assert f"plot: {plot}" in r.stdout
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def test_metrics_endpoint_parses_and_follows_the_commit_index(cluster):
    """GET /metrics is Prometheus text; a put raises the commit index metric."""
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(port: int) -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        return {
            s.name: s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if not s.labels
        }

    leader = cluster.wait_for_leader()
    before = scrape(leader.http_port)["leeky_raft_commit_index"]
    jsonrpc(leader.http_port, "put", "metric", "moves")
    after = scrape(leader.http_port)["leeky_raft_commit_index"]
    assert after > before
    conn = http.client.HTTPConnection("127.0.0.1", leader.http_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    rtt = [
        s
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "leeky_raft_peer_rtt_seconds_count"
    ]
    assert len(rtt) == 2 and all(s.value > 0 for s in rtt)  # one per follower


def test_leekyraft_verify_checks_a_running_cluster(cluster, tmp_path):
    """`leekyraft verify` runs its recorded workload and reports a linearizable verdict."""
    endpoints = ",".join(f"{n.node_id}=127.0.0.1:{n.http_port}" for n in cluster.nodes)
    r = cli(
        cluster, "verify", "--endpoints", endpoints, "--time", "3", "--out", str(tmp_path / "v")
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "linearizable" in (r.stdout + r.stderr).lower()


def test_cli_status_watch_refreshes_the_table(cluster):
    """`status --watch` prints a fresh table each interval (bounded here by --count)."""
    r = cli(cluster, "status", "--watch", "0.2", "--count", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ROLE") == 3
