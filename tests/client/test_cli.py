"""Tests for the leekyraft command line: parsing, output, exit codes (no reactor)."""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from leeky_twisted import cli
from leeky_twisted.client.library import LeekyClient, NodeReport, NoLeader, NoLeaderOutcomeUnknown
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    InvalidRequest,
    LeekyError,
    NotLeader,
    Removed,
    Unavailable,
)
from leeky_twisted.statemachine.commands import Get, Put, RegisterSession, encode_command
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode


class FakeClient:
    """Answers from a dict; ``error`` makes every call fail with it. Records calls."""

    def __init__(self, data=None, error=None, reports=None):
        self.data = dict(data or {})
        self.error = error
        self.reports = reports or []
        self.calls = []

    def _answer(self, call, value):
        self.calls.append(call)
        return fail(self.error) if self.error else succeed(value)

    def put(self, key, value):
        self.data[key] = value
        return self._answer(("put", key, value), None)

    def get(self, key, stale=False):
        return self._answer(("get", key, stale), self.data.get(key))

    def delete(self, key):
        return self._answer(("delete", key), self.data.pop(key, None) is not None)

    def cas(self, key, expected, new):
        swapped = self.data.get(key) == expected
        if swapped:
            self.data[key] = new
        return self._answer(("cas", key, expected, new), swapped)

    def status_all(self):
        return self._answer(("status_all",), self.reports)

    def query(self, request):
        return self._answer(("query", request), None)


def run(argv, client):
    """Parse argv, run it against client; return (exit code, stdout, stderr)."""
    args = cli.build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, client, out, err))
    codes = []
    d.addBoth(codes.append)
    assert codes, "run_command did not finish"
    return codes[0], out.getvalue(), err.getvalue()


def test_put_prints_the_original_success_line():
    """put joins the VALUE words with spaces and prints the original's message."""
    client = FakeClient()
    argv = ["put", "pizzatoppings", "peporoni", "peppr", "cheddar", "anchoves", "onn", "it"]
    code, out, err = run(argv, client)
    assert code == 0 and err == ""
    assert out == 'Success! Set "pizzatoppings" to: "peporoni peppr cheddar anchoves onn it"\n'
    assert client.data == {"pizzatoppings": "peporoni peppr cheddar anchoves onn it"}


def test_get_prints_the_value():
    """get prints the value alone on stdout."""
    code, out, _ = run(["get", "k"], FakeClient({"k": "hello world"}))
    assert (code, out) == (0, "hello world\n")


def test_get_stale_flag_reaches_the_client():
    """get --stale asks for a stale read."""
    client = FakeClient({"k": "v"})
    run(["get", "--stale", "k"], client)
    assert client.calls == [("get", "k", True)]


def test_get_of_an_unknown_key_exits_2():
    """An unknown key is a message on stderr and exit code 2."""
    code, out, err = run(["get", "nope"], FakeClient())
    assert (code, out, err) == (2, "", 'leekyraft: key "nope" not found\n')


def test_delete_reports_whether_the_key_existed():
    """delete prints Deleted, or exits 2 when there was nothing to delete."""
    assert run(["delete", "k"], FakeClient({"k": "v"}))[:2] == (0, 'Deleted "k"\n')
    assert run(["delete", "k"], FakeClient())[0] == 2


def test_cas_swaps_or_exits_6():
    """cas prints success when swapped, and exits 6 when the value differed."""
    client = FakeClient({"k": "a"})
    assert run(["cas", "k", "a", "b"], client)[:2] == (0, 'Success! Set "k" to: "b"\n')
    code, _, err = run(["cas", "k", "a", "c"], client)
    assert code == 6 and err == 'leekyraft: not set: "k" was not "a"\n'


def test_cas_absent_expects_an_unset_key():
    """cas --absent KEY NEW sends expected=None."""
    client = FakeClient()
    assert run(["cas", "--absent", "k", "v"], client)[0] == 0
    assert client.calls == [("cas", "k", None, "v")]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (Unavailable("cannot reach any node of the cluster (h:1)"), 3),
        (CommitTimeout(), 4),
        (InvalidRequest("value is 2000000 bytes; the limit is 1048576"), 5),
        (Removed("127.0.0.1:23013: node 3 was removed from the cluster: use another node"), 5),
        (LeekyError("internal error: boom"), 1),
    ],
)
def test_errors_are_one_line_on_stderr_with_distinct_exit_codes(error, code):
    """Each failure kind prints one line on stderr and exits with its own code."""
    result, out, err = run(["put", "k", "v"], FakeClient(error=error))
    assert result == code
    assert out == ""
    assert err == f"leekyraft: {error}\n"
    assert err.count("\n") == 1


