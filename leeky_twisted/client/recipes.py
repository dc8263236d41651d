"""A distributed lock built on leases, revisions and watches (as etcd's).

Each client keeps one **session lease** per ttl (:class:`Session`, as etcd's
``concurrency.Session``): granted at its first :func:`acquire`, kept alive
every ttl/3 for as long as the client lives, and shared by every lock and
campaign of the client. An acquisition is then one transaction (put
``NAME/<lease id>`` on the lease, and read every key under ``NAME/``) and a
release one delete: two log entries a cycle, and no read when nobody waits.

The lock is held once no key under ``NAME/`` has an older create revision.
Until then :func:`acquire` watches only its predecessor (the key created just
before its own) for a delete: no polling, and one release wakes one waiter,
not all of them. The waiter then reads the queue from the node's own state
(no consensus read: older keys only ever go, see :func:`_queue_after`).

The **fencing token** is the create revision of the holder's key: it grows
with every acquisition. Pass it along with every write the lock protects and
have the protected store refuse a token lower than one it has seen: a holder
that was paused past its lease (and lost the lock without knowing) is then
refused instead of overwriting its successor's work. If a keepalive says the
session lease is gone, ``lost`` fires on every lock held through it and the
holder must stop acting on the lock; the next acquisition grants a new lease.
The same happens when no keepalive has been answered for a whole ttl (the
cluster unreachable from this client): the lease may have expired, so the
session ends at the latest moment the client still knows it held: ttl seconds
after it *sent* the last keepalive that was answered (the leader counts its
ttl from when it got that keepalive, which is later).

A release that cannot be committed (the cluster unreachable for the client's
whole timeout) gives the session up: its keepalives stop, so its keys go when
the lease expires, and the other locks held through it are reported lost.
One client holds or awaits a given lock name once at a time.
"""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from leeky_twisted.protocol.errors import InvalidRequest, LeekyError
from leeky_twisted.protocol.kvresults import Event, RangeResult

__all__ = ["Lock", "Session", "acquire", "campaign", "end_sessions", "observe", "session_of"]

_log = Logger()

#: Sessions an acquisition starts, at most, when it finds its lease expired.
_SESSION_ATTEMPTS = 3


