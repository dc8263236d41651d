"""The lock recipe and `leekyraft lock` (fake cluster on task.Clock)."""

from __future__ import annotations

import io

from test_cli import _cli_cluster
from twisted.internet.defer import CancelledError, Deferred, succeed

from leeky_twisted import cli
from leeky_twisted.client.library import LeekyClient
from leeky_twisted.client.recipes import acquire
from leeky_twisted.statemachine.commands import Range
from leeky_twisted.testing.apifakes import failure_of, result_of


def _client(net):
    return LeekyClient(net.clock, [("10.0.0.1", 7001)], connect=net.connect)


def test_lock_waits_for_its_predecessor_and_tokens_grow():
    """The second contender waits (no polling) until the first releases; tokens increase."""
    net, node = _cli_cluster()
    first = Deferred.fromCoroutine(acquire(_client(net), "jobs", ttl=30))
    net.run(first, limit=1)
    lock1 = result_of(first)
    second = Deferred.fromCoroutine(acquire(_client(net), "jobs", ttl=30))
    net.run(second, limit=5)
    assert not second.called  # waiting on lock1's key

    def ranges():
        return len([c for c in node.calls if c[0] == "read" and isinstance(c[1], Range)])

    reads = ranges()
    net.run(Deferred(), limit=5)  # time passes: the waiter does not poll
    assert ranges() == reads
    net.run(Deferred.fromCoroutine(lock1.release()), limit=1)
    net.run(second, limit=2)
    lock2 = result_of(second)
    assert lock2.token > lock1.token
    keys = [kv.key for kv in node.state_machine.query(Range.prefix("jobs/")).kvs]
    assert keys == [lock2.key]
    net.run(Deferred.fromCoroutine(lock2.release()), limit=1)


def _proposed(node):
    return len([c for c in node.calls if c[0] == "propose"])


def _ranges(node):
    return len([c for c in node.calls if c[0] == "read" and isinstance(c[1], Range)])


def test_an_uncontended_lock_cycle_is_two_log_writes_and_no_read():
    """Once the client's session lease exists, acquire + release is one txn and one
    delete: the same lease carries every acquisition, and the txn reads the queue."""
    net, node = _cli_cluster()
    client = _client(net)
    client.get_kv = None  # a call would fail the acquire
    first = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(first, limit=1)
    lock1 = result_of(first)
    net.run(Deferred.fromCoroutine(lock1.release()), limit=1)
    writes, reads = _proposed(node), _ranges(node)
    second = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(second, limit=1)
    lock2 = result_of(second)
    [kv] = node.state_machine.query(Range.prefix("jobs/")).kvs
    assert lock2.token == kv.create_revision > lock1.token
    net.run(Deferred.fromCoroutine(lock2.release()), limit=1)
    assert (_proposed(node) - writes, _ranges(node) - reads) == (2, 0)
    assert lock2.lease == lock1.lease and node.state_machine.leases() != []
    assert node.state_machine.query(Range.prefix("jobs/")).count == 0


def test_a_session_lease_found_gone_is_replaced_at_the_next_acquire():
    """The session lease expired (revoked here) while no lock was held: the next
    acquire finds it gone, starts a new session and takes the lock."""
    net, node = _cli_cluster()
    client = _client(net)
    got = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(got, limit=1)
    lock1 = result_of(got)
    lock1._stop()  # no keepalive notices the loss before the next acquire
    net.run(Deferred.fromCoroutine(lock1.release()), limit=1)
    net.run(_client(net).lease_revoke(lock1.lease), limit=1)
    again = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(again, limit=1)
    lock2 = result_of(again)
    assert lock2.lease != lock1.lease and lock2.token > lock1.token
    assert [kv.key for kv in node.state_machine.query(Range.prefix("jobs/")).kvs] == [lock2.key]
    net.run(Deferred.fromCoroutine(lock2.release()), limit=1)


