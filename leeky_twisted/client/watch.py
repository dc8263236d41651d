"""The client side of a watch, carried by the client's own connection to a node.

:class:`Watch` asks a node for the events of a key or prefix (every node
serves watches from its own applied state) and receives them pushed as
``WatchEvents`` on the connection the client already holds to that node (the
pool's; no connection of its own). When that connection breaks (the node
died, was paused past ``silence_timeout``) or the node ends the watch (it
fell behind), it moves to the next node and resumes from the revision after
the last one it received: events of one revision always arrive together, and
anything below that revision is dropped, so the program sees every event
once, in order.

Flow control: a node counts the events it sent a watch and the client has
not yet taken. The client asks for ``batched_acks``: a node that agrees
sends events asking no answer and is told what was taken with ``WatchAck``,
once ``ack_every`` events (its answer) are unacknowledged or
:data:`WATCH_ACK_DELAY` seconds after the first of them; an older node
asks for an answer to each ``WatchEvents``, which the connection gives.

A node takes at most :data:`MAX_WATCHES_PER_CONNECTION` watches on one
connection, so one client holds at most that many at once; the next
``watch()`` is refused with InvalidRequest until one is cancelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.connection import Address, format_address, with_timeout
from leeky_twisted.protocol.errors import Compacted, InvalidRequest, Removed
from leeky_twisted.protocol.kvresults import Event, event_from_json

if TYPE_CHECKING:
    from leeky_twisted.client.library import LeekyClient
    from leeky_twisted.protocol.connection import _PooledAMP

__all__ = ["DEFAULT_SILENCE_TIMEOUT", "MAX_WATCHES_PER_CONNECTION", "WATCH_ACK_DELAY", "Watch"]

_log = Logger()

#: Seconds without a word from the node (nodes send progress every 10 s) before
#: a watch gives up on it and resumes elsewhere.
DEFAULT_SILENCE_TIMEOUT = 30.0
#: The most watches one client holds: they share its connection, and a node
#: takes at most this many on one connection (``api.amp_api``'s limit).
MAX_WATCHES_PER_CONNECTION = 100
#: Seconds after the first unacknowledged event a watch acknowledges what it took
#: (sooner once the node's ``ack_every`` are waiting); well under the node's 10 s
#: between progress notes, which go only to watchers with nothing unacknowledged.
WATCH_ACK_DELAY = 1.0


#: The last events payload decoded, and its events (immutable): the watches of one
#: key in a process (on one or many connections) get the same payload for an event.
_last_decoded: tuple[str, tuple[Event, ...]] = ("[]", ())


def decoded_events(payload: str) -> tuple[Event, ...]:
    """Return the events of a WatchEvents payload (a JSON list), decoding each text once.

    A payload equal to the last one decoded gives the same events without
    parsing again. KeyError, TypeError or ValueError when malformed.
    """
    global _last_decoded
    last, events = _last_decoded
    if payload == last:
        return events
    events = tuple(event_from_json(e) for e in json.loads(payload))
    _last_decoded = (payload, events)
    return events


class Watch:
    """A running watch. ``done`` fires with None once :meth:`cancel` is called, or
    fails with Compacted (or InvalidRequest) when the watch cannot go on.

    ``next_revision``: every event below it has been delivered (0 until the
    first node answered, when no start revision was given).
    """

    def __init__(
        self,
        client: LeekyClient,
        start: str,
        end: str | None,
        prefix: bool,
        start_revision: int | None,
        on_events: Callable[[list[Event]], object],
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
    ) -> None:
        self._client = client
        self._clock = client._clock
        self._arguments: dict[str, Any] = {"start": start, "end": end, "prefix": prefix}
        self.next_revision = start_revision or 0
        self._on_events = on_events
        self._silence_timeout = silence_timeout
        self.done: Deferred[None] = Deferred()
        self._stopped = False
        #: the connection and the node's id of the watch, while a node serves it
        self._proto: _PooledAMP | None = None
        self._watch_id: int | None = None
        #: fires when the node in use stops serving the watch (any reason)
        self._left: Deferred[None] | None = None
        self._end_reason: str | None = None
        self.resumes = 0  #: nodes asked after the first
        #: with a node that takes WatchAck: send one at this many events (0: it does not)
        self._ack_every = 0
        self._unacked = 0  #: events taken and not yet acknowledged
        self._ack_timer: IDelayedCall | None = None

    def cancel(self) -> None:
        """Stop watching; ``done`` fires with None."""
        if self._stopped:
            return
        self._stopped = True
        self._leave(tell_node=True)
        if not self.done.called:
            self.done.callback(None)

    def close(self) -> None:
        """Stop at once, as the client closes; ``done`` fires (None) on the next turn.

        Not at once: the caller may be the very coroutine that awaits ``done``
        (``client.close()`` in its ``finally``, run as the coroutine is closed).
        """
        if self._stopped:
            return
        self._stopped = True
        self._leave(tell_node=False)  # the connection closes with the client
        self._clock.callLater(0, self._closed)

    def _closed(self) -> None:
        if not self.done.called:
            self.done.callback(None)

    def _fail(self, e: Exception) -> None:
        self._stopped = True
        self._leave(tell_node=True)
        if not self.done.called:
            self.done.errback(e)

    def _leave(self, tell_node: bool) -> None:
        """Stop taking this node's events (with ``tell_node``, ask it to end the watch)."""
        proto, watch_id = self._proto, self._watch_id
        self._proto = self._watch_id = None
        self._ack_every = self._unacked = 0  # the node forgets the watch's backlog with it
        timer, self._ack_timer = self._ack_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if proto is not None and watch_id is not None:
            if proto.watches.get(watch_id) is self:
                del proto.watches[watch_id]
            if tell_node and not proto.is_lost and proto.transport is not None:
                d = proto.callRemote(cc.CancelWatch, watch_id=watch_id)
                d.addErrback(lambda _: None)
        left, self._left = self._left, None
        if left is not None and not left.called:
            left.callback(None)

    # ---------------------------------------------------------- from a node

    def watch_events(self, payload: str, next_revision: int) -> None:
        """Take a batch of events (or a progress note) the node pushed."""
        if self._stopped:
            return
        try:
            events = decoded_events(payload)
        except (KeyError, TypeError, ValueError) as e:
            _log.warn("dropping a malformed watch message: {e}", e=e)
            self._leave(tell_node=True)  # resume elsewhere from what we have
            return
        fresh = [e for e in events if e.revision >= self.next_revision]
        if fresh:
            self.next_revision = fresh[-1].revision + 1
        self.next_revision = max(self.next_revision, next_revision)
        if fresh:
            try:
                self._on_events(fresh)
            except Exception:
                _log.failure("a watch callback failed")
        if self._ack_every and events:
            self._unacked += len(events)
            if self._unacked >= self._ack_every:
                self._send_ack()
            elif self._ack_timer is None:
                self._ack_timer = self._clock.callLater(WATCH_ACK_DELAY, self._ack_due)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self._send_ack()

    def _send_ack(self) -> None:
        """Tell the node how many of its events this watch took since the last WatchAck."""
        proto, count = self._proto, self._unacked
        self._unacked = 0
        if proto is None or self._watch_id is None or not count:
            return
        if not proto.is_lost and proto.transport is not None:
            proto.callRemote(cc.WatchAck, watch_id=self._watch_id, count=count)

    def watch_ended(self, reason: str) -> None:
        """The node ended the watch (it fell behind, or the node is stopping)."""
        self._end_reason = reason
        self._leave(tell_node=False)

    def watch_lost(self) -> None:
        """The connection carrying the watch closed."""
        self._leave(tell_node=False)

    # ------------------------------------------------------------ the loop

    def start(self) -> Watch:
        """Start following the cluster; return self."""
        Deferred.fromCoroutine(self._run()).addErrback(self._fail)
        return self

    async def _run(self) -> None:
        client = self._client
        clock = self._clock
        delay = client._retry_delay
        # Start where the client's requests go (the leader, once known): events
        # appear there first, and its connection is open already.
        known = client.leader
        address = known if known in client.addresses else client._next_address(None)
        first = True
        removed: set[Address] = set()  # nodes removed from the cluster: never asked again
        while not self._stopped:
            left: Deferred[None] = Deferred()
            self._left = left
            try:
                proto: _PooledAMP = await with_timeout(
                    client._pool.connection(address), client.attempt_timeout, clock
                )
                arguments = dict(self._arguments, batched_acks=True)
                if self.next_revision:
                    arguments["start_revision"] = self.next_revision
                call = proto.callRemote(cc.Watch, **arguments)
                # Taken on in the answer's own callback, before the next box
                # (this watch's first events) is read from the connection.
                call.addCallback(self._taken_on, proto, left)
                answer = await with_timeout(call, client.attempt_timeout, clock)
            except (Compacted, InvalidRequest) as e:
                raise e from None
            except Removed as e:
                removed.add(address)
                if set(client.addresses) <= removed:
                    raise Removed(f"{format_address(address)}: {e}") from None
                self._left = None
                address = _next_kept(client, address, removed)
                continue
            except Exception:  # unreachable, silent, not the leader's business: next node
                self._left = None
                if self._stopped:
                    return
                address = _next_kept(client, address, removed)
                await deferLater(clock, delay, lambda: None)
                delay = min(delay * 2, client._max_retry_delay)
                continue
            if self._stopped:
                return
            if not self.next_revision:
                self.next_revision = answer["start_revision"]
            if not first:
                self.resumes += 1
            first = False
            delay = client._retry_delay
            watchdog = self._watchdog(proto)
            await left
            if watchdog.active():
                watchdog.cancel()
            reason, self._end_reason = self._end_reason, None
            if reason is not None and reason.startswith("compacted"):
                raise Compacted(reason)
            if reason is not None and reason.startswith(cc.WATCH_ENDED_REMOVED):
                # The node learned it was removed: as if it had refused the watch.
                removed.add(address)
                if set(client.addresses) <= removed:
                    gone = reason[len(cc.WATCH_ENDED_REMOVED) :]
                    raise Removed(f"{format_address(address)}: {gone}")
                address = _next_kept(client, address, removed)
                continue
            if reason is not None:
                _log.info("watch ended by the node ({reason}); resuming", reason=reason)
            if not self._stopped:
                address = _next_kept(client, address, removed)

    def _taken_on(
        self, answer: dict[str, Any], proto: _PooledAMP, left: Deferred[None]
    ) -> dict[str, Any]:
        """The node serves the watch: route its events here, unless given up on meanwhile."""
        watch_id = answer["watch_id"]
        if self._stopped or self._left is not left or proto.is_lost:
            if not proto.is_lost:
                proto.callRemote(cc.CancelWatch, watch_id=watch_id).addErrback(lambda _: None)
            return answer
        self._proto, self._watch_id = proto, watch_id
        self._ack_every = answer.get("ack_every") or 0
        self._unacked = 0
        proto.watches[watch_id] = self
        return answer

    def _watchdog(self, proto: _PooledAMP) -> IDelayedCall:
        """Abort ``proto`` once the node has been silent for the silence timeout."""
        started = self._clock.seconds()

        def check() -> None:
            nonlocal call
            if self._proto is not proto:
                return
            silent = self._clock.seconds() - max(proto.last_heard, started)
            if silent >= self._silence_timeout:
                transport = proto.transport
                if transport is not None:  # a silent node may never finish a clean close
                    getattr(transport, "abortConnection", transport.loseConnection)()
                return
            call = self._clock.callLater(self._silence_timeout - silent, check)

        call = self._clock.callLater(self._silence_timeout, check)

        class _Handle:
            def active(self) -> bool:
                return call.active()

            def cancel(self) -> None:
                call.cancel()

        return _Handle()  # type: ignore[return-value]


def _next_kept(client: LeekyClient, after: Address, removed: set[Address]) -> Address:
    """Return the client's next address after ``after`` that is not in ``removed``."""
    address: Address = client._next_address(after)
    for _ in range(len(client.addresses)):
        if address not in removed:
            break
        address = client._next_address(address)
    return address