def test_exit_code_for_maps_the_error_types():
    """exit_code_for gives the documented codes."""
    assert cli.exit_code_for(Unavailable()) == cli.EXIT_UNREACHABLE == 3
    assert cli.exit_code_for(CommitTimeout()) == cli.EXIT_TIMEOUT == 4
    assert cli.exit_code_for(InvalidRequest()) == cli.EXIT_REFUSED == 5
    assert cli.exit_code_for(Removed()) == cli.EXIT_REFUSED
    assert cli.exit_code_for(RuntimeError()) == cli.EXIT_ERROR == 1
    assert cli.exit_code_for(NoLeader("no leader")) == cli.EXIT_NO_LEADER == 7
    assert cli.exit_code_for(NoLeaderOutcomeUnknown("no leader")) == cli.EXIT_TIMEOUT


REPORTS = [
    NodeReport(
        "127.0.0.1:7001",
        {
            "id": "1",
            "role": "leader",
            "term": 3,
            "commit_index": 10,
            "applied_index": 10,
            "leader": "1",
            "revision": 9,
        },
    ),
    NodeReport(
        "127.0.0.1:7002",
        {
            "id": "2",
            "role": "follower",
            "term": 3,
            "commit_index": 9,
            "applied_index": 8,
            "leader": "1",
        },
    ),
    NodeReport("127.0.0.1:7003", None, "Connection was refused"),
]


def test_status_table_lists_every_node():
    """The status table has a header, one row per node and a note per unreachable node."""
    assert cli.format_status_table(REPORTS).splitlines() == [
        "ID  ADDRESS         ROLE         TERM  COMMIT  APPLIED  LEADER  REVISION",
        "1   127.0.0.1:7001  leader       3     10      10       1       9",
        "2   127.0.0.1:7002  follower     3     9       8        1       -",
        "?   127.0.0.1:7003  unreachable  -     -       -        -       -",
        "127.0.0.1:7003: Connection was refused",
    ]


def test_status_json_lists_statuses_and_errors():
    """status --json prints every node's status or error."""
    code, out, _ = run(["status", "--json"], FakeClient(reports=REPORTS))
    assert code == cli.EXIT_UNREACHABLE  # node 3 did not answer
    items = json.loads(out)
    assert items[0] == {"address": "127.0.0.1:7001", "status": REPORTS[0].status}
    assert items[2] == {"address": "127.0.0.1:7003", "error": "Connection was refused"}


def test_status_with_no_node_answering_exits_3():
    """When no node answers status, the exit code says the cluster is unreachable."""
    code, out, err = run(["status"], FakeClient(reports=[REPORTS[2]]))
    assert code == 3
    assert "unreachable" in out
    assert err == "leekyraft: no node of the cluster answered\n"


def test_status_with_no_leader_exits_7_and_says_why():
    """A node answers but none knows a leader (no majority up): the table is shown and the
    exit code says so (7, as for a write that finds no leader), for scripts that wait on
    `leekyraft status`."""
    candidate = NodeReport(
        "127.0.0.1:7002", {"id": "2", "role": "candidate", "term": 7, "leader": None}
    )
    code, out, err = run(["status"], FakeClient(reports=[candidate, REPORTS[2]]))
    assert code == cli.EXIT_NO_LEADER == 7
    assert "candidate" in out
    assert err == (
        "leekyraft: no leader: 1 of 2 nodes answered, and none knows a leader "
        "(an election needs a majority of the voters up)\n"
    )
    assert run(["status"], FakeClient(reports=REPORTS[:2]))[0] == 0


def test_status_with_some_node_not_answering_exits_3_after_the_whole_table():
    """One node of three does not answer: every row is still printed, a line names the
    silent node, and the exit code is 3 (as when none answers) for scripts and health
    checks; with every node answering it is 0."""
    code, out, err = run(["status"], FakeClient(reports=REPORTS))
    assert code == cli.EXIT_UNREACHABLE == 3
    assert out == cli.format_status_table(REPORTS) + "\n"
    assert err == "leekyraft: 1 of 3 nodes did not answer: 127.0.0.1:7003\n"
    code, out, err = run(["status", "--json"], FakeClient(reports=REPORTS))
    assert code == 3 and len(json.loads(out)) == 3
    assert err == "leekyraft: 1 of 3 nodes did not answer: 127.0.0.1:7003\n"
    assert run(["status"], FakeClient(reports=REPORTS[:2])) == (
        0,
        cli.format_status_table(REPORTS[:2]) + "\n",
        "",
    )


