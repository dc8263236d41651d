"""The blocking (standard library) client against real node processes on loopback.

Each test starts a 3-node ``twistd -n leekyraft`` cluster (fast timers) and
stops every process at the end. Waits are on conditions with deadlines.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.client import blocking
from leeky_twisted.client.blocking import BlockingClient, Event, KeyValue
from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess, free_ports
from leeky_twisted.protocol.errors import Compacted, InvalidRequest, Removed, Unavailable

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "blocking", nodes=3, extra_args=FAST)
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def http(node: NodeProcess) -> str:
    return f"127.0.0.1:{node.http_port}"


def client_of(nodes: list[NodeProcess], **options: float) -> BlockingClient:
    return BlockingClient([http(n) for n in nodes], **options)


class Collector:
    """Iterate a watch in a thread until ``want`` events came (or it fails)."""

    def __init__(self, watch: object, want: int) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.watch = watch
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(want,), daemon=True)
        self._thread.start()

    def _run(self, want: int) -> None:
        try:
            for event in self.watch:  # type: ignore[attr-defined]
                with self._lock:
                    self.events.append(event)
                    if len(self.events) >= want:
                        return
        except BaseException as e:  # reported by the test
            self.error = e

    def count(self) -> int:
        if self.error is not None:
            raise self.error
        with self._lock:
            return len(self.events)

    def join(self) -> None:
        self.watch.close()  # type: ignore[attr-defined]
        self._thread.join(timeout=30)


# ------------------------------------------------------------- wording


def test_a_session_that_cannot_be_opened_says_what_happened_and_what_to_do() -> None:
    """The write was never sent: the error says so plainly (not "outcome unknown"), says
    why (no leader confirmed the client's session in time) and what the user can do."""
    from leeky_twisted.protocol.errors import CommitTimeout

    c = BlockingClient(["127.0.0.1:1"], timeout=2.0)

    def no_answer(*args: object, **kwargs: object) -> object:
        raise CommitTimeout("outcome unknown: no answer within 2 s (answer lost)")

    c._attempt = no_answer  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as info:
        c.put("k", "v")
    message = str(info.value)
    assert message.startswith("the write was not sent to any node, so it was not applied")
    assert "could not open a session" in message and "within 2 s" in message
    assert "outcome unknown" not in message
    assert "leekyraft status" in message and "try again" in message


# --------------------------------------------------------------- no Twisted


def test_importing_the_blocking_client_imports_no_twisted() -> None:
    """In a fresh interpreter where importing twisted (or zope) fails, the module imports."""
    program = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("twisted", "zope", "txjsonrpc", "treq"):
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Refuse())
import leeky_twisted.client.blocking as b
assert not [m for m in sys.modules if m.split(".")[0] in ("twisted", "zope")]
print(b.BlockingClient.__name__)
"""
    r = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, timeout=60, cwd=REPO, check=False
    )
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "BlockingClient"


# ---------------------------------------------------------------- the calls


def test_every_call_against_a_cluster(cluster: LocalCluster) -> None:
    """put/get/cas/delete, ranges with options, txn, leases (and a txn on a lease)."""
    follower = next(n for n in cluster.nodes if n is not cluster.leader())
    with client_of([follower, *cluster.nodes]) as c:  # starts on a follower: it forwards
        c.put("cfg/b", "2")
        c.put("cfg/a", "1")
        assert c.get("cfg/a") == "1" and c.get("nope") is None
        kv = c.get_kv("cfg/a")
        assert isinstance(kv, KeyValue) and kv.version == 1 and kv.value == "1"
        assert c.cas("cfg/a", "1", "one") is True and c.cas("cfg/a", "1", "x") is False
        listing = c.range_prefix("cfg/")
        assert [k.key for k in listing.kvs] == ["cfg/a", "cfg/b"] and listing.count == 2
        limited = c.range("cfg/", "cfg0", limit=1, keys_only=True)
        assert limited.more and limited.kvs[0].value is None and limited.kvs[0].key == "cfg/a"
        assert c.range_prefix("cfg/", count_only=True).count == 2
        lock = {"key": "lock", "target": "version", "op": "==", "value": 0}
        done = c.txn([lock], [{"type": "put", "key": "lock", "value": "me"}])
        assert done.succeeded and done.revision >= listing.revision
        again = c.txn([lock], [], [{"type": "range", "key": "lock"}])
        assert not again.succeeded and again.responses[0].kvs[0].value == "me"  # type: ignore[union-attr]
        assert c.delete("cfg/b") is True and c.delete("cfg/b") is False

        lease = c.lease_grant(30)
        c.put("svc/plain", "p", lease=lease)
        c.txn([], [{"type": "put", "key": "svc/txn", "value": "t", "lease": lease}])
        assert c.lease_keepalive(lease) == 30
        assert c.lease_ttl(lease)["keys"] == ["svc/plain", "svc/txn"]
        assert c.lease_revoke(lease) is True
        assert c.range_prefix("svc/").count == 0
        with pytest.raises(InvalidRequest, match=f"lease {lease} not found"):
            c.txn([], [{"type": "put", "key": "svc/late", "value": "x", "lease": lease}])
        with pytest.raises(InvalidRequest, match="not found"):
            c.lease_keepalive(lease)
        with pytest.raises(InvalidRequest, match="is after its end"):
            c.range("b", "a")
        assert c.get("svc/late") is None
        assert c.status()["revision"] >= done.revision


# ------------------------------------------------------------------ sessions


def test_a_write_whose_answer_is_lost_is_retried_in_its_session_and_applied_once(
    cluster: LocalCluster,
) -> None:
    """The node applies the write but the answer is lost: the retry (same session and
    seq) answers the first outcome; a put is not applied twice, a cas answers True."""
    c = client_of(cluster.nodes)
    real = c._rpc
    lose = {"put", "cas"}

    def lossy(address, method, params, remaining, extra):  # type: ignore[no-untyped-def]
        result = real(address, method, params, remaining, extra)
        if method in lose:
            lose.discard(method)
            raise blocking._Lost("answer lost (test)")
        return result

    c._rpc = lossy  # type: ignore[method-assign]
    c.put("once", "v")
    assert c.cas("once", "v", "w") is True  # the retry gets the cached True, not False
    kv = c.get_kv("once")
    assert kv is not None and (kv.value, kv.version) == ("w", 2)


def test_a_session_the_cluster_does_not_hold_is_replaced_by_a_new_one(
    cluster: LocalCluster,
) -> None:
    """A write in an unknown session is refused (nothing applied); the client opens a new
    session and sends it again, as the Twisted client does."""
    c = client_of(cluster.nodes)
    first = c.open_session()
    assert c.open_session() == first  # once
    c.session_id = "no-such-session"
    c.put("k", "v")
    assert c.session_id not in (None, "no-such-session")
    kv = c.get_kv("k")
    assert kv is not None and kv.version == 1


# ------------------------------------------------------------------ failover


def test_not_leader_answers_are_followed_to_the_leader(tmp_path: Path) -> None:
    """With --no-forward a follower answers "not the leader" (naming the leader's AMP
    address): the client maps it to that node's HTTP address and goes there."""
    with LocalCluster(tmp_path / "nofwd", nodes=3, extra_args=[*FAST, "--no-forward"]) as c:
        c.start()
        leader = c.wait_for_leader()
        followers = [n for n in c.nodes if n is not leader]
        client = client_of([*followers, leader])
        client.put("k", "v")
        assert client.leader == ("127.0.0.1", leader.http_port)
        assert client._client_to_http[f"127.0.0.1:{leader.client_port}"] == client.leader
        assert client.get("k") == "v"


