"""Run shipped RaftNodes on a deterministic reactor, an in-memory disk and a
simulated network, with faults injected at the interfaces.

:class:`SimReactor` is the one clock of a simulated world. Each node gets a
:class:`NodeClock` over it, which can *stall* (the node's calls wait, as on a
reactor blocked for seconds) and is *killed* on a crash (every pending call of
that node is dropped, as when the process dies). :class:`SimDisk` holds the
real in-memory stores (what survives a crash), wrapped so a write can fail,
tear (only a prefix of an append lands, then the process dies) or be followed
by a crash before the node hears it finished. :class:`NodeHost` builds a
:class:`~leeky_twisted.server.node.RaftNode` over them and restarts, stops or wipes it,
or swaps its data folder while it runs (the node keeps the stores it opened, as
a process keeps its open files; the shipped :class:`DataFolderGuard` must stop it).
"""

from __future__ import annotations

import functools
import heapq
import json
import random
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted import defaults
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import Entry, HardState, Message, NodeId
from leeky_twisted.interfaces import IPeerTransport, IStateMachine
from leeky_twisted.server.folderguard import DataFolderGuard
from leeky_twisted.server.node import (
    NodeHooks,
    NodeSettings,
    RaftNode,
    UnrecoverableStateError,
)
from leeky_twisted.storage.errors import StorageError
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from leeky_twisted.transport.notices import RemovedNotice

__all__ = [
    "DiskFaults",
    "NodeClock",
    "NodeHost",
    "SimCrash",
    "SimDisk",
    "SimFolderIdentity",
    "SimReactor",
    "SimStateMachine",
]


class SimCrash(BaseException):
    """Raised inside a store to kill the node's process at that point.

    A BaseException, so the node's own ``except Exception`` handlers do not
    catch it: it unwinds to the host, which drops the node like a dead process.
    """


# ------------------------------------------------------------------ time