def test_status_names_a_node_removed_from_the_cluster():
    """The only node answering was removed: status says so instead of only "no leader"."""
    removed = NodeReport(
        "127.0.0.1:7003", {"id": "3", "role": "removed", "term": 7, "leader": None}
    )
    code, out, err = run(["status"], FakeClient(reports=[removed]))
    assert code == cli.EXIT_NO_LEADER  # nodes answered, none knows a leader
    assert "removed" in out
    assert err.startswith("leekyraft: removed from the cluster: node 3 (stop it, or add it back")


def test_status_without_a_leader_names_a_node_that_started_empty():
    """Two voters up, one wiped: "a majority of the voters up" holds, so say why none leads."""
    up = NodeReport("127.0.0.1:7001", {"id": "1", "role": "follower", "leader": None})
    wiped = NodeReport(
        "127.0.0.1:7002", {"id": "2", "role": "follower", "leader": None, "abstaining": True}
    )
    code, _, err = run(["status"], FakeClient(reports=[up, wiped]))
    assert code == cli.EXIT_NO_LEADER
    assert err.splitlines()[1] == cli.ABSTAINING_NOTE.format(nodes="2")
    assert "node 2 started with empty storage" in err and "lost its quorum" in err


def test_status_says_when_a_nodes_executor_does_not_answer():
    """Its row (role, commit, applied) looks healthy: a line under the table says otherwise."""
    leader = NodeReport(
        "127.0.0.1:7001",
        {
            "id": "1",
            "role": "leader",
            "leader": "1",
            "executor_reachable": False,
            "executor_lag": 2,
            "executor_error": "status: Connection refused",
        },
    )
    fine = NodeReport("127.0.0.1:7002", {"id": "2", "leader": "1", "executor_reachable": True})
    code, out, _ = run(["status"], FakeClient(reports=[leader, fine]))
    assert code == 0
    assert out.splitlines()[-1] == (
        "127.0.0.1:7001: node 1's executor does not answer (status: Connection refused); "
        "2 committed entries wait for it"
    )
    assert "7002" not in out.splitlines()[-1]


def test_cluster_comes_from_option_then_environment_then_default(tmp_path, monkeypatch):
    """--cluster wins over LEEKYRAFT_CLUSTER, which wins over the local default."""
    monkeypatch.chdir(tmp_path)  # no ./leekyraft-local here
    parser = cli.build_parser()
    env = {"LEEKYRAFT_CLUSTER": "10.0.0.1:1,10.0.0.2:2"}
    args = parser.parse_args(["--cluster", "h:9", "get", "k"])
    assert cli.cluster_from(args, env) == [("h", 9)]
    args = parser.parse_args(["get", "k"])
    assert cli.cluster_from(args, env) == [("10.0.0.1", 1), ("10.0.0.2", 2)]
    assert cli.cluster_from(args, {}) == [("127.0.0.1", p) for p in range(7001, 7006)]


def test_without_a_cluster_option_the_commands_use_the_local_clusters_real_size(
    tmp_path, monkeypatch
):
    """A 3-node ./leekyraft-local is what status (and every command) probes, not 7001-7005."""
    from leeky_twisted.ops.localcluster import LocalCluster

    monkeypatch.chdir(tmp_path)
    LocalCluster(tmp_path / "leekyraft-local", 3, base_port=8000)
    args = cli.build_parser().parse_args(["status"])
    assert cli.cluster_from(args, {}) == [("127.0.0.1", p) for p in (8001, 8002, 8003)]
    env = {"LEEKYRAFT_CLUSTER": "10.0.0.1:1"}
    assert cli.cluster_from(args, env) == [("10.0.0.1", 1)]  # the environment still wins


def test_connection_options_may_follow_the_command():
    """--cluster, --timeout and the TLS options work after the command too (as etcdctl's
    flags do); given there they win, not given there the value before the command stands."""
    parser = cli.build_parser()
    args = parser.parse_args(["get", "k", "--cluster", "h:9", "--timeout", "3"])
    assert (args.cluster, args.timeout, args.key) == ("h:9", 3.0, "k")
    args = parser.parse_args(["--cluster", "a:1", "--timeout", "5", "get", "k"])
    assert (args.cluster, args.timeout) == ("a:1", 5.0)
    args = parser.parse_args(["--timeout", "5", "status", "--cluster", "b:2"])
    assert (args.cluster, args.timeout) == ("b:2", 5.0)
    args = parser.parse_args(["put", "k", "v", "--tls-dir", "d", "--tls-name", "n"])
    assert (args.tls_dir, args.tls_name, args.value) == ("d", "n", ["v"])
    args = parser.parse_args(["get", "k"])
    assert (args.cluster, args.timeout) == (None, cli.DEFAULT_TIMEOUT)