def test_one_client_takes_a_lock_name_once_at_a_time():
    """A second acquisition of a name the client holds is refused clearly; other names work."""
    from leeky_twisted.protocol.errors import InvalidRequest

    net, _ = _cli_cluster()
    client = _client(net)
    got = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(got, limit=1)
    lock = result_of(got)
    twice = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    assert "already holds or awaits the lock 'jobs'" in str(failure_of(twice, InvalidRequest).value)
    other = Deferred.fromCoroutine(acquire(client, "other", ttl=30))
    net.run(other, limit=1)
    assert result_of(other).lease == lock.lease
    net.run(Deferred.fromCoroutine(lock.release()), limit=1)
    again = Deferred.fromCoroutine(acquire(client, "jobs", ttl=30))
    net.run(again, limit=1)
    assert result_of(again).token > lock.token


def test_a_lost_session_reports_every_lock_held_through_it():
    """The session lease is revoked: both locks held through it fire ``lost``."""
    net, _ = _cli_cluster()
    client = _client(net)
    locks = []
    for name in ("a", "b"):
        got = Deferred.fromCoroutine(acquire(client, name, ttl=3))
        net.run(got, limit=1)
        locks.append(result_of(got))
    net.run(_client(net).lease_revoke(locks[0].lease), limit=1)
    net.run(locks[1].lost, limit=3)
    assert all("is gone" in result_of(lock.lost) for lock in locks)


def test_a_waiter_whose_key_vanished_does_not_take_the_lock():
    """The waiter's lease is revoked while it waits: it fails instead of holding a keyless lock."""
    net, node = _cli_cluster()
    first = Deferred.fromCoroutine(acquire(_client(net), "jobs", ttl=30))
    net.run(first, limit=1)
    lock1 = result_of(first)
    waiter_client = _client(net)
    second = Deferred.fromCoroutine(acquire(waiter_client, "jobs", ttl=30))
    net.run(second, limit=5)
    assert not second.called
    keys = [kv.key for kv in node.state_machine.query(Range.prefix("jobs/")).kvs]
    [waiting] = [k for k in keys if k != lock1.key]
    net.run(_client(net).lease_revoke(int(waiting.split("/")[1], 16)), limit=1)
    net.run(Deferred.fromCoroutine(lock1.release()), limit=1)
    net.run(second, limit=2)
    assert "vanished" in str(failure_of(second).value)


def test_a_lock_keeps_its_lease_alive_and_reports_it_lost():
    """The holder's lease is renewed every ttl/3; if it is revoked, `lost` fires."""
    net, _ = _cli_cluster()
    got = Deferred.fromCoroutine(acquire(_client(net), "m", ttl=3))
    net.run(got, limit=1)
    lock = result_of(got)
    net.run(Deferred(), limit=4)  # a few keepalives
    assert not lock.lost.called
    other = _client(net)
    net.run(other.lease_revoke(lock.lease), limit=1)
    net.run(lock.lost, limit=3)
    assert "is gone" in result_of(lock.lost)


