"""A distributed lock built on leases, revisions and watches (as etcd's).

:func:`acquire` grants a lease, puts ``NAME/<lease id>`` on it, and holds
the lock once no key under ``NAME/`` has an older create revision. Until then
it watches only its predecessor (the key created just before its own) for a
delete: no polling, and one release wakes one waiter, not all of them.

The **fencing token** is the create revision of the holder's key: it grows
with every acquisition. Pass it along with every write the lock protects and
have the protected store refuse a token lower than one it has seen: a holder
that was paused past its lease (and lost the lock without knowing) is then
refused instead of overwriting its successor's work. The lease is kept
alive every ttl/3 seconds; if a keepalive says the lease is gone, ``lost``
fires and the holder must stop acting on the lock.
"""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from leeky_twisted.protocol.errors import InvalidRequest, LeekyError
from leeky_twisted.protocol.kvresults import Event

__all__ = ["Lock", "acquire", "campaign", "observe"]

_log = Logger()


class Lock:
    """A held lock: ``key``, ``token`` (the fencing token), ``lease``; :meth:`release` it."""

    def __init__(self, client: Any, name: str, lease: int, ttl: int) -> None:
        self.client = client
        self.name = name
        self.lease = lease
        self.key = f"{name}/{lease:016x}"
        self.token = 0
        #: fires (with the reason) if the lease is found gone while the lock is held
        self.lost: Deferred[str] = Deferred()
        self.is_lost = False
        self.released = False
        self._keepalive = LoopingCall(self._renew)
        self._keepalive.clock = client._clock
        self._keepalive.start(max(ttl / 3, 0.2), now=False)

    def _renew(self) -> Deferred[Any]:
        d = self.client.lease_keepalive(self.lease)

        def failed(f: Any) -> None:
            if f.check(InvalidRequest) and not self.is_lost:
                self._stop()
                self.is_lost = True
                self.lost.callback(f"lease {self.lease} is gone: {f.getErrorMessage()}")
            elif not f.check(LeekyError):
                _log.failure("lock keepalive failed", f)

        return d.addErrback(failed)

    def _stop(self) -> None:
        if self._keepalive.running:
            self._keepalive.stop()

    async def release(self) -> None:
        """Give the lock up: revoke the lease (its key goes, the next waiter wakes).

        Does nothing when already released, or lost.
        """
        self._stop()
        if self.released or self.is_lost:
            return
        self.released = True
        await self.client.lease_revoke(self.lease)

    def release_on_shutdown(self, reactor: Any) -> None:
        """Release when ``reactor`` shuts down (Ctrl-C), so waiters need not wait the ttl."""

        def release() -> Deferred[Any]:
            return Deferred.fromCoroutine(self.release()).addErrback(lambda _: None)

        reactor.addSystemEventTrigger("before", "shutdown", release)


async def acquire(client: Any, name: str, ttl: int = 10, value: str = "") -> Lock:
    """Wait for the lock ``name``; return it held (see the module docstring).

    ``value`` is stored in the holder's key (an election's proposal).
    """
    if not name or "\0" in name:
        raise InvalidRequest("a lock name must be a non-empty string without NUL")
    lease = await client.lease_grant(ttl)
    lock = Lock(client, name, lease, ttl)
    try:
        await client.put(lock.key, value, lease=lease)
        while True:
            # one read gives both the token (our key's create revision) and the queue
            listing = await client.range_prefix(name + "/", keys_only=True)
            mine = next((kv for kv in listing.kvs if kv.key == lock.key), None)
            if mine is None:
                raise InvalidRequest(f"lock key {lock.key} vanished: lease {lease} expired")
            lock.token = mine.create_revision
            older = [kv for kv in listing.kvs if kv.create_revision < lock.token]
            if not older:
                return lock
            predecessor = max(older, key=lambda kv: kv.create_revision)
            await _deleted(client, predecessor.key, listing.revision + 1)
    except BaseException:
        lock._stop()
        with contextlib.suppress(LeekyError):
            await client.lease_revoke(lease)
        raise


async def _deleted(client: Any, key: str, from_revision: int) -> None:
    """Wait until ``key`` is deleted at or after ``from_revision``."""
    gone: Deferred[None] = Deferred()

    def seen(events: list[Event]) -> None:
        if any(e.kind == "delete" for e in events) and not gone.called:
            gone.callback(None)

    watch = client.watch(key, seen, start_revision=from_revision)
    watch.done.addErrback(lambda f: gone.errback(f) if not gone.called else None)
    try:
        await gone
    finally:
        watch.cancel()


# ------------------------------------------------------------- election


async def campaign(client: Any, name: str, proposal: str, ttl: int = 10) -> Lock:
    """Wait to become the leader of election ``name``; return the held leadership.

    Leadership is the lock ``name`` holding ``proposal``: the candidate whose
    key is oldest leads. Resign with ``release()``; ``lost`` fires if the
    lease is lost. Observers see ``proposal`` as the leader's.
    """
    return await acquire(client, name, ttl, proposal)


def observe(client: Any, name: str, on_leader: Any) -> Any:
    """Call ``on_leader(proposal or None)`` each time the leader of ``name`` changes.

    Follows the candidates' keys from a watch (no polling). Returns a
    Deferred of the Watch (``cancel()`` it to stop).
    """

    async def start() -> Any:
        listing = await client.range_prefix(name + "/")
        candidates = {kv.key: (kv.create_revision, kv.value) for kv in listing.kvs}
        shown: list[object] = [object()]

        def show() -> None:
            leader = min(candidates.values(), default=None)
            proposal = None if leader is None else leader[1]
            if proposal != shown[0]:
                shown[0] = proposal
                on_leader(proposal)

        def seen(events: list[Event]) -> None:
            for e in events:
                if e.kind == "delete":
                    candidates.pop(e.key, None)
                else:
                    candidates[e.key] = (e.create_revision, e.value)
            show()

        show()
        return client.watch(name + "/", seen, prefix=True, start_revision=listing.revision + 1)

    return Deferred.fromCoroutine(start())