def test_puts_across_a_leader_kill_are_each_applied_exactly_once(cluster: LocalCluster) -> None:
    """60 puts, the leader killed after 20: each key once, at version 1 (nothing applied twice)."""
    leader = cluster.wait_for_leader()
    others = [n for n in cluster.nodes if n is not leader]
    c = client_of([leader, *others], timeout=30)
    for i in range(20):
        c.put(f"p/{i:03d}", f"v{i}")
    assert c.leader == ("127.0.0.1", leader.http_port)
    killer = threading.Thread(target=cluster.kill, args=(leader,))
    killer.start()  # the kill lands while the next puts are on their way
    for i in range(20, 60):
        c.put(f"p/{i:03d}", f"v{i}")
    killer.join(timeout=30)
    assert c.leader in [("127.0.0.1", n.http_port) for n in others]
    listing = client_of(others).range_prefix("p/")
    assert [(k.key, k.value, k.version) for k in listing.kvs] == [
        (f"p/{i:03d}", f"v{i}", 1) for i in range(60)
    ]
    c.close()


def test_watch_resumes_across_a_leader_kill_without_gap_or_repeat(cluster: LocalCluster) -> None:
    """The watch's node (the leader) is killed mid-stream: 40 events, in order, each once."""
    leader = cluster.wait_for_leader()
    others = [n for n in cluster.nodes if n is not leader]
    writer = client_of([leader, *others], timeout=30)
    writer.put("w/start", "s")
    start = writer.get_kv("w/start")
    assert start is not None
    watcher = client_of([leader, *others], connect_timeout=0.5)
    watch = watcher.watch("w/", prefix=True, start_revision=start.mod_revision + 1, poll_wait=2)
    collected = Collector(watch, 40)
    try:
        for i in range(20):
            writer.put(f"w/{i:03d}", f"v{i}")
        cluster.wait_for("20 events", lambda: collected.count() >= 20, timeout=30)
        cluster.kill(leader)
        survivors = client_of(others, timeout=30)
        for i in range(20, 40):
            survivors.put(f"w/{i:03d}", f"v{i}")
        cluster.wait_for("40 events", lambda: collected.count() >= 40, timeout=60)
    finally:
        collected.join()
    events = collected.events
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))
    assert [(e.kind, e.key, e.value) for e in events] == [
        ("put", f"w/{i:03d}", f"v{i}") for i in range(40)
    ]
    assert watch.next_revision == revisions[-1] + 1