class SimCall:
    """A delayed call of :class:`SimReactor` (the parts LoopingCall uses)."""

    __slots__ = ("args", "called", "cancelled", "func", "io", "time")

    def __init__(self, time: float, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.time = time
        self.func = func
        self.args = args
        self.called = False
        self.cancelled = False
        self.io = False  #: reading input: after a stall, it waits for the due timers

    def active(self) -> bool:
        return not (self.called or self.cancelled)

    def cancel(self) -> None:
        self.cancelled = True

    def getTime(self) -> float:
        return self.time


class SimReactor:
    """A deterministic clock: calls run in (time, order of scheduling) order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, SimCall]] = []
        self._seq = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, func: Callable[..., Any], *args: Any) -> SimCall:
        call = SimCall(self.now + max(delay, 0.0), func, args)
        self._push(call)
        return call

    def postpone(self, call: SimCall, when: float) -> None:
        """Run ``call`` again at ``when`` (it stays the same call: cancelling it works)."""
        call.time = when
        call.called = False
        self._push(call)

    def _push(self, call: SimCall) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (call.time, self._seq, call))

    def run_until(self, when: float) -> None:
        """Run every call due at or before ``when``; the clock ends at ``when``."""
        heap = self._heap
        while heap and heap[0][0] <= when:
            t, _, call = heapq.heappop(heap)
            if call.cancelled:
                continue
            self.now = t
            call.called = True
            call.func(*call.args)
        self.now = when


#: after a stall, how long after the due timers the input that waited is read
IO_AFTER_TIMERS = 1e-6


class NodeClock:
    """One node's reactor: the shared clock, plus stalls and death."""

    def __init__(self, reactor: SimReactor, on_crash: Callable[[], None]) -> None:
        self.reactor = reactor
        self.running = False  #: never True: the node must not stop the world
        self._calls: list[SimCall] = []
        self._dead = False
        self._on_crash = on_crash
        self.stalled_until = 0.0
        #: when the last call a stall postponed runs (it does even if the stall is
        #: lifted earlier: the world's heal lifts stalls but moves no call back)
        self.waking = 0.0

    def seconds(self) -> float:
        return self.reactor.now

    def callLater(self, delay: float, func: Callable[..., Any], *args: Any) -> SimCall:
        if len(self._calls) > 256:
            self._calls = [c for c in self._calls if c.active()]
        call = self.reactor.callLater(delay, self._fire, func, args)
        call.args = (func, args, call)
        self._calls.append(call)
        return call

    def read_later(self, func: Callable[..., Any], *args: Any) -> SimCall:
        """Schedule the reading of input (a message that arrived): at once, or if the
        reactor is stalled, after the timers that come due while it is (as Twisted's
        reactor runs its due timers before it polls for input)."""
        call = self.callLater(0, func, *args)
        call.io = True
        return call

    def _fire(self, func: Callable[..., Any], args: tuple[Any, ...], call: SimCall) -> None:
        if self._dead:
            return
        if self.reactor.now < self.stalled_until:  # the reactor is blocked: run it when it wakes
            later = IO_AFTER_TIMERS if call.io else 0.0
            self.waking = max(self.waking, self.stalled_until + later)
            self.reactor.postpone(call, self.stalled_until + later)
            return
        try:
            func(*args)
        except SimCrash:
            self._on_crash()

    def kill(self) -> None:
        """Drop every pending call: the process is gone."""
        self._dead = True
        for c in self._calls:
            c.cancel()
        self._calls = []


# ------------------------------------------------------------------- disk


class DiskFaults:
    """Chances of disk faults, per write (all zero: a perfect disk)."""

    def __init__(
        self,
        rng: random.Random,
        fail: float = 0.0,
        tear: float = 0.0,
        crash_after_write: float = 0.0,
        max_delay: float = 0.3,
    ) -> None:
        self.rng = rng
        self.fail = fail
        self.tear = tear
        self.crash_after_write = crash_after_write
        self.max_delay = max_delay

    def draw(self) -> str | None:
        r = self.rng.random()
        if r < self.fail:
            return "fail"
        r -= self.fail
        if r < self.tear:
            return "tear"
        r -= self.tear
        if r < self.crash_after_write:
            return "crash"
        return None

    def delay(self) -> float:
        return self.rng.uniform(0.0, self.max_delay)


#: the error of a write into a deleted data folder
FOLDER_GONE = "simulated write error: no such file or directory (the data folder was deleted)"


class _FaultyLogStore(MemoryLogStore):
    """The in-memory log, whose appends may fail, tear or be followed by a crash."""

    faults: DiskFaults | None = None
    gone = False  #: its folder was deleted: every write fails

    def append(self, entries: Sequence[Entry]) -> None:
        if self.gone and entries:
            raise StorageError(FOLDER_GONE)
        fault = self.faults.draw() if self.faults is not None and entries else None
        if fault == "fail":
            raise StorageError("simulated write error")
        if fault == "tear":
            keep = self.faults.rng.randrange(len(entries)) if self.faults else 0
            if keep:
                super().append(entries[:keep])
            raise SimCrash
        super().append(entries)
        if fault == "crash":
            raise SimCrash


class _FaultyStableStore(MemoryStableStore):
    """The in-memory hard state, whose saves may fail or be followed by a crash."""

    faults: DiskFaults | None = None
    gone = False  #: its folder was deleted: every write fails

    def save(self, hard_state: object) -> None:
        if self.gone:
            raise StorageError(FOLDER_GONE)
        fault = self.faults.draw() if self.faults is not None else None
        if fault == "fail":
            raise StorageError("simulated write error")
        if fault == "tear":
            raise SimCrash  # a hard state write is atomic: all or nothing
        super().save(hard_state)
        if fault == "crash":
            raise SimCrash


class SimDisk:
    """What survives a crash: the real in-memory stores, fault-injecting."""

    def __init__(self) -> None:
        self.log = _FaultyLogStore()
        self.stable = _FaultyStableStore()
        self.snapshots = MemorySnapshotStore()

    def arm(self, faults: DiskFaults | None) -> None:
        """Inject ``faults`` into every write from now on (None: none)."""
        self.log.faults = faults
        self.stable.faults = faults

    def delete(self) -> None:
        """The folder is deleted: the stores opened on it fail every write from now on."""
        self.log.gone = True
        self.stable.gone = True

    @property
    def deleted(self) -> bool:
        """Return True once :meth:`delete` was called."""
        return self.log.gone

    def hard_state(self) -> HardState:
        hs = self.stable.load()
        assert isinstance(hs, HardState)
        return hs


class SimFolderIdentity:
    """The simulation's :class:`~leeky_twisted.storage.folderwatch.FolderIdentity`:
    the folder is the one opened while the host still has the same :class:`SimDisk`."""

    def __init__(self, host: NodeHost, disk: SimDisk) -> None:
        self.folder = f"/sim/{host.id}"
        self._host = host
        self._disk = disk

    def change(self) -> str | None:
        """Return what changed since the node opened its disk, or None."""
        if self._host.disk is self._disk:
            return None
        if self._disk.deleted:
            return f"the data folder {self.folder} was deleted"
        return f"the data folder {self.folder} was replaced (another made at its path)"


# ---------------------------------------------------------- state machine


@implementer(IStateMachine)
class SimStateMachine:
    """A key-value store of ``key=value`` commands that knows its own index.

    ``apply`` returns the index it applied (so a client learns where its write
    landed); ``query`` returns ``(index of the last applied write, value)``, the
    version of the state a read saw.
    """

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.last_write = 0

    def apply(self, index: int, command: bytes) -> object:
        key, _, value = command.decode().partition("=")
        self.kv[key] = value
        self.last_write = index
        return index

    def query(self, request: object) -> object:
        return self.last_write, self.kv.get(str(request))

    def snapshot(self) -> bytes:
        return json.dumps([self.last_write, self.kv], sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        self.last_write, self.kv = json.loads(data)


# --------------------------------------------------------------- transport


@implementer(IPeerTransport)
class SimTransport:
    """Hands every message to the world's network."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self.receiver: Callable[[Message], None] | None = None
        #: what the node asked to hear at the end of each read (``process_received``)
        self.after_read: Callable[[], None] | None = None
        #: a read's messages are being delivered (``after_read`` follows)
        self.reading = False
        self.end_wanted = False  #: the node waits for ``after_read`` at the end of the read
        #: what the node asked to hear when a peer's process is gone (``RaftNode.peer_gone``)
        self.peer_gone: Callable[[NodeId], None] | None = None

    def send(self, message: object) -> None:
        assert isinstance(message, Message | RemovedNotice)
        # a notice has a sender and a recipient too: all the network reads of it
        self._send(cast(Message, message))

    def set_receiver(self, receiver: object) -> None:
        assert callable(receiver)
        self.receiver = receiver

    def set_after_read(self, after_read: Callable[[], None]) -> None:
        """Keep what to call once a read's messages are all delivered (see NodeHost)."""
        self.after_read = after_read

    def set_peer_gone(self, peer_gone: Callable[[NodeId], None]) -> None:
        """Keep whom to tell that a peer's process is gone (see :meth:`NodeHost.peer_gone`)."""
        self.peer_gone = peer_gone

    def defer_to_end_of_read(self) -> bool:
        """Return True (``after_read`` follows) while a read is being delivered."""
        if self.reading:
            self.end_wanted = True
            return True
        return False

    def close(self) -> Deferred[None]:
        return succeed(None)


# -------------------------------------------------------------------- host


class NodeHost:
    """One simulated machine: its disk survives; its RaftNode is the process.

    ``send(host, message)`` puts a message on the network;
    ``observe(host, ready)`` sees each Ready the node takes (for the checks).
    """

    def __init__(
        self,
        reactor: SimReactor,
        node_id: NodeId,
        core_config: Callable[[NodeId], CoreConfig],
        settings: Callable[[NodeId], NodeSettings],
        rng: random.Random,
        send: Callable[[NodeHost, Message], None],
        observe: Callable[[NodeHost, Any], None] | None = None,
        disk_faults: DiskFaults | None = None,
        batch_reads: bool = False,
    ) -> None:
        self.reactor = reactor
        self.id = node_id
        self._core_config = core_config
        self._settings = settings
        self.rng = rng
        self._send = send
        self._observe = observe
        self.disk_faults = disk_faults
        self.disk = SimDisk()
        self.node: RaftNode | None = None
        self.transport = SimTransport(lambda m: self._send(self, m))  #: the running node's
        self.clock: NodeClock | None = None
        self.sm: SimStateMachine | None = None
        self.refused: str | None = None  #: why the node refused to start, if it did
        self.incarnation = 0
        self._disk_free_at = 0.0
        self.guard_folder = True  #: run the shipped folder guard (off: tests of the checker)
        #: the node running when the folder was swapped, until it is gone
        self.swapped_node: RaftNode | None = None
        self.swapped_at = 0.0
        self.folder_swapped = False  #: swapped since the node last started
        #: read as production does: each sender's messages that arrived meanwhile in
        #: one read, then ``node.process_received()`` (off: one read per message)
        self.batch_reads = batch_reads
        self._unread: dict[NodeId, list[Message]] = {}  #: by sender, not yet read
        self.reads = 0  #: batched reads done (each one ``process_received``)

    @property
    def up(self) -> bool:
        """Return True while the node process runs (and has not stopped itself)."""
        return self.node is not None and not self.node.stopped

    def start(self) -> bool:
        """Start the node process on this disk; False if it refused its data."""
        if self.node is not None:
            return True
        self.incarnation += 1
        self.clock = clock = NodeClock(self.reactor, self.crash)
        self.sm = SimStateMachine()
        self.disk.arm(None)  # recovery reads and bootstrap writes are not faulted
        observe = self._observe
        on_ready = functools.partial(observe, self) if observe is not None else None
        holder: list[RaftNode] = []
        guard = DataFolderGuard(
            clock,
            SimFolderIdentity(self, self.disk),
            lambda why: holder[0].fail_stop(why),
            defaults.DATA_DIR_CHECK_SECONDS,
        )
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] = self._run_blocking
        hooks = NodeHooks(on_ready=on_ready)
        if self.guard_folder:
            run_blocking = guard.checked(run_blocking)
            hooks = NodeHooks(on_ready=on_ready, storage_check=guard.check)
        transport = self.transport = SimTransport(lambda m: self._send(self, m))
        try:
            node = RaftNode(
                clock,
                self._core_config(self.id),
                self.disk.log,
                self.disk.stable,
                self.disk.snapshots,
                transport,
                self.sm,
                settings=self._settings(self.id),
                rng=random.Random(self.rng.random()),
                run_blocking=run_blocking,
                monotonic=self.reactor.seconds,
                hooks=hooks,
                timer=self.reactor.seconds,
            )
        except UnrecoverableStateError as e:
            self.refused = str(e)
            self.clock = None
            self.sm = None
            return False
        self.refused = None
        self.node = node
        self._unread = {}  # what reached the dead process's sockets is gone
        self.folder_swapped = False
        self.swapped_node = None
        holder.append(node)
        self.disk.arm(self.disk_faults)
        clock.callLater(0, node.start)
        if self.guard_folder:
            guard.startService()
        return True

    def crash(self) -> None:
        """Kill the process: everything not on the disk is lost."""
        if self.clock is not None:
            self.clock.kill()
        if self.node is not None:
            self.node.stopped = True
        self.node = None
        self.clock = None

    def stop(self) -> Deferred[None] | None:
        """Stop the node gracefully; the process exits when the stop is done."""
        node = self.node
        if node is None or node.stopped:
            return None
        d = node.stop()
        d.addBoth(lambda _: self.crash() if self.node is node else None)
        return d

    def wipe(self) -> None:
        """Lose the disk: the node comes back under the same id, empty."""
        self.crash()
        self.disk = SimDisk()

    def swap_folder(self, deleted: bool) -> None:
        """Delete (``deleted``) or replace the data folder under the running node.

        Either way a fresh, empty folder is at its path at the next start. The
        running node keeps the stores it opened: after a replacement they take
        writes as before (open files), after a deletion every write fails.
        """
        if deleted:
            self.disk.delete()
        self.disk = SimDisk()
        self.folder_swapped = True
        if self.up:
            self.swapped_node = self.node
            self.swapped_at = self.reactor.now

    def stall(self, seconds: float) -> None:
        """Block the node's reactor for ``seconds`` (its disk keeps working)."""
        if self.clock is not None:
            self.clock.stalled_until = max(self.clock.stalled_until, self.reactor.now + seconds)

    def deliver(self, message: Message) -> None:
        """Hand ``message`` to the node (through its reactor, so stalls delay it).

        With ``batch_reads``, as from a socket: the messages of one sender that
        arrive before the node reads (at the same instant, or while its reactor
        is stalled) are read together, then the transport's ``after_read``
        (the node's ``process_received``) runs, as the peer inbox's
        ``end_of_read`` does.
        """
        if self.clock is None or self.node is None:
            return
        if not self.batch_reads:
            self.clock.read_later(self._receive, self.node, message)
            return
        unread = self._unread.setdefault(message.sender, [])
        unread.append(message)
        if len(unread) == 1:
            self.clock.read_later(self._read, self.node, message.sender)

    def peer_gone(self, peer: NodeId) -> None:
        """Tell the node, as its peer transport would, that a dial to ``peer`` was
        refused (through its reactor, so a stall delays it)."""
        if self.clock is None or self.node is None:
            return
        self.clock.read_later(self._peer_gone, self.node, peer)

    def _peer_gone(self, node: RaftNode, peer: NodeId) -> None:
        if self.node is node and self.transport.peer_gone is not None:
            self.transport.peer_gone(peer)

    def _receive(self, node: RaftNode, message: Message) -> None:
        if self.node is node:
            node.receive(message)

    def _read(self, node: RaftNode, sender: NodeId) -> None:
        if self.node is not node:
            return
        batch = self._unread.pop(sender, [])
        transport = cast(SimTransport, node.transport)
        transport.reading = True
        try:
            for message in batch:
                node.receive(message)
        finally:
            transport.reading = False
        wanted, transport.end_wanted = transport.end_wanted, False
        after_read = transport.after_read
        if (batch or wanted) and after_read is not None:
            self.reads += 1
            after_read()  # the node's process_received, as the peer inbox calls it

    def _run_blocking(self, job: Callable[[], Any]) -> Deferred[Any]:
        """The disk thread: jobs run in order, each taking a while."""
        d: Deferred[Any] = Deferred()
        now = self.reactor.now
        delay = self.disk_faults.delay() if self.disk_faults is not None else 0.0
        at = max(now + delay, self._disk_free_at)
        self._disk_free_at = at
        assert self.clock is not None
        self.clock.callLater(at - now, self._disk_job, job, d)
        return d

    def _disk_job(self, job: Callable[[], Any], d: Deferred[Any]) -> None:
        try:
            result = job()
        except SimCrash:
            raise
        except Exception:
            d.errback(Failure())
            return
        d.callback(result)
