"""LeekyClient and the CLI move on from a node that is silent, black-holed or not Leeky Raft.

Clock-driven: a "silent" endpoint accepts the connection and never answers
(a paused process: the kernel accepts, nobody reads), a black-holed one never
completes the connection, a garbage one answers as an HTTP or SSH server does.
"""

from __future__ import annotations

import io

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from leeky_twisted import cli
from leeky_twisted.client.library import LeekyClient, format_address
from leeky_twisted.protocol.errors import CommitTimeout, NotLeader, Unavailable
from leeky_twisted.statemachine.commands import Get, decode_command
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, failure_of, result_of

HUNG = ("10.0.0.9", 7009)
A = ("10.0.0.1", 7001)
B = ("10.0.0.2", 7002)


class Garbage(Protocol):
    """Answer like a server of another protocol: a greeting, or an HTTP error to any input."""

    greeting = b""
    answer = b""

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        if self.answer:
            self.transport.write(self.answer)
            self.transport.loseConnection()


class HTTPServer(Garbage):
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class SSHServer(Garbage):
    greeting = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


class PeerPort(Protocol):
    """Close the connection at the first bytes, answering nothing, as a node's peer port does."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class Net:
    """A FakeNetwork with a leader at A (B follows, hints A) and odd endpoints on demand."""

    def __init__(self) -> None:
        self.net = FakeNetwork()
        self.clock = self.net.clock
        self.leader = FakeRaftNode("1", format_address(A))
        self.follower = FakeRaftNode("2", format_address(B))
        self.follower.not_leader = NotLeader("1", format_address(A))
        self.net.serve(A, self.leader, forward=False)
        self.net.serve(B, self.follower, forward=False)
        self.black_holed: set[tuple[str, int]] = set()
        self.silent(HUNG)

    def silent(self, address: tuple[str, int]) -> None:
        """Accept connections at ``address`` and never answer (a paused node)."""
        self.net.listen(address, Factory.forProtocol(Protocol))

    def speak(self, address: tuple[str, int], protocol: type[Protocol]) -> None:
        self.net.listen(address, Factory.forProtocol(protocol))

    def connect(self, address, protocol):
        if address in self.black_holed:
            self.net.connects.append(address)
            return Deferred()  # SYNs dropped: the connection never completes
        return self.net.connect(address, protocol)

    def client(self, addresses, timeout=10.0, **options) -> LeekyClient:
        return LeekyClient(self.clock, addresses, timeout=timeout, connect=self.connect, **options)

    def run(self, d: Deferred) -> Deferred:
        self.net.run(d, step=0.01, limit=30)
        return d


def test_a_read_moves_on_from_a_silent_node_after_one_attempt_timeout():
    """A paused node first in the list costs one attempt timeout, then the live nodes answer."""
    net = Net()
    net.leader.state_machine.apply(1, b"PUT k v")
    client = net.client([HUNG, A, B])
    assert result_of(net.run(client.get("k"))) == "v"
    assert 1.0 <= net.clock.seconds() < 1.2
    assert client.leader == A
    started = net.clock.seconds()
    assert result_of(net.run(client.get("k"))) == "v"  # the leader is remembered
    assert net.clock.seconds() - started < 0.1
    assert net.net.connects == [HUNG, A]


def test_a_write_moves_on_from_a_silent_node_and_is_applied_once():
    """A put whose first node is paused goes to the leader within about one attempt timeout."""
    net = Net()
    client = net.client([HUNG, B])
    assert result_of(net.run(client.put("k", "v"))) is None
    assert net.clock.seconds() < 1.2
    assert net.leader.state_machine.query(Get("k")) == "v"
    puts = [c for c in net.leader.calls if type(decode_command(c[1])).__name__ == "Put"]
    assert len(puts) == 1


def test_a_black_holed_node_costs_one_attempt_timeout():
    """A connection that never completes is given up after the attempt timeout."""
    net = Net()
    net.black_holed.add(HUNG)
    client = net.client([HUNG, A], attempt_timeout=0.5)
    assert result_of(net.run(client.get("k"))) is None
    assert 0.5 <= net.clock.seconds() < 0.7


def test_a_leader_whose_connection_goes_half_open_is_left_for_the_next_node():
    """The remembered leader stops answering mid-session: the write is sent again elsewhere."""
    net = Net()
    client = net.client([A, B])
    net.run(client.put("k", "1"))
    # The old leader's connection goes half-open (nothing crosses it any more);
    # B takes over with A's state, as a real cluster's replication gives it.
    for pump in net.net.pumps:
        pump.pump = lambda advanceClock=False: False
    net.follower.not_leader = None
    net.follower.state_machine.restore(net.leader.state_machine.snapshot())
    net.follower.index = net.leader.index
    started = net.clock.seconds()
    assert result_of(net.run(client.put("k", "2"))) is None
    assert net.clock.seconds() - started < 1.2
    assert client.leader == B
    assert net.follower.state_machine.query(Get("k")) == "2"


def test_a_slow_leader_that_still_answers_probes_is_waited_for():
    """A commit slower than the attempt timeout is not abandoned while the node shows life."""
    net = Net()
    client = net.client([A, B], attempt_timeout=0.5)
    net.run(client.open_session())
    original = net.leader.propose

    def slow(command, timeout):
        d = Deferred()
        net.clock.callLater(2.0, lambda: original(command, timeout).chainDeferred(d))
        return d

    net.leader.propose = slow
    started = net.clock.seconds()
    assert result_of(net.run(client.put("k", "v"))) is None
    assert 2.0 <= net.clock.seconds() - started < 2.2
    assert net.net.connects == [A]
    assert len([c for c in net.leader.calls if c[0] == "propose"]) == 2  # session, put


def test_a_sessionless_submit_to_a_silent_node_is_outcome_unknown_at_once():
    """submit carries no session: after a silent attempt it is not resent (exit 4)."""
    net = Net()
    client = net.client([HUNG, A])
    d = net.run(client.submit("PUT k v"))
    assert "outcome unknown" in str(failure_of(d, CommitTimeout).value)
    assert net.clock.seconds() < 1.2
    assert net.leader.calls == []


def test_a_cluster_of_silent_nodes_is_unavailable_for_reads():
    """Every node silent: a read is Unavailable (exit 3) well before the timeout."""
    net = Net()
    other = ("10.0.0.8", 7008)
    net.silent(other)
    client = net.client([HUNG, other], timeout=10.0)
    d = net.run(client.get("k"))
    f = failure_of(d, Unavailable)
    assert "cannot reach any node" in str(f.value) and "sent nothing" in str(f.value)
    assert net.clock.seconds() < 4.5


def test_a_write_left_on_a_silent_cluster_is_outcome_unknown():
    """A write sent to nodes that never answered may be applied later: CommitTimeout."""
    net = Net()
    client = net.client([A], timeout=10.0)
    net.run(client.open_session())
    for pump in net.net.pumps:
        pump.pump = lambda advanceClock=False: False
    d = net.run(client.put("k", "v"))
    assert "outcome unknown" in str(failure_of(d, CommitTimeout).value)
    assert net.clock.seconds() < 5


@pytest.mark.parametrize(("server", "sent"), [(HTTPServer, "HTTP/1.1 400"), (SSHServer, "SSH-2.0")])
def test_an_endpoint_that_is_not_leeky_raft_is_named_in_one_error(server, sent):
    """An HTTP or SSH server in --cluster: Unavailable naming it and what it sent; no traceback."""
    net = Net()
    net.speak(HUNG, server)
    client = net.client([HUNG])
    f = failure_of(net.run(client.get("k")), Unavailable)
    message = str(f.value)
    assert "10.0.0.9:7009 does not speak Leeky Raft's client protocol" in message
    assert sent in message
    assert net.clock.seconds() < 1.0


def test_a_not_leeky_endpoint_is_skipped_when_a_node_answers():
    """A wrong address among good ones is passed over."""
    net = Net()
    net.speak(HUNG, SSHServer)
    client = net.client([HUNG, A])
    assert result_of(net.run(client.put("k", "v"))) is None
    assert net.leader.state_machine.query(Get("k")) == "v"


def _cli(net: Net, argv: list[str], addresses) -> tuple[int, str, str]:
    args = cli.build_parser().parse_args(argv)
    client = net.client(addresses, timeout=args.timeout, attempt_timeout=args.attempt_timeout)
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, client, out, err))
    net.run(d)
    return result_of(d), out.getvalue(), err.getvalue()


def test_cli_against_an_http_server_exits_3_with_one_line():
    """`leekyraft --cluster <an HTTP server> get k`: one line naming it, exit 3."""
    net = Net()
    net.speak(HUNG, HTTPServer)
    code, out, err = _cli(net, ["get", "k"], [HUNG])
    assert code == cli.EXIT_UNREACHABLE and out == ""
    assert err.count("\n") == 1 and "10.0.0.9:7009 does not speak Leeky Raft" in err


def test_cli_put_with_a_paused_node_first_succeeds_quickly():
    """`leekyraft --cluster paused,live put k v` answers after about one attempt timeout."""
    net = Net()
    code, out, _ = _cli(net, ["--attempt-timeout", "0.5", "put", "k", "v"], [HUNG, A])
    assert code == 0 and out.startswith("Success!")
    assert net.clock.seconds() < 0.7


def test_cli_status_reports_a_paused_node_without_waiting_out_the_timeout():
    """status marks a silent node after the attempt timeout, not after --timeout."""
    net = Net()
    code, out, _ = _cli(net, ["status"], [A, HUNG])
    assert code == cli.EXIT_UNREACHABLE  # one node did not answer
    assert "connected but sent nothing" in out
    assert "not an AMP client port: an HTTP port, for one, waits for an HTTP request" in out
    assert net.clock.seconds() < 1.2


def test_attempt_timeout_must_be_positive(capsys):
    """--attempt-timeout 0 is a usage error."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--attempt-timeout", "0", "get", "k"])
    assert exit_info.value.code == cli.EXIT_USAGE