def test_a_watch_from_a_compacted_revision_is_a_clear_error(tmp_path: Path) -> None:
    """A revision older than the node's window: Compacted, naming the oldest held."""
    with LocalCluster(tmp_path / "small", nodes=1, extra_args=[*FAST, "--watch-window", "2"]) as c:
        c.start()
        c.wait_for_leader()
        client = client_of(c.nodes)
        for i in range(5):
            client.put(f"k{i}", "v")
        with pytest.raises(Compacted, match="oldest is"):
            client.watch("k", prefix=True, start_revision=1).poll(0)


# --------------------------------------------------------------------- lock


def test_two_blocking_clients_take_the_lock_in_turn_with_growing_tokens(
    cluster: LocalCluster,
) -> None:
    """Two threads, three rounds each: never two holders at once; tokens strictly increase."""
    holders: list[str] = []
    tokens: list[int] = []
    overlaps: list[str] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def contend(name: str) -> None:
        client = client_of(cluster.nodes, timeout=30)
        try:
            for _ in range(3):
                with client.lock("jobs", ttl=5) as held:
                    with guard:
                        if holders:
                            overlaps.append(f"{name} entered while {holders} held it")
                        holders.append(name)
                        tokens.append(held.token)
                    # the protected work: a few round trips while holding the lock
                    for i in range(3):
                        client.put("jobs-data", f"{name}:{held.token}:{i}")
                        assert client.get("jobs-data") == f"{name}:{held.token}:{i}"
                    with guard:
                        holders.remove(name)
        except BaseException as e:
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=contend, args=(n,), daemon=True) for n in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert not overlaps, overlaps
    assert len(tokens) == 6 and tokens == sorted(set(tokens))
    assert client_of(cluster.nodes).range_prefix("jobs/").count == 0  # every lease revoked