def test_a_refused_connection_says_what_to_check():
    """When nothing listens where the client looked, the error says so and how to fix it."""
    refused = Unavailable(
        "cannot reach any node of the cluster (127.0.0.1:1): "
        "connection refused (nothing listens on that port)"
    )
    code, _, err = run(["get", "k"], FakeClient(error=refused))
    assert code == 3
    assert err.splitlines()[1] == cli.UNREACHABLE_HINT
    assert "leekyraft local" in cli.UNREACHABLE_HINT and "--cluster" in cli.UNREACHABLE_HINT


def test_parse_cluster_rejects_garbage():
    """A malformed or empty cluster list is a ValueError."""
    for text in ["", ",", "host", "h:1,nope"]:
        with pytest.raises(ValueError):
            cli.parse_cluster(text)


def test_parse_cluster_says_a_url_is_not_an_address():
    """etcdctl takes URLs (http://host:2379): the refusal says what to give instead."""
    with pytest.raises(ValueError, match=r"is a URL: give HOST:PORT without http://"):
        cli.parse_cluster("127.0.0.1:7001,http://127.0.0.1:7002/")
    with pytest.raises(ValueError, match=r"e\.g\. 127\.0\.0\.1:7002$"):
        cli.parse_cluster("http://127.0.0.1:7002/")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["put", "k"],
        ["get"],
        ["frob", "k"],
        ["cas", "k", "only-one"],
        ["cas", "--absent", "k", "a", "b"],
        ["--timeout", "0", "get", "k"],
        ["--cluster", "nope", "get", "k"],
    ],
)
def test_usage_errors_exit_64(argv, capsys, monkeypatch):
    """Bad command lines exit with EX_USAGE (64), not 2, which means 'not found'."""
    monkeypatch.delenv("LEEKYRAFT_CLUSTER", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 64
    assert "error:" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    """--help lists every exit code."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for line in [
        "2   key not found",
        "3   cluster unreachable",
        "4   timed out",
        "5   input",
        "7   no leader",
        "64  bad command line or bad input",
        "66  an input file",
    ]:
        assert line in help_text


def _run_on(net, argv, client):
    """Like run, against a LeekyClient on a FakeNetwork (the clock moves until it ends)."""
    args = cli.build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, client, out, err))
    net.run(d, limit=30)
    codes = []
    d.addBoth(codes.append)
    assert codes, "run_command did not finish"
    return codes[0], out.getvalue(), err.getvalue()


def _cli_cluster(max_sessions=100):
    net = FakeNetwork()
    node = FakeRaftNode("1", "10.0.0.1:7001")
    node.state_machine = KeyValueStateMachine(max_sessions=max_sessions)
    net.serve(("10.0.0.1", 7001), node, forward=False)
    return net, node


def test_put_in_an_expired_session_opens_a_new_one_and_succeeds():
    """The CLI's client meets SessionExpired, registers a new session and the put succeeds."""
    net, node = _cli_cluster()
    client = LeekyClient(
        net.clock, [("10.0.0.1", 7001)], session_id="7.expired", connect=net.connect
    )
    code, out, err = _run_on(net, ["put", "k", "v"], client)
    assert (code, err) == (0, "")
    assert out == 'Success! Set "k" to: "v"\n'
    assert client.session_id != "7.expired"
    assert node.state_machine.session_ids() == [client.session_id]


def test_put_whose_outcome_became_unknown_when_the_session_expired_exits_4():
    """Applied, answer lost, session evicted: exit 4 with "outcome unknown", applied once."""
    net, node = _cli_cluster(max_sessions=1)
    client = LeekyClient(net.clock, [("10.0.0.1", 7001)], connect=net.connect)
    net.run(client.open_session())
    node.lose_answers = 1
    original = node.propose

    def propose(command, timeout):  # evict the session right after the write is applied
        d = original(command, timeout)
        node.index += 1
        node.state_machine.apply(node.index, encode_command(RegisterSession("other")))
        node.propose = original
        return d

    node.propose = propose
    code, out, err = _run_on(net, ["put", "k", "v"], client)
    assert code == cli.EXIT_TIMEOUT == 4
    assert "outcome unknown" in err and out == ""
    assert node.state_machine.query(Get("k")) == "v"


def _put_args(*argv):
    return cli.build_parser().parse_args(["put", *argv])


def test_put_dash_reads_the_value_from_standard_input():
    """`put KEY -` takes the value, byte for byte, from standard input."""
    value = "line one\nline two\n"
    assert cli.put_value(_put_args("k", "-"), io.BytesIO(value.encode())) == value


def test_put_file_reads_the_value_from_a_file(tmp_path):
    """`put KEY --file F` takes a 1 MiB value from a file."""
    path = tmp_path / "value"
    path.write_bytes(b"x" * (1 << 20))
    assert cli.put_value(_put_args("k", "--file", str(path)), io.BytesIO()) == "x" * (1 << 20)


def test_put_value_words_are_still_joined():
    """VALUE words are joined with spaces, and a lone - only means stdin when alone."""
    assert cli.put_value(_put_args("k", "a", "-", "b"), io.BytesIO(b"unused")) == "a - b"


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["k"], b"", "needs a VALUE"),
        (["k", "v", "--file", "f"], b"", "not both"),
        (["k", "-"], b"\xff\xfe", "not UTF-8"),
    ],
)
def test_put_value_refuses_bad_combinations(argv, stdin, message):
    """No value, words with --file, or bytes that are not UTF-8: a clear ValueError."""
    with pytest.raises(ValueError, match=message):
        cli.put_value(_put_args(*argv), io.BytesIO(stdin))