def test_cli_lock_runs_the_command_with_the_token_then_releases():
    """`lock NAME -- COMMAND`: the command gets the token; the exit code is the command's."""
    net, node = _cli_cluster()
    seen = {}

    def spawn(argv, env):
        seen["argv"], seen["token"] = argv, env["LEEKYRAFT_LOCK_TOKEN"]
        seen["held"] = [kv.key for kv in node.state_machine.query(Range.prefix("db/")).kvs]
        return succeed(3)

    args = cli.build_parser().parse_args(["lock", "db", "--", "true", "x"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_locked(args, _client(net), out, err, spawn=spawn))
    net.run(d, limit=2)
    assert result_of(d) == 3
    assert seen["argv"][1:] == ["x"] and seen["argv"][0].endswith("true")
    assert int(seen["token"]) > 0 and len(seen["held"]) == 1
    assert "holding db/" in err.getvalue()
    assert node.state_machine.query(Range.prefix("db/")).count == 0  # released
    assert node.state_machine.leases() == []  # and its session lease revoked


def test_cli_lock_with_an_unknown_command_is_a_usage_error():
    """A command that does not exist is refused before any lock is taken."""
    net, node = _cli_cluster()
    args = cli.build_parser().parse_args(["lock", "db", "--", "no-such-command-xyz"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, _client(net), out, err))
    net.run(d, limit=1)
    assert result_of(d) == cli.EXIT_USAGE and "command not found" in err.getvalue()
    assert node.state_machine.leases() == []


def test_election_campaign_observe_and_resign():
    """Observers see each leader's proposal once; a resignation hands leadership on."""
    from leeky_twisted.client.recipes import campaign, observe

    net, _ = _cli_cluster()
    seen = []
    watching = observe(_client(net), "leader", seen.append)
    net.run(watching, limit=1)
    first = Deferred.fromCoroutine(campaign(_client(net), "leader", "node-a", ttl=30))
    net.run(first, limit=1)
    second = Deferred.fromCoroutine(campaign(_client(net), "leader", "node-b", ttl=30))
    net.run(second, limit=2)
    assert not second.called
    net.run(Deferred.fromCoroutine(result_of(first).release()), limit=1)
    net.run(second, limit=2)
    net.run(Deferred.fromCoroutine(result_of(second).release()), limit=1)
    assert seen == [None, "node-a", "node-b", None]
    result_of(watching).cancel()


def test_cli_elect_prints_elected_and_resigns_on_exit():
    """`elect NAME PROPOSAL` prints elected: PROPOSAL; leaving resigns (the key goes)."""
    net, node = _cli_cluster()
    client = _client(net)
    args = cli.build_parser().parse_args(["elect", "primary", "db-1"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, client, out, err))
    net.run(d, limit=1)
    assert out.getvalue() == "elected: db-1\n"
    assert node.state_machine.query(Range.prefix("primary/")).kvs[0].value == "db-1"
    d.cancel()  # as if stopped
    net.run(Deferred(), limit=1)
    d.addErrback(lambda f: f.trap(CancelledError))
    assert node.state_machine.query(Range.prefix("primary/")).count == 0


def test_a_release_that_cannot_be_committed_gives_the_session_up():
    """The cluster is gone when a lock is released: the release fails, the session's
    keepalives stop (its lease, and the key, then expire) and the other lock held
    through it is reported lost."""
    from leeky_twisted.protocol.errors import Unavailable

    net, _ = _cli_cluster()
    client = LeekyClient(net.clock, [("10.0.0.1", 7001)], timeout=2, connect=net.connect)
    locks = []
    for name in ("a", "b"):
        got = Deferred.fromCoroutine(acquire(client, name, ttl=30))
        net.run(got, limit=1)
        locks.append(result_of(got))
    session = locks[0].session
    net.drop(("10.0.0.1", 7001))
    released = Deferred.fromCoroutine(locks[0].release())
    net.run(released, limit=5)
    failure_of(released, Unavailable)
    assert "the release of a/" in result_of(locks[1].lost)
    assert session.ended and not session._keepalive.running and client.lock_sessions == {}


def test_a_woken_waiter_reads_the_queue_from_the_nodes_own_state():
    """After its predecessor's delete the waiter reads the queue without a consensus
    read (older keys only go), and takes the lock."""
    net, node = _cli_cluster()
    first = Deferred.fromCoroutine(acquire(_client(net), "jobs", ttl=30))
    net.run(first, limit=1)
    lock1 = result_of(first)
    second = Deferred.fromCoroutine(acquire(_client(net), "jobs", ttl=30))
    net.run(second, limit=2)
    before = len(node.calls)
    net.run(Deferred.fromCoroutine(lock1.release()), limit=1)
    net.run(second, limit=2)
    lock2 = result_of(second)
    assert lock2.token > lock1.token
    reads = [c for c in node.calls[before:] if c[0] == "read" and isinstance(c[1], Range)]
    assert [linearizable for _, _, linearizable, _ in reads] == [False]
    net.run(Deferred.fromCoroutine(lock2.release()), limit=1)


def test_a_queue_read_from_a_node_behind_the_waiters_key_is_read_again_linearizably():
    """A node that has not applied the waiter's own key yet cannot decide: ask again."""
    from leeky_twisted.client.recipes import _queue_after
    from leeky_twisted.protocol.kvresults import RangeResult

    asked = []

    class Client:
        def range_prefix(self, prefix, **options):
            asked.append(options.get("stale", False))
            revision = 5 if options.get("stale") else 9
            return succeed(RangeResult(revision, (), 0, False))

    got = Deferred.fromCoroutine(_queue_after(Client(), "jobs", created=7))
    assert result_of(got).revision == 9 and asked == [True, False]
    asked.clear()
    got = Deferred.fromCoroutine(_queue_after(Client(), "jobs", created=5))
    assert result_of(got).revision == 5 and asked == [True]


class _Process:
    """A spawned command's stand-in: it ends (with 143) only once it is sent TERM."""

    def __init__(self, on_term):
        self.signals = []
        self.on_term = on_term

    def signalProcess(self, name):
        self.signals.append(name)
        self.on_term()


def test_a_signalled_lock_stops_its_command_and_releases_only_after_it_ended():
    """Ctrl-C or SIGTERM while `lock NAME -- CMD` runs: CMD is sent TERM, the lock is
    held until CMD has ended, then released (the next holder never runs beside it)."""
    net, node = _cli_cluster()
    held_when_ended = []
    ended: Deferred = Deferred()

    def end():
        held_when_ended.append(node.state_machine.query(Range.prefix("db/")).count)
        net.clock.callLater(1.0, ended.callback, 143)  # CMD takes a second to stop

    ended.transport = _Process(end)
    args = cli.build_parser().parse_args(["lock", "db", "--", "true"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(
        cli.run_locked(args, _client(net), out, err, spawn=lambda a, e: ended)
    )
    net.run(Deferred(), limit=1)
    assert node.state_machine.query(Range.prefix("db/")).count == 1
    d.cancel()  # what run_until_signalled does on a signal
    net.run(Deferred(), limit=0.5)
    assert ended.transport.signals == ["TERM"] and held_when_ended == [1]
    assert node.state_machine.query(Range.prefix("db/")).count == 1  # CMD still running
    net.run(Deferred(), limit=2)
    assert node.state_machine.query(Range.prefix("db/")).count == 0  # released after
    assert node.state_machine.leases() == []
    assert failure_of(d, CancelledError)
    assert "stopping the command, then releasing the lock" in err.getvalue()


def test_a_signalled_waiter_leaves_the_queue_at_once():
    """Ctrl-C on a `lock` that waits: its queue key goes with its session lease at
    once, so the next contender does not wait for the ttl."""
    net, node = _cli_cluster()
    holder = _client(net)
    first = Deferred.fromCoroutine(acquire(holder, "db", ttl=30))
    net.run(first, limit=1)
    args = cli.build_parser().parse_args(["lock", "--ttl", "30", "db"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_locked(args, _client(net), out, err))
    net.run(Deferred(), limit=1)
    assert node.state_machine.query(Range.prefix("db/")).count == 2  # holder + waiter
    d.cancel()
    net.run(Deferred(), limit=1)
    assert failure_of(d, CancelledError)
    assert node.state_machine.query(Range.prefix("db/")).count == 1  # only the holder


def test_a_lock_whose_keepalives_go_unanswered_is_lost_before_its_lease_can_end():
    """The holder's node goes away (nothing else reachable): no keepalive is answered,
    so `lost` fires ttl seconds after the last answered keepalive was sent (the lease
    may be gone by then), and not before."""
    net, _ = _cli_cluster()
    got = Deferred.fromCoroutine(acquire(_client(net), "m", ttl=3))
    net.run(got, limit=1)
    lock = result_of(got)
    net.run(Deferred(), limit=2.5)  # keepalives answered
    known = lock.session.held_until
    assert known is not None and known > net.clock.seconds() + 1.0
    net.drop(("10.0.0.1", 7001))
    net.run(Deferred(), limit=known - net.clock.seconds() - 0.1)
    assert not lock.lost.called  # the lease is still known live
    net.run(lock.lost, limit=1.0)
    assert "may have expired" in result_of(lock.lost)
    assert net.clock.seconds() <= known + 0.05


def test_cli_lock_stops_the_command_when_its_node_is_unreachable_for_a_ttl():
    """`lock NAME -- CMD` whose only node goes away: CMD is sent TERM once the lease
    may have expired, before another contender can be handed the lock."""
    net, _ = _cli_cluster()
    ended: Deferred = Deferred()
    args = cli.build_parser().parse_args(["lock", "--ttl", "3", "db", "--", "true"])
    out, err = io.StringIO(), io.StringIO()
    client = _client(net)
    d = Deferred.fromCoroutine(cli.run_locked(args, client, out, err, spawn=lambda a, e: ended))

    termed = []
    ended.transport = _Process(
        lambda: (termed.append(net.clock.seconds()), net.clock.callLater(0.1, ended.callback, 143))
    )
    net.run(Deferred(), limit=1)
    [session] = client.lock_sessions.values()
    known = session.held_until
    net.drop(("10.0.0.1", 7001))
    net.run(ended, limit=5)
    assert ended.transport.signals == ["TERM"]
    assert termed[0] <= known + 0.05  # no later than the lease is known live
    assert "may have expired" in err.getvalue() and "stopping the command" in err.getvalue()
    net.run(d, limit=60)
    assert d.called


def _lock_args(*argv):
    parser = cli.build_parser()
    args = parser.parse_args(list(argv))
    cli.check_args(parser, args)
    return args


def test_cli_lock_timeout_bounds_the_wait_and_withdraws_the_waiters_claim():
    """`lock db --timeout 5 -- CMD` while another holds db: after 5 s (not before) it
    says the lock is still held, exits 4 without running CMD, and its queue key and
    session lease are gone, so it does not take the lock when the holder releases."""
    net, node = _cli_cluster()
    holder = _client(net)
    first = Deferred.fromCoroutine(acquire(holder, "db", ttl=30))
    net.run(first, limit=1)
    held = result_of(first)
    spawned = []
    args = _lock_args("lock", "db", "--timeout", "5", "--", "true")
    assert args.program == ["true"] and args.timeout == 5
    out, err = io.StringIO(), io.StringIO()
    waiter = _client(net)
    d = Deferred.fromCoroutine(
        cli.run_locked(args, waiter, out, err, spawn=lambda a, e: spawned.append(a))
    )
    net.run(Deferred(), limit=4.9)
    assert not d.called
    assert node.state_machine.query(Range.prefix("db/")).count == 2  # holder + waiter
    net.run(d, limit=0.5)
    assert result_of(d) == cli.EXIT_TIMEOUT == 4
    assert err.getvalue().splitlines()[-1].startswith("leekyraft: lock db still held after 5 s")
    assert (out.getvalue(), spawned) == ("", [])
    [kv] = node.state_machine.query(Range.prefix("db/")).kvs
    assert kv.key == held.key  # the waiter's claim withdrawn
    assert [lease for lease, _ in node.state_machine.leases()] == [held.lease]
    net.run(Deferred.fromCoroutine(held.release()), limit=1)
    net.run(Deferred(), limit=5)
    assert node.state_machine.query(Range.prefix("db/")).count == 0 and spawned == []


def test_cli_lock_without_timeout_waits_past_the_default_request_timeout():
    """Without --timeout the wait is unbounded (the 10 s default bounds requests only)."""
    net, node = _cli_cluster()
    holder = _client(net)
    first = Deferred.fromCoroutine(acquire(holder, "db", ttl=30))
    net.run(first, limit=1)
    held = result_of(first)
    args = _lock_args("lock", "db", "--", "true")
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(
        cli.run_locked(args, _client(net), out, err, spawn=lambda a, e: succeed(0))
    )
    net.run(Deferred(), limit=25)
    assert not d.called and node.state_machine.query(Range.prefix("db/")).count == 2
    net.run(Deferred.fromCoroutine(held.release()), limit=1)
    net.run(d, limit=2)
    assert result_of(d) == 0


def test_cli_lock_timeout_given_before_the_command_or_the_name_counts_too():
    """`--timeout` anywhere before `--` bounds the wait: before NAME, after NAME (where
    the command's words begin without it), or before `lock`; the command's own options
    after `--` stay the command's."""
    for argv in (
        ("lock", "--timeout", "2", "db", "--", "true"),
        ("--timeout", "2", "lock", "db", "--", "true"),
        ("lock", "db", "--ttl", "7", "--timeout", "2", "--", "true"),
    ):
        args = _lock_args(*argv)
        assert (args.timeout, args.timeout_given, args.program[-1]) == (2, True, "true"), argv
    args = _lock_args("lock", "db", "--", "sleep", "--timeout", "3")
    assert not getattr(args, "timeout_given", False)
    assert args.program == ["sleep", "--timeout", "3"] and args.ttl == 10
    assert _lock_args("lock", "db", "--ttl", "7", "--", "true").ttl == 7