class Session:
    """One lease of ``ttl`` seconds that a client's locks share, kept alive every ttl/3.

    Use :func:`session_of` rather than building one. ``ended`` once the lease
    is found gone, given up, or the client closed: a new session takes over.
    """

    def __init__(self, client: Any, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self.lease: int | None = None
        self.ended = False
        #: the locks held through this session
        self.held: set[Lock] = set()
        #: the lock names held or awaited through this session
        self.names: set[str] = set()
        self._granting: list[Deferred[int]] = []
        self._clock = client._clock
        self._keepalive = LoopingCall(self._renew)
        self._keepalive.clock = self._clock
        #: until when (client clock) the lease is known to be live; then it may be gone
        self.held_until: float | None = None
        self._expiry: IDelayedCall | None = None

    def lease_id(self) -> Deferred[int]:
        """Fire with the session's lease, granting it first if needed (one grant for all)."""
        waiter: Deferred[int] = Deferred()
        if self.lease is not None:
            waiter.callback(self.lease)
            return waiter
        self._granting.append(waiter)
        if len(self._granting) == 1:
            sent = self._clock.seconds()
            self.client.lease_grant(self.ttl).addBoth(self._granted, sent)
        return waiter

    def _granted(self, outcome: int | Failure, sent: float) -> None:
        waiters, self._granting = self._granting, []
        if isinstance(outcome, Failure):
            for waiter in waiters:
                waiter.errback(outcome)
            return
        self.lease = outcome
        if self.ended:  # the client closed meanwhile: nobody keeps it alive
            for waiter in waiters:
                waiter.errback(InvalidRequest("the client is closed"))
            return
        self._live_until(sent + self.ttl)
        self._keepalive.start(max(self.ttl / 3, 0.2), now=False)
        for waiter in waiters:
            waiter.callback(outcome)

    def _renew(self) -> Deferred[Any]:
        lease = self.lease
        sent = self._clock.seconds()
        d = self.client.lease_keepalive(lease)

        def renewed(ttl: int) -> None:
            if not self.ended:
                self._live_until(sent + min(ttl, self.ttl))

        def failed(f: Failure) -> None:
            if f.check(InvalidRequest):
                self.end(f"lease {lease} is gone: {f.getErrorMessage()}")
            elif not f.check(LeekyError):
                _log.failure("lock session keepalive failed", f)

        return d.addCallbacks(renewed, failed)

    def _live_until(self, when: float) -> None:
        """The lease is known live until ``when``: end the session then, unless renewed."""
        if self.held_until is not None and when <= self.held_until:
            return
        self.held_until = when
        if self._expiry is not None and self._expiry.active():
            self._expiry.reset(max(when - self._clock.seconds(), 0.0))
        else:
            self._expiry = self._clock.callLater(
                max(when - self._clock.seconds(), 0.0), self._may_have_expired
            )

    def _may_have_expired(self) -> None:
        self._expiry = None
        self.give_up(
            f"no keepalive of lease {self.lease} was answered for {self.ttl} s, "
            "so the lease may have expired (is the cluster reachable?)"
        )

    def pause(self) -> None:
        """Stop the keepalives and the expiry timer (as a paused process would): the lease
        runs out by itself, and nothing here notices."""
        if self._keepalive.running:
            self._keepalive.stop()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None

    def stop(self) -> None:
        """Stop keeping the lease alive and hand out no more locks (the client closes)."""
        self.pause()
        self._retire()

    def end(self, reason: str) -> None:
        """The lease is gone, or given up: report every held lock lost; a new session follows."""
        self.stop()
        held, self.held = self.held, set()
        for lock in held:
            lock._lost(reason)

    def _retire(self) -> None:
        self.ended = True
        sessions = self.client.lock_sessions
        if sessions.get(self.ttl) is self:
            del sessions[self.ttl]

    def give_up(self, reason: str) -> None:
        """End the session and revoke its lease if the cluster lets us (else it expires)."""
        self.end(reason)
        if self.lease is not None:
            self.client.lease_revoke(self.lease).addErrback(lambda _: None)


def session_of(client: Any, ttl: int) -> Session:
    """Return ``client``'s live lock session of ``ttl`` seconds, starting one if needed."""
    sessions: dict[int, Session] = client.lock_sessions
    session = sessions.get(ttl)
    if session is None or session.ended:
        session = sessions[ttl] = Session(client, ttl)
    return session


async def end_sessions(client: Any) -> None:
    """Revoke ``client``'s lock session leases now (the keys still on them go too).

    For a program about to exit: without it a session lease ends by itself
    ``ttl`` seconds (plus the bound in docs/coordination.md) after the client
    closed.
    """
    for session in list(client.lock_sessions.values()):
        lease = session.lease
        session.end("the client ended its lock sessions")
        if lease is not None:
            with contextlib.suppress(LeekyError):
                await client.lease_revoke(lease)


class Lock:
    """A held lock: ``key``, ``token`` (the fencing token), ``lease``; :meth:`release` it."""

    def __init__(self, session: Session, name: str, token: int) -> None:
        assert session.lease is not None
        self.session = session
        self.client = session.client
        self.name = name
        self.lease = session.lease
        self.key = _key(name, session.lease)
        self.token = token
        #: fires (with the reason) if the session lease is found gone while the lock is held
        self.lost: Deferred[str] = Deferred()
        self.is_lost = False
        self.released = False

    def _lost(self, reason: str) -> None:
        self.session.names.discard(self.name)
        if not self.is_lost and not self.released:
            self.is_lost = True
            self.lost.callback(reason)

    def _stop(self) -> None:
        """Stop the session's keepalives, as a paused holder would (the fault rig's stall)."""
        self.session.pause()

    async def release(self) -> None:
        """Give the lock up: delete its key (the next waiter wakes).

        Does nothing when already released, or lost. When the delete cannot
        be committed, the session is given up (its lease then expires, and
        the key with it) and the error is raised.
        """
        if self.released or self.is_lost:
            return
        self.released = True
        session = self.session
        session.held.discard(self)
        try:
            await self.client.delete(self.key)
        except BaseException as e:  # not committed, or cancelled: the lease takes the key
            session.give_up(f"the release of {self.key} failed: {e!r}")
            raise
        finally:
            session.names.discard(self.name)

    def release_on_shutdown(self, reactor: Any) -> None:
        """Release when ``reactor`` shuts down (Ctrl-C), so waiters need not wait the ttl."""

        def release() -> Deferred[Any]:
            return Deferred.fromCoroutine(self.release()).addErrback(lambda _: None)

        reactor.addSystemEventTrigger("before", "shutdown", release)


def _key(name: str, lease: int) -> str:
    return f"{name}/{lease:016x}"


async def acquire(client: Any, name: str, ttl: int = 10, value: str = "") -> Lock:
    """Wait for the lock ``name``; return it held (see the module docstring).

    ``value`` is stored in the holder's key (an election's proposal). The
    client's session lease of ``ttl`` seconds carries the key.
    """
    if not name or "\0" in name:
        raise InvalidRequest("a lock name must be a non-empty string without NUL")
    for attempt in range(_SESSION_ATTEMPTS):
        session = session_of(client, ttl)
        if name in session.names:
            raise InvalidRequest(
                f"this client already holds or awaits the lock {name!r}; release it first"
                " (or take it through another client)"
            )
        lease = await session.lease_id()
        if session.ended:
            continue
        session.names.add(name)
        try:
            created = await _create(client, name, lease, value)
        except InvalidRequest as e:
            session.names.discard(name)
            if f"lease {lease} not found" not in str(e) or attempt == _SESSION_ATTEMPTS - 1:
                raise
            session.end(f"lease {lease} is gone: {e}")  # it expired unnoticed: a new one
            continue
        except BaseException as e:  # unknown outcome, or cancelled: the key may exist
            session.names.discard(name)
            session.give_up(f"the creation of {_key(name, lease)} failed: {e!r}")
            raise
        return await _wait_turn(session, name, created)
    raise AssertionError("unreachable")


async def _create(client: Any, name: str, lease: int, value: str) -> RangeResult:
    """Put our key on the lease and read the queue, in one transaction; return the queue."""
    key = _key(name, lease)
    result = await client.txn(
        compare=[{"key": key, "target": "create", "op": "==", "value": 0}],
        success=[
            {"type": "put", "key": key, "value": value, "lease": lease},
            {"type": "range", "prefix": name + "/", "keys_only": True},
        ],
    )
    if not result.succeeded:
        raise InvalidRequest(f"lock key {key} exists already (written by another program?)")
    listing = result.responses[1]
    if not isinstance(listing, RangeResult):
        raise LeekyError(f"the lock transaction answered {listing!r:.80} for its range")
    if listing.more:  # more waiters than a transaction reads: read them all
        listing = await client.range_prefix(name + "/", keys_only=True)
    return listing


async def _wait_turn(session: Session, name: str, listing: RangeResult) -> Lock:
    """Wait until no key under ``name/`` is older than ours; return the held lock."""
    client = session.client
    assert session.lease is not None
    key = _key(name, session.lease)
    try:
        while True:
            mine = next((kv for kv in listing.kvs if kv.key == key), None)
            if mine is None or session.ended:
                raise InvalidRequest(
                    f"lock key {key} vanished: lease {session.lease} expired or was revoked"
                )
            older = [kv for kv in listing.kvs if kv.create_revision < mine.create_revision]
            if not older:
                lock = Lock(session, name, mine.create_revision)
                session.held.add(lock)
                return lock
            predecessor = max(older, key=lambda kv: kv.create_revision)
            await _deleted(client, predecessor.key, listing.revision + 1)
            listing = await _queue_after(client, name, mine.create_revision)
    except BaseException:
        session.names.discard(name)
        if not session.ended:
            try:
                await client.delete(key)
            except LeekyError as e:
                session.give_up(f"withdrawing {key} failed: {e}")
        raise


async def _queue_after(client: Any, name: str, created: int) -> RangeResult:
    """Read the keys under ``name/`` from a node's own state, at or after revision ``created``.

    No consensus read is needed: a key older than ours can only go, never
    come, so any state at or after our key's creation that shows none older
    proves the lock is ours (a node that has not yet applied that revision
    is passed over for a linearizable read).
    """
    listing: RangeResult = await client.range_prefix(name + "/", keys_only=True, stale=True)
    if listing.revision < created:
        listing = await client.range_prefix(name + "/", keys_only=True)
    return listing


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