def test_put_from_stdin_through_main_reaches_the_client(monkeypatch, capsys):
    """main() reads `put k -` from stdin before it connects; a missing file exits 66 (EX_NOINPUT)
    in one line."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xff")))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--cluster", "127.0.0.1:1", "put", "k", "-"])
    assert exit_info.value.code == 64
    assert "not UTF-8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--cluster", "127.0.0.1:1", "put", "k", "--file", "/nonexistent/value"])
    assert exit_info.value.code == cli.EXIT_NO_INPUT
    err = capsys.readouterr().err
    assert err.startswith("leekyraft: put: cannot read /nonexistent/value:")
    assert err.count("\n") == 1


def test_put_does_not_echo_a_huge_value_in_full():
    """The success line cuts a long value with an ellipsis and gives its size in bytes."""
    value = "é" * 600_000
    code, out, _ = run(["put", "big", value], FakeClient())
    assert code == 0
    assert out == f'Success! Set "big" to: "{"é" * cli.MAX_ECHO}…" (1200000 bytes)\n'
    _, short, _ = run(["put", "k", "x" * cli.MAX_ECHO], FakeClient())
    assert short == f'Success! Set "k" to: "{"x" * cli.MAX_ECHO}"\n'


@pytest.mark.parametrize("command", ["chaos", "verify"])
def test_chaos_and_verify_help_name_the_leekyraft_command(command, capsys):
    """`leekyraft chaos --help` says `leekyraft chaos`, not `python -m ...`."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: leekyraft {command} ")
    assert "python -m" not in help_text


def test_put_dash_on_a_terminal_says_how_to_end_the_value():
    """Reading the value from a terminal, put first says to end it with Ctrl-D."""

    class Terminal(io.BytesIO):
        def isatty(self):
            return True

    err = io.StringIO()
    assert cli.put_value(_put_args("k", "-"), Terminal(b"typed\n"), err) == "typed\n"
    assert "Ctrl-D" in err.getvalue()
    quiet = io.StringIO()
    cli.put_value(_put_args("k", "-"), io.BytesIO(b"piped"), quiet)
    assert quiet.getvalue() == ""


class _SignalReactor(Clock):
    """A Clock that runs callFromThread calls at once (a signal handler's path)."""

    def callFromThread(self, f, *args):
        f(*args)


