"""Test fakes for the client APIs: a fake IRaftNode and an in-memory AMP network.

Shared by tests/api and tests/client; import it as ``leeky_twisted.testing.apifakes``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from leeky_twisted.api.amp_api import KeyValueFrontend, make_amp_factory, make_frontend
from leeky_twisted.client.library import Address
from leeky_twisted.interfaces import IStateMachine, NodeStatus
from leeky_twisted.protocol.errors import CommitTimeout, NotLeader
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.testing.fakes import FakeNodeBase


class FakeRaftNode(FakeNodeBase):
    """An IRaftNode whose log commits at once into a real KeyValueStateMachine.

    Switches: ``not_leader`` (raise it from propose and linearizable reads),
    ``commit_timeout`` (fail with CommitTimeout without applying),
    ``lose_answers`` (apply, then fail that many proposals with CommitTimeout),
    ``hang`` (never answer), ``crash`` (raise this exception).
    Every call is recorded in ``calls``.
    """

    def __init__(self, node_id: str = "1", client_address: str | None = None) -> None:
        self.node_id = node_id
        self.client_address = client_address
        self.state_machine = KeyValueStateMachine()
        self.index = 0
        self.not_leader: NotLeader | None = None
        self.commit_timeout = False
        self.lose_answers = 0
        self.hang = False
        self.crash: Exception | None = None
        self.calls: list[tuple[Any, ...]] = []

    #: set it to anything: the node applies entries in an executor process
    executor: object | None = None

    def local_state_machine(self) -> IStateMachine | None:
        """Return the key-value store the fake applies to (None under an executor)."""
        return None if self.executor is not None else self.state_machine

    def _trouble(self) -> Deferred[Any] | None:
        if self.crash is not None:
            return fail(self.crash)
        if self.not_leader is not None:
            return fail(self.not_leader)
        if self.commit_timeout:
            return fail(CommitTimeout())
        if self.hang:
            return Deferred()
        return None

    def propose(self, command: bytes, timeout: float) -> Deferred[Any]:
        """Apply ``command`` at the next index, unless a switch says otherwise."""
        self.calls.append(("propose", command, timeout))
        trouble = self._trouble()
        if trouble is not None:
            return trouble
        self.index += 1
        result = self.state_machine.apply(self.index, command)
        if self.lose_answers:
            self.lose_answers -= 1
            return fail(CommitTimeout())
        return succeed(result)

    def read(self, request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        """Query the state machine; linearizable reads obey the switches."""
        self.calls.append(("read", request, linearizable, timeout))
        if linearizable:
            trouble = self._trouble()
            if trouble is not None:
                return trouble
        return succeed(self.state_machine.query(request))

    def status(self) -> NodeStatus:
        """Return a status shaped like the real node's."""
        leader = self.not_leader.leader_id if self.not_leader else self.node_id
        return NodeStatus.from_json(
            {
                "id": self.node_id,
                "address": f"peer-{self.node_id}",
                "client_address": self.client_address,
                "role": "follower" if self.not_leader else "leader",
                "term": 3,
                "leader": leader,
                "leader_address": (
                    self.not_leader.leader_address if self.not_leader else self.client_address
                ),
                "commit_index": self.index,
                "applied_index": self.index,
                "voters": ["1", "2", "3"],
                "learners": [],
                "log_entries": self.index,
            }
        )


class SocketTransport(StringTransport):
    """A TCP transport as Twisted's FileDescriptor keeps it: written bytes wait in
    ``_tempDataBuffer`` until the client reads (:meth:`drain`), so the unsent bytes
    grow while it reads nothing. :meth:`abortConnection` only notes ``aborted``: the
    connection stays open, so a test sees whether anything more is buffered after."""

    def __init__(self) -> None:
        super().__init__()
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)

    def drain(self) -> bytes:
        """Return everything written so far; the buffer is empty again."""
        data = b"".join(self._tempDataBuffer)
        self._tempDataBuffer, self._tempDataLen = [], 0
        return data

    def abortConnection(self) -> None:
        self.aborted = True


class FakeNetwork:
    """AMP connections over iosim pumps, on one Clock; unknown addresses refuse."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock if clock is not None else Clock()
        self.servers: dict[Address, Any] = {}
        self.pumps: list[iosim.IOPump] = []
        self.connects: list[Address] = []

    def listen(self, address: Address, factory: Any) -> None:
        """Accept connections to ``address`` with ``factory``."""
        self.servers[address] = factory

    def serve(self, address: Address, node: FakeRaftNode, **options: Any) -> KeyValueFrontend:
        """Serve the client AMP API of ``node`` at ``address``; return its frontend."""
        options.setdefault("connect", self.connect)
        frontend = make_frontend(node, self.clock, **options)
        self.listen(address, make_amp_factory(frontend))
        return frontend

    def connect(self, address: Address, protocol: amp.AMP) -> Deferred[amp.AMP]:
        """A Connector: wire ``protocol`` to the server at ``address``."""
        self.connects.append(address)
        factory = self.servers.get(address)
        if factory is None:
            return fail(error.ConnectionRefusedError(f"nothing at {address}"))
        server = factory.buildProtocol(None)
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            protocol,
            iosim.makeFakeClient(protocol),
            greet=False,
        )
        self.pumps.append(pump)
        return succeed(protocol)

    def flush(self) -> None:
        """Move bytes until every connection is quiet."""
        for _ in range(10_000):
            moved = [pump.pump(advanceClock=False) for pump in list(self.pumps)]
            if not any(moved):
                return
        raise AssertionError("network never went quiet")

    def run(self, d: Deferred[Any], *, step: float = 0.05, limit: float = 60.0) -> None:
        """Flush, advancing the clock by ``step`` until ``d`` fires (or ``limit``)."""
        waited = 0.0
        while True:
            self.flush()
            if d.called or waited >= limit:
                return
            self.clock.advance(step)
            waited += step

    def drop(self, address: Address) -> None:
        """Stop listening at ``address`` and cut every connection to it."""
        factory = self.servers.pop(address)
        for pump in self.pumps:
            if getattr(pump.server, "factory", None) is factory:
                pump.serverIO.loseConnection()
        self.flush()


def result_of(d: Deferred[Any]) -> Any:
    """Return the result ``d`` already has; fail the test if it has none or failed."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred[Any], *types: type[BaseException]) -> Failure:
    """Return the Failure ``d`` already has, checking it is one of ``types``."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    assert isinstance(results[0], Failure), f"expected a failure, got {results[0]!r}"
    if types:
        assert results[0].check(*types), results[0].getTraceback()
    return results[0]


def capture(d: Deferred[Any]) -> Deferred[Any]:
    """Return a Deferred holding ``d``'s outcome, consuming it from ``d`` at once.

    AMP appends its own "unhandled error, drop the connection" errback when an
    error answer arrives, so a test must take the outcome before pumping.
    """
    out: Deferred[Any] = Deferred()

    def take(result: Any) -> None:
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(result)

    d.addBoth(take)
    return out
