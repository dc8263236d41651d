"""`leekyraft watch --prefix` across a leader kill: no event missed, none printed twice.

Real ``twistd -n leekyraft`` processes on loopback (3 nodes). The watch is
pointed at the leader first, so killing the leader (SIGKILL) also kills the
node the watch is connected to; it must resume on a survivor from the
revision after the last one it printed. Writes go on during and after the
election. Every process is stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")

#: Puts KEYS[i] = "v<i>" one after the other through the bundled client (finds the leader).
WRITER = """
import sys
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from leeky_twisted.client.library import LeekyClient, parse_address

async def main(reactor, cluster, first, last):
    client = LeekyClient(reactor, [parse_address(a) for a in cluster.split(",")], timeout=30)
    for i in range(int(first), int(last) + 1):
        await client.put(f"w/{i:03d}", f"v{i}")
    client.close()

react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "watch", nodes=3, extra_args=FAST)
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def address(node: NodeProcess) -> str:
    return f"127.0.0.1:{node.client_port}"


def write(cluster_arg: str, first: int, last: int) -> None:
    r = subprocess.run(
        [sys.executable, "-c", WRITER, cluster_arg, str(first), str(last)],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]


class Lines:
    """Collect a process's stdout lines in a thread (no blocking reads in the test)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._lock:
                self.lines.append(raw.decode().rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def join(self) -> None:
        self._thread.join(timeout=10)


def test_watch_prefix_survives_a_leader_kill_without_missing_or_repeating(
    cluster: LocalCluster,
) -> None:
    """41 puts under w/, the leader (and the watch's node) killed after 20 of them."""
    leader = cluster.wait_for_leader()
    others = [n for n in cluster.nodes if n is not leader]
    everyone = ",".join(address(n) for n in [leader, *others])  # the watch starts on the leader
    env = {**os.environ, "LEEKYRAFT_CLUSTER": everyone}

    write(everyone, 0, 0)
    got = subprocess.run(
        [CLI, "get", "w/000", "--json"], capture_output=True, timeout=60, env=env, check=True
    )
    start = json.loads(got.stdout)["mod_revision"]

    watcher = subprocess.Popen(
        [CLI, "--attempt-timeout", "0.5", "watch", "--prefix", "w/", "--from", str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    lines = Lines(watcher)
    try:
        cluster.wait_for("the watch to print w/000", lambda: lines.snapshot(), timeout=30)
        write(everyone, 1, 20)
        cluster.wait_for("20 events", lambda: len(lines.snapshot()) >= 21, timeout=30)
        cluster.kill(leader)  # SIGKILL: the watch's own node goes too
        cluster.wait_for_leader()
        survivors = ",".join(address(n) for n in others)
        write(survivors, 21, 40)
        cluster.wait_for("41 events", lambda: len(lines.snapshot()) >= 41, timeout=60)
        watcher.send_signal(signal.SIGINT)  # Ctrl-C
        watcher.wait(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=10)
        lines.join()
    printed = lines.snapshot()
    stderr = watcher.stderr.read().decode() if watcher.stderr else ""
    assert "Traceback" not in stderr, stderr
    revisions = [int(line.split()[0]) for line in printed]
    assert revisions == sorted(set(revisions)), printed  # in order, none twice
    assert revisions[0] == start
    assert [line.split()[1:] for line in printed] == [
        ["PUT", f"w/{i:03d}", f"v{i}"] for i in range(41)
    ], printed


def test_an_abandoned_lease_expires_across_a_leader_kill_and_a_watch_sees_the_delete(
    cluster: LocalCluster,
) -> None:
    """A 2 s lease with no keepalive: its key is deleted (through the log) even though the
    leader that granted it is killed; the watch prints the delete."""
    leader = cluster.wait_for_leader()
    others = [n for n in cluster.nodes if n is not leader]
    everyone = ",".join(address(n) for n in [leader, *others])
    env = {**os.environ, "LEEKYRAFT_CLUSTER": everyone}

    def cli(*args: str, cluster_arg: str = everyone) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CLI, *args],
            capture_output=True,
            timeout=60,
            env={**env, "LEEKYRAFT_CLUSTER": cluster_arg},
        )

    r = cli("lease", "grant", "2")
    assert r.returncode == 0, r.stderr
    lease = r.stdout.strip().decode()
    assert cli("put", "--lease", lease, "svc/a", "up").returncode == 0
    watcher = subprocess.Popen(
        [CLI, "--attempt-timeout", "0.5", "watch", "--prefix", "svc/", "--from", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env, "LEEKYRAFT_CLUSTER": ",".join(address(n) for n in others)},
        start_new_session=True,
    )
    lines = Lines(watcher)
    try:
        cluster.wait_for("the put", lambda: lines.snapshot(), timeout=30)
        cluster.kill(leader)
        cluster.wait_for_leader()
        survivors = ",".join(address(n) for n in others)
        # ttl 2 s + a new leader's extension (2 election timeouts, 0.6 s) + checks
        cluster.wait_for("the delete", lambda: len(lines.snapshot()) >= 2, timeout=20)
        r = cli("get", "svc/a", cluster_arg=survivors)
        assert r.returncode == 2, r.stdout
        r = cli("lease", "keepalive", lease, "--once", cluster_arg=survivors)
        assert r.returncode == 5 and b"not found" in r.stderr
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(timeout=10)
        lines.join()
    printed = lines.snapshot()
    assert [line.split()[1:] for line in printed] == [["PUT", "svc/a", "up"], ["DELETE", "svc/a"]]


def test_two_lock_commands_take_turns_with_growing_fencing_tokens(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """`leekyraft lock jobs -- CMD` twice: the second runs only after the first ends,
    with a larger token. Each command blocks on its own FIFO until the test releases it."""
    everyone = ",".join(address(n) for n in cluster.nodes)
    env = {**os.environ, "LEEKYRAFT_CLUSTER": everyone}
    log = tmp_path / "held.log"
    procs = {}
    for name in ("a", "b"):
        fifo = tmp_path / f"go-{name}"
        os.mkfifo(fifo)
        script = f'echo {name} "$LEEKYRAFT_LOCK_TOKEN" >> {log}; cat {fifo} > /dev/null'
        procs[name] = subprocess.Popen(
            [CLI, "lock", "jobs", "--", "sh", "-c", script],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        if name == "a":
            cluster.wait_for("a to hold the lock", log.exists, timeout=30)

    def keys() -> list[str]:
        r = subprocess.run([CLI, "ls", "jobs/"], capture_output=True, timeout=60, env=env)
        return r.stdout.decode().split()

    try:
        cluster.wait_for("b to queue behind a", lambda: len(keys()) == 2, timeout=30)
        assert log.read_text().split()[0] == "a"
        assert len(log.read_text().splitlines()) == 1  # b waits while a holds the lock
        (tmp_path / "go-a").write_text("done\n")  # a's command ends: a releases
        assert procs["a"].wait(timeout=30) == 0
        cluster.wait_for("b to hold the lock", lambda: len(log.read_text().splitlines()) == 2)
        (tmp_path / "go-b").write_text("done\n")
        assert procs["b"].wait(timeout=30) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:  # its sh and cat too: they are in its session
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    (a, token_a), (b, token_b) = (line.split() for line in log.read_text().splitlines())
    assert (a, b) == ("a", "b") and int(token_b) > int(token_a) > 0
    assert keys() == []


def test_ctrl_c_on_a_held_lock_releases_it_at_once(cluster: LocalCluster) -> None:
    """`leekyraft lock NAME` holds until Ctrl-C, then revokes its lease before exiting
    (the next waiter does not wait for the ttl)."""
    everyone = ",".join(address(n) for n in cluster.nodes)
    env = {**os.environ, "LEEKYRAFT_CLUSTER": everyone}
    holder = subprocess.Popen(
        [CLI, "lock", "--ttl", "60", "mutex"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    lines = Lines(holder)

    def keys() -> list[str]:
        r = subprocess.run([CLI, "ls", "mutex/"], capture_output=True, timeout=60, env=env)
        return r.stdout.decode().split()

    try:
        cluster.wait_for("the lock", lambda: lines.snapshot(), timeout=30)
        assert keys() == lines.snapshot()
        holder.send_signal(signal.SIGINT)
        holder.wait(timeout=20)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        lines.join()
    assert keys() == []  # released by the Ctrl-C, not left to its 60 s lease