def test_a_signal_cancels_the_command_which_cleans_up_and_exits_128_plus_it():
    """Ctrl-C or SIGTERM does not stop the reactor under the command: the command is
    cancelled where it waits, its finally blocks run, and the exit code is 128 + N.
    The previous handlers come back afterwards."""
    import signal

    reactor = _SignalReactor()
    cleaned = []
    forever: Deferred = Deferred()

    async def command():
        try:
            await forever
        finally:
            cleaned.append(True)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    d = Deferred.fromCoroutine(cli.run_until_signalled(reactor, command()))
    reactor.advance(0)  # the handlers go in on the reactor's first turn
    handler = signal.getsignal(signal.SIGTERM)
    assert handler is not before and signal.getsignal(signal.SIGINT) is handler
    handler(signal.SIGTERM, None)
    assert d.called and d.result == 128 + signal.SIGTERM and cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_put_with_no_leader_exits_7_saying_it_was_not_applied():
    """`leekyraft put` while no node knows a leader: no "outcome unknown", but "no leader",
    "not applied", a hint, and exit 7 (nothing was written: safe to retry later)."""
    net = FakeNetwork()
    addresses = [("10.0.0.1", 7001), ("10.0.0.2", 7002), ("10.0.0.3", 7003)]
    for n, address in enumerate(addresses, 1):
        node = FakeRaftNode(str(n), f"{address[0]}:{address[1]}")
        node.not_leader = NotLeader()  # no leader known: the majority is gone
        net.serve(address, node, forward=False)
    client = LeekyClient(net.clock, addresses, timeout=3.0, connect=net.connect)
    code, out, err = _run_on(net, ["put", "k", "v"], client)
    assert (code, out) == (cli.EXIT_NO_LEADER, "")
    assert err.splitlines() == [
        "leekyraft: no leader: 2 nodes answered, and none knew a leader within 3 s (the"
        " cluster has lost its majority of voters, or is electing a leader); the write was"
        " not sent to any node, so it was not applied",
        cli.NO_LEADER_HINT,
    ]


# ------------------------------------------------------------------ input errors: one rule
# 64 (EX_USAGE): the command line or its input is wrong; 66 (EX_NOINPUT): an input file
# cannot be read; 5: the cluster refused what was sent.


def main_exit(argv, capsys, monkeypatch, stdin=b""):
    """Run cli.main(argv) with no cluster configured; return (exit code, stderr)."""
    monkeypatch.delenv("LEEKYRAFT_CLUSTER", raising=False)
    monkeypatch.delenv("LEEKYRAFT_TLS_DIR", raising=False)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_put_file_that_does_not_exist_exits_66(tmp_path, capsys, monkeypatch):
    """put --file F with no F: EX_NOINPUT (66), one line naming the file, nothing sent."""
    missing = tmp_path / "missing.txt"
    code, err = main_exit(["put", "k", "--file", str(missing)], capsys, monkeypatch)
    assert code == cli.EXIT_NO_INPUT == 66
    assert err == f"leekyraft: put: cannot read {missing}: No such file or directory\n"


def test_put_file_that_is_not_utf8_exits_64(tmp_path, capsys, monkeypatch):
    """put --file F whose bytes are not UTF-8 text: bad input, 64."""
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\xff\xfe")
    code, err = main_exit(["put", "k", "--file", str(bad)], capsys, monkeypatch)
    assert code == cli.EXIT_USAGE
    assert f"the value read from {bad} is not UTF-8 text" in err