def test_a_silent_node_is_passed_over_for_the_rest_of_the_call():
    """While the client waits out an election, it does not go back to the silent node."""
    net = Net()
    net.follower.not_leader = NotLeader()  # no leader known yet
    client = net.client([HUNG, B])
    d = client.get("k")
    net.net.run(d, step=0.01, limit=3.0)
    assert not d.called
    net.follower.not_leader = None  # B is elected
    net.run(d)
    assert result_of(d) is None
    assert net.net.connects.count(HUNG) == 1
    assert net.clock.seconds() < 4.2


def test_a_not_leeky_endpoint_is_described_without_amp_class_names():
    """What an SSH server sent is named, not AMP's parser error (no "TooLong")."""
    net = Net()
    net.speak(HUNG, SSHServer)
    client = net.client([HUNG])
    message = str(failure_of(net.run(client.get("k")), Unavailable).value)
    assert "TooLong" not in message and "AmpError" not in message
    assert message.endswith("is it a node's client (AMP) port?")


def test_a_node_that_fails_internally_is_described_in_words():
    """A failure inside a node reaches the user in words, not "UNKNOWN 'Unknown Error'"."""
    from twisted.protocols import amp

    from leeky_twisted.client.library import _describe

    said = _describe(amp.RemoteAmpError(amp.UNKNOWN_ERROR_CODE, "Unknown Error"))
    assert said == "the node failed while answering (an internal error: its log has the details)"
    said = _describe(amp.RemoteAmpError(amp.UNHANDLED_ERROR_CODE, "Unhandled Command: b'Put'"))
    assert "Unhandled" not in said and "does not know this request" in said


def test_a_peer_port_in_cluster_is_named_as_a_possible_cause():
    """`--cluster <a node's peer port>`: it hangs up unanswered; the error names a peer port."""
    net = Net()
    net.speak(HUNG, PeerPort)
    f = failure_of(net.run(net.client([HUNG]).get("k")), Unavailable)
    assert "10.0.0.9:7009 closed the connection without answering" in str(f.value)
    assert "not an AMP client port: a peer port, or a TLS port" in str(f.value)
