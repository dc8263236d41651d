"""The client side of a watch: one AMP connection that follows the cluster.

:class:`Watch` asks any node for the events of a key or prefix (every node
serves watches from its own applied state) and receives them pushed as
``WatchEvents``. When the connection breaks (the node died, was paused past
``silence_timeout``, or ended the watch because it fell behind) it moves to
the next node and resumes from the revision after the last one it received:
events of one revision always arrive together, and anything below that
revision is dropped, so the program sees every event once, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.ampframes import QuietAMP
from leeky_twisted.protocol.errors import Compacted, InvalidRequest
from leeky_twisted.protocol.kvresults import Event, event_from_json

if TYPE_CHECKING:
    from leeky_twisted.client.library import LeekyClient

__all__ = ["DEFAULT_SILENCE_TIMEOUT", "Watch"]

_log = Logger()

#: Seconds without a word from the node (nodes send progress every 10 s) before
#: a watch gives up on it and resumes elsewhere.
DEFAULT_SILENCE_TIMEOUT = 30.0


class _WatchLocator(amp.CommandLocator):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self.watch = watch

    @cc.WatchEvents.responder
    def events(self, watch_id: int, events: str, next_revision: int) -> dict[str, Any]:
        self.watch._received(events, next_revision)
        return {}

    @cc.WatchEnded.responder
    def ended(self, watch_id: int, reason: str) -> dict[str, Any]:
        self.watch._ended(reason)
        return {}


class _WatchAMP(QuietAMP):
    def __init__(self, watch: Watch) -> None:
        super().__init__(locator=_WatchLocator(watch))
        self.lost: Deferred[None] = Deferred()
        self.heard = 0.0
        self._watch = watch

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.heard = self._watch._clock.seconds()
        super().ampBoxReceived(box)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        if not self.lost.called:
            self.lost.callback(None)


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
        self._proto: _WatchAMP | None = None
        self._end_reason: str | None = None
        self.resumes = 0  #: connections opened after the first

    def cancel(self) -> None:
        """Stop watching; ``done`` fires with None."""
        if self._stopped:
            return
        self._stopped = True
        self._drop()
        if not self.done.called:
            self.done.callback(None)

    def _fail(self, e: Exception) -> None:
        self._stopped = True
        self._drop()
        if not self.done.called:
            self.done.errback(e)

    def _drop(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.loseConnection()

    # ---------------------------------------------------------- from a node

    def _received(self, payload: str, next_revision: int) -> None:
        if self._stopped:
            return
        try:
            events = [event_from_json(e) for e in json.loads(payload)]
        except (KeyError, TypeError, ValueError) as e:
            _log.warn("dropping a malformed watch message: {e}", e=e)
            self._drop()  # resume elsewhere from what we have
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

    def _ended(self, reason: str) -> None:
        self._end_reason = reason
        self._drop()

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
        # appear there first, while a follower learns of a commit with the
        # leader's next message (up to a heartbeat later).
        known = client.leader
        address = known if known in client.addresses else client._next_address(None)
        first = True
        while not self._stopped:
            proto = _WatchAMP(self)
            self._proto = proto
            try:
                from leeky_twisted.client.library import with_timeout

                await with_timeout(
                    client._pool._connect(address, proto), client.attempt_timeout, clock
                )
                arguments = dict(self._arguments)
                if self.next_revision:
                    arguments["start_revision"] = self.next_revision
                answer = await with_timeout(
                    proto.callRemote(cc.Watch, **arguments), client.attempt_timeout, clock
                )
            except (Compacted, InvalidRequest) as e:
                raise e from None
            except Exception:  # unreachable, silent, not the leader's business: next node
                self._drop()
                if self._stopped:
                    return
                address = client._next_address(address)
                await deferLater(clock, delay, lambda: None)
                delay = min(delay * 2, client._max_retry_delay)
                continue
            if not self.next_revision:
                self.next_revision = answer["start_revision"]
            if not first:
                self.resumes += 1
            first = False
            delay = client._retry_delay
            proto.heard = clock.seconds()
            watchdog = self._watchdog(proto)
            await proto.lost
            if watchdog.active():
                watchdog.cancel()
            reason, self._end_reason = self._end_reason, None
            if reason is not None and reason.startswith("compacted"):
                raise Compacted(reason)
            if reason is not None:
                _log.info("watch ended by the node ({reason}); resuming", reason=reason)
            address = client._next_address(address)

    def _watchdog(self, proto: _WatchAMP) -> IDelayedCall:
        def check() -> None:
            nonlocal call
            silent = self._clock.seconds() - proto.heard
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