def test_txn_file_that_does_not_exist_exits_66(tmp_path):
    """txn F with no F: 66, as put --file; nothing is sent."""
    client = FakeClient()
    missing = tmp_path / "lock.json"
    code, out, err = run(["txn", str(missing)], client)
    assert (code, out, client.calls) == (cli.EXIT_NO_INPUT, "", [])
    assert err == f"leekyraft: txn: cannot read {missing}: No such file or directory\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "the transaction is not valid JSON"),
        (b"[]", "a transaction is a JSON object"),
        (b'{"success": {}}', "the transaction's success must be a list"),
        (b"\xff", "is not UTF-8 text"),
        (b'{"success": [{"type": "explode", "key": "k"}]}', "operation type must be"),
        (b'{"success": [{"type": "put", "value": "v"}]}', "a put operation is"),
        (b'{"success": [{"type": "put", "key": "", "value": "v"}]}', "key must not be empty"),
        (b'{"success": [{"type": "delete", "key": 7}]}', "key must be a string"),
        (b'{"failure": ["put"]}', "each failure operation must be an object"),
        (b'{"compare": [{"key": "k", "target": "version", "op": ">", "value": 1.5}]}', "integer"),
        (b'{"compare": [{"key": "k", "target": "mod", "op": "==", "value": -1}]}', "from 0 to"),
        (b'{"compare": [{"key": "k", "target": "size", "op": "==", "value": 1}]}', "target"),
        (b'{"compare": [{"key": "k", "target": "value", "op": "<=", "value": "a"}]}', "op must"),
        (b'{"compare": [{"key": "k", "target": "value", "op": "==", "value": 1}]}', "a string"),
        (b'{"compare": [{"key": "k", "op": "==", "value": 1}]}', "a compare is an object"),
        (b'{"success": [{"type": "range", "start": "b", "end": "a"}]}', "is after its end"),
        (b'{"success": [{"type": "range", "key": "a", "limit": true}]}', "limit must be"),
        (b'{"success": [{"type": "range", "key": "a", "prefix": "a"}]}', "names one of"),
    ],
)
def test_txn_with_a_bad_document_exits_64(tmp_path, content, message):
    """A transaction file that is read but is not a transaction: bad input, 64."""
    path = tmp_path / "txn.json"
    path.write_bytes(content)
    client = FakeClient()
    code, _, err = run(["txn", str(path)], client)
    assert (code, client.calls) == (cli.EXIT_USAGE, [])
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lease", "grant", "0"], "the ttl is a number of seconds from 1 to 1000000"),
        (["lease", "grant", "2000000"], "the ttl is a number of seconds from 1 to 1000000"),
        (["lease", "revoke", "0"], "a lease id is a number from 1 to 9223372036854775807"),
        (["lease", "ttl", str(2**63)], "a lease id is a number from 1 to 9223372036854775807"),
    ],
)
def test_lease_numbers_out_of_range_exit_64_before_anything_is_sent(argv, message):
    """A ttl or lease id the cluster would refuse is refused here, in a user's words."""
    client = FakeClient()
    code, _, err = run(argv, client)
    assert (code, client.calls) == (cli.EXIT_USAGE, [])
    assert message in err
    assert "LeaseGrant" not in err and "malformed" not in err


def test_lease_revoke_of_an_unknown_lease_exits_2_on_stderr():
    """Revoking a lease that is gone: exit 2 (not found), the message on stderr."""

    class Leases(FakeClient):
        def lease_revoke(self, lease):
            return self._answer(("lease_revoke", lease), False)

    code, out, err = run(["lease", "revoke", "7"], Leases())
    assert (code, out) == (cli.EXIT_NOT_FOUND, "")
    assert err == "leekyraft: lease 7 not found (expired or revoked)\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "k", "--prefix", "--limit", "-1"],
        ["ls", "--limit", str(10**10)],
        ["watch", "k", "--from", str(2**63)],
        ["put", "k", "v", "--lease", "0"],
        ["bench", "--clients", "0"],
        ["bench", "--seconds", "0"],
        ["lock", "--ttl", "0", "deploy"],
        ["elect", "scheduler", "--ttl", "2000000"],
    ],
)
def test_out_of_range_numbers_exit_64_with_a_message(argv, capsys, monkeypatch):
    """Every numeric option the cluster would refuse exits 64 with a line saying why."""
    code, err = main_exit(argv, capsys, monkeypatch)
    assert code == cli.EXIT_USAGE
    assert "error:" in err or "must" in err


def test_a_tls_folder_that_does_not_exist_exits_66(tmp_path, capsys, monkeypatch):
    """--tls-dir naming no folder: the input cannot be read, 66."""
    code, err = main_exit(["--tls-dir", str(tmp_path / "nope"), "get", "k"], capsys, monkeypatch)
    assert code == cli.EXIT_NO_INPUT
    assert f"cannot read --tls-dir {tmp_path / 'nope'}: No such file or directory" in err


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (
            {
                "ok": False,
                "error": "no node '9': this cluster's nodes are 1, 2, 3",
                "kind": "unknown-node",
            },
            64,
        ),
        ({"ok": False, "error": "no node is leader at the moment", "kind": "no-leader"}, 7),
        ({"ok": False, "error": "node 2 is not running", "kind": "state"}, 1),
    ],
)
def test_local_actions_exit_with_the_same_rule(monkeypatch, reply, code):
    """`local kill 9` (no such node) is bad input, 64; `kill leader` with none is 7."""
    import argparse

    monkeypatch.setattr(
        "leeky_twisted.ops.localcontrol.send_request", lambda folder, action, node: reply
    )
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(action="kill", node="9", dir="d")
    assert cli.run_local_action(args, out, err) == code
    assert err.getvalue() == f"leekyraft: local kill: {reply['error']}\n"