def test_a_waiter_long_polls_its_predecessor_once_instead_of_polling(
    cluster: LocalCluster,
) -> None:
    """While the holder works (other writes go on), the waiter sends one watch poll on its
    predecessor's key; the release answers it."""
    holder, waiter = client_of(cluster.nodes), client_of(cluster.nodes)
    polls: list[object] = []
    real = waiter._rpc

    def counted(address, method, params, remaining, extra):  # type: ignore[no-untyped-def]
        if method == "watch":
            polls.append(params[0])
        return real(address, method, params, remaining, extra)

    waiter._rpc = counted  # type: ignore[method-assign]
    held = holder.lock("jobs", ttl=5).acquire()
    got: list[blocking.Lock] = []
    thread = threading.Thread(target=lambda: got.append(waiter.lock("jobs").acquire()))
    thread.start()
    try:
        cluster.wait_for("the waiter's poll", lambda: polls, timeout=30)
        for i in range(10):
            holder.put(f"other/{i}", "x")  # writes elsewhere wake nobody
        assert polls == [held.key]
    finally:
        held.release()
        thread.join(timeout=30)
    assert got and got[0].token > held.token
    got[0].release()
    assert polls == [held.key]


def test_a_lock_wait_ends_at_its_timeout_and_a_lost_lease_is_reported(
    cluster: LocalCluster,
) -> None:
    """acquire(timeout) gives up with TimeoutError and withdraws; a revoked lease sets lost."""
    first, second = client_of(cluster.nodes), client_of(cluster.nodes)
    held = first.lock("jobs", ttl=3).acquire()
    with pytest.raises(TimeoutError, match="lock jobs not acquired in time"):
        second.lock("jobs").acquire(timeout=0.5)
    assert [kv.key for kv in second.range_prefix("jobs/").kvs] == [held.key]  # withdrawn
    second.lease_revoke(held.lease)  # as if the lease expired while the holder slept
    assert held.lost.wait(timeout=10)
    assert f"lease {held.lease} is gone" in held.lost_reason
    held.release()  # nothing left to revoke: no error


def test_a_lock_whose_only_node_is_killed_is_reported_lost_and_passes_on(
    cluster: LocalCluster,
) -> None:
    """The holder reaches one node, which is killed: no keepalive is answered, so
    ``lost`` is set once the lease may have expired, and another client gets the lock."""
    doomed = cluster.nodes[0]
    holder = client_of([doomed], timeout=1.0)
    held = holder.lock("jobs", ttl=2).acquire()
    cluster.kill(doomed)
    assert held.lost.wait(timeout=30)
    assert "may have expired" in held.lost_reason
    other = client_of(cluster.nodes[1:])
    got = other.lock("jobs", ttl=2).acquire(timeout=30)
    assert got.token > held.token
    got.release()
    held.release()  # lost: nothing to do, no error


def test_a_blocking_clients_locks_share_one_session_lease(cluster: LocalCluster) -> None:
    """Two cycles on one client use one lease; the second writes two log entries (a txn
    and a delete: the client's session sequence counts its writes); leaving ``with``
    revokes the session lease."""
    watcher = client_of(cluster.nodes)
    with client_of(cluster.nodes) as c:
        with c.lock("jobs", ttl=5) as first:
            pass
        before = c._seq
        with c.lock("jobs", ttl=5) as second:
            assert second.token > first.token
        assert c._seq - before == 2
        assert second.lease == first.lease
        assert watcher.lease_ttl(first.lease)["keys"] == []
    with pytest.raises(InvalidRequest, match="not found"):
        watcher.lease_ttl(first.lease)


def test_election_campaign_and_leader(cluster: LocalCluster) -> None:
    """campaign holds the election; leader_of names its proposal; release resigns."""
    c = client_of(cluster.nodes)
    assert c.leader_of("primary") is None
    held = c.campaign("primary", "db-1", ttl=5)
    assert c.leader_of("primary") == "db-1"
    held.release()
    assert c.leader_of("primary") is None


# ------------------------------------------------------------------- errors