MEMBERS = [
    {
        "id": "1",
        "raft": "leader",
        "gossip": None,
        "incarnation": None,
        "addresses": {"peer": "127.0.0.1:7101", "client": "127.0.0.1:7001"},
        "this_node": True,
        "reachable": True,
        "last_contact": None,
    },
    {
        "id": "2",
        "raft": "voter",
        "gossip": None,
        "incarnation": None,
        "addresses": {"peer": "127.0.0.1:7102", "client": "127.0.0.1:7002"},
        "this_node": False,
        "reachable": True,
        "last_contact": 0.04,
    },
    {
        "id": "3",
        "raft": "voter",
        "gossip": None,
        "incarnation": None,
        "addresses": {"peer": "127.0.0.1:7103"},
        "this_node": False,
        "reachable": False,
        "last_contact": 42.3,
    },
]


def test_members_shows_a_dead_voter_as_unreachable_with_how_long():
    """The table says which voter the leader has not heard from, and for how long."""
    assert cli.format_members(MEMBERS, as_json=False).splitlines() == [
        "ID  RAFT    CONTACT               GOSSIP  INCARNATION  PEER            CLIENT",
        "1   leader  this node             -       -            127.0.0.1:7101  127.0.0.1:7001",
        "2   voter   ok (0.0 s ago)        -       -            127.0.0.1:7102  127.0.0.1:7002",
        "3   voter   UNREACHABLE for 42 s  -       -            127.0.0.1:7103  -",
        "(as seen by node 1, the leader)",
    ]


def test_members_json_keeps_its_shape_and_adds_the_contact_fields():
    """--json prints the nodes' list as it is: the old fields unchanged, the new ones added."""
    items = json.loads(cli.format_members(MEMBERS, as_json=True))
    assert items == MEMBERS
    assert {"id", "raft", "gossip", "incarnation", "addresses"} < set(items[0])


def test_members_seen_by_a_follower_says_whose_view_it_is():
    """Without the leader's view, the table says so, and unknown contact shows as -."""
    follower = [
        {**MEMBERS[0], "this_node": False, "reachable": True, "last_contact": 0.1},
        {**MEMBERS[1], "this_node": True, "last_contact": None},
        {**MEMBERS[2], "reachable": None, "last_contact": None},
    ]
    lines = cli.format_members(follower, as_json=False).splitlines()
    assert lines[3].split()[:3] == ["3", "voter", "-"]
    assert lines[-1].startswith("(as seen by node 2, not the leader")
    nobody = [{**m, "raft": "voter"} for m in follower]
    assert (
        cli.format_members(nobody, as_json=False)
        .splitlines()[-1]
        .startswith("(as seen by node 2: it knows no leader")
    )


def test_query_of_an_unknown_query_is_a_usage_error_naming_the_known_ones():
    """`query READ f` or `query FOO` on a key-value cluster: not `null` and exit 0, nor
    exit 5, but what the query names and what the store answers, and exit 64."""
    net, node = _cli_cluster()
    client = LeekyClient(net.clock, [("10.0.0.1", 7001)], connect=net.connect)
    for argv, name in ((["query", "READ", "unknown"], "READ"), (["query", "FOO"], "FOO")):
        code, out, err = _run_on(net, argv, client)
        assert (code, out) == (cli.EXIT_USAGE, ""), (argv, code, out, err)
        assert err.startswith(f"leekyraft: query: unknown query {name!r}: "), err
        assert "GET <key>" in err and "READ <name>" in err and "LIST" in err
        assert err.count("\n") == 1
    code, out, err = _run_on(net, ["query", "GET", "k", "extra"], client)
    assert code == cli.EXIT_USAGE and "GET <key>" in err
    node.state_machine.apply(1, encode_command(Put("k", "v")))
    assert _run_on(net, ["query", "GET", "k"], client) == (0, '"v"\n', "")
    assert _run_on(net, ["query", "GET", "missing"], client) == (0, "null\n", "")


def test_query_help_names_the_queries():
    """`leekyraft query --help` says which queries there are."""
    parser = cli.build_parser()
    query = parser._subparsers._group_actions[0].choices["query"]
    text = query.format_help()
    assert "GET KEY" in text and "READ NAME" in text and "LIST" in text


def test_a_query_an_executor_refuses_exits_64_while_other_refusals_stay_5():
    """The executor's refusal of a query is bad input (64); a refused put is still 5."""
    refused = InvalidRequest("unknown query 'FROB': queries are READ <name> or LIST")
    code, out, err = run(["query", "FROB"], FakeClient(error=refused))
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == f"leekyraft: query: {refused}\n"
    assert run(["put", "k", "v"], FakeClient(error=InvalidRequest("too big")))[0] == 5