def test_the_amp_port_instead_of_the_http_port_is_a_clear_error(cluster: LocalCluster) -> None:
    """Pointed at the client (AMP) port: Unavailable that says it is not the HTTP port."""
    node = cluster.nodes[0]
    c = BlockingClient([f"127.0.0.1:{node.client_port}"], timeout=3, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        c.get("k")
    assert time.monotonic() - started < 3 + 2
    message = str(caught.value)
    assert "cannot reach any node" in message
    assert "HTTP" in message and f"127.0.0.1:{node.client_port}" in message


def test_no_node_reachable_within_the_deadline_is_unavailable() -> None:
    """Nothing listens: reads and writes end with Unavailable within the timeout."""
    ports = free_ports(2)
    c = BlockingClient([f"127.0.0.1:{p}" for p in ports], timeout=2, connect_timeout=0.2)
    for call in (lambda: c.get("k"), lambda: c.put("k", "v")):
        started = time.monotonic()
        with pytest.raises(Unavailable, match="cannot reach any node of the cluster"):
            call()
        assert time.monotonic() - started < 2 + 2


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    """No address, a malformed address, a bad timeout, a bad lock name: clear errors."""
    with pytest.raises(ValueError, match="at least one address"):
        BlockingClient([])
    with pytest.raises(ValueError, match="not a HOST:PORT"):
        BlockingClient(["localhost"])
    with pytest.raises(ValueError, match="positive"):
        BlockingClient(["127.0.0.1:1"], timeout=0)
    with pytest.raises(InvalidRequest, match="lock name"):
        BlockingClient(["127.0.0.1:1"]).lock("")


# ---------------------------------------------------------------------- docs


def _docs_example() -> str:
    text = (REPO / "docs" / "coordination.md").read_text(encoding="utf-8")
    section = text.split("## From Python (blocking", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_runs_against_a_cluster(cluster: LocalCluster) -> None:
    """docs/coordination.md's blocking example, pointed at this cluster, prints the KeyValue
    and the watch's first event (then the test stops it, as Ctrl-C would)."""
    program = _docs_example()
    assert len(program.strip().splitlines()) <= 12
    for i, node in enumerate(cluster.nodes):
        program = program.replace(f"127.0.0.1:{7201 + i}", http(node))
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode().rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        cluster.wait_for(
            "the watch's first event",
            lambda: (
                any(line.endswith(" put config/db postgres://db1") for line in lines)
                or proc.poll() is not None
            ),
            timeout=60,
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
        reader.join(timeout=10)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert lines and lines[0].startswith("KeyValue(key='config/db'"), (lines, stderr)
    assert any(line.endswith(" put config/db postgres://db1") for line in lines), (lines, stderr)
    with client_of(cluster.nodes) as c:
        assert c.get("jobs-state/last-run") is not None and c.get("svc/me") == "10.0.0.7:80"


def test_a_removed_node_is_passed_over_at_once_and_not_asked_again() -> None:
    """A node answering -32006 (removed) is left for the next at once, and never asked again;
    with no other node, the call fails at once with Removed, naming the node."""
    removed, live = ("10.0.0.1", 7001), ("10.0.0.2", 7002)
    asked: list[tuple[str, int]] = []

    def rpc(address, method, params, remaining, extra):  # type: ignore[no-untyped-def]
        asked.append(address)
        if address == removed:
            raise blocking._error_from({"code": -32006, "message": "node 1 was removed"})
        return "v"

    c = BlockingClient(["10.0.0.1:7001", "10.0.0.2:7002"], timeout=5)
    c._rpc = rpc  # type: ignore[method-assign]
    started = time.monotonic()
    assert c.get("k") == "v"
    assert c.get("k") == "v"
    assert asked == [removed, live, live]
    only = BlockingClient(["10.0.0.1:7001"], timeout=5)
    only._rpc = rpc  # type: ignore[method-assign]
    with pytest.raises(Removed, match=r"10\.0\.0\.1:7001: node 1 was removed"):
        only.get("k")
    assert time.monotonic() - started < 1.0
