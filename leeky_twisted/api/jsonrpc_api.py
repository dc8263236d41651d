"""The client API over HTTP: JSON-RPC 2.0 at ``POST /jsonrpc``.

Methods (positional params; named params work too)::

    put(key, value[, session])          -> true
    get(key[, {"stale": true}])         -> the value, or null when absent
    get(key, {"revisions": true})       -> {"revision": R, "kv": KV or null}
    range(start[, end[, options]])      -> {"revision", "kvs": [KV...], "count", "more"}
    range_prefix(prefix[, options])     -> the same, for every key starting with prefix
    txn(document[, session])            -> {"succeeded", "revision", "responses": [...]}
    watch(key[, options])               -> {"events": [EVENT...], "next_revision": N}
    lease_grant(ttl[, session])         -> a lease id;  put(key, value, session, {"lease": ID})
    lease_keepalive(id)                 -> its ttl;  lease_revoke(id[, session]) -> existed
    lease_ttl(id)                       -> {"id", "ttl", "remaining", "keys"}
    delete(key[, session])              -> true when the key existed
    cas(key, expected, new[, session])  -> true when swapped (expected null: "absent")
    append(key, suffix[, session])      -> the new length
    register_session()                  -> a new session id (one log entry)
    status()                            -> the node's status object

A KV is ``{"key", "value", "create_revision", "mod_revision", "version"}``;
range ``options`` are ``{"limit": N, "keys_only": bool, "count_only": bool,
"stale": bool}``; ``end`` null (or absent) reads to the last key. A ``txn``
document is described in ``api.coord``. ``watch`` is a long poll: options
``{"prefix": bool, "end": E, "from_revision": R, "wait": seconds (<= 60),
"limit": N}``; it answers at once with the held events from R (default: the
next revision), else waits up to ``wait`` (default 20 s) for the first;
poll again from ``next_revision``. An EVENT is ``{"revision", "type": "put" or
"delete", "key", "value", "create_revision", "mod_revision", "version"}``.
(A streamed form: ``GET /v1/watch``, see ``api.sse``.)

``session`` is ``{"session": ID, "seq": N, "ack": M}`` (``ack`` defaults to
``seq``): the write is applied at most once per (ID, N), a retry answers the
first outcome. A write without it is applied once per request. A session the
cluster does not hold (never registered, expired, evicted) is refused with
-32004 and nothing changes.

Any node answers: a follower forwards the request to the leader (see
``amp_api.KeyValueFrontend``). Errors are JSON-RPC 2.0 error objects:

======= ===========================================================
-32700  parse error (malformed JSON, not UTF-8, NaN or Infinity)
-32600  invalid request (not a request object, body too large, not POST,
        an id that is not null, a string of at most 256 characters, a
        64-bit integer or a finite number)
-32601  method not found
-32602  invalid params (wrong count or types; key/value refused)
-32603  internal error
-32000  not the leader (``data``: ``leader_id``, ``leader_address``)
-32001  unavailable: no leader known or reachable
-32002  "timed out, outcome unknown"
-32003  not committed: a new leader replaced the entry; safe to retry
-32004  session unknown or expired: register a new session
-32005  compacted: the watch's revision is older than the node's window
-32006  removed: this node was removed from the cluster; use another node
======= ===========================================================

The JSON-RPC 2.0 handling (parsing, checks, batches, notifications, body
limit) is the shared dispatcher of :mod:`leeky_twisted.protocol.jsonrpc`;
this module holds the methods and maps the node's errors to their codes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import resource, server

from leeky_twisted import defaults
from leeky_twisted.api.amp_api import KeyValueFrontend, RequestLimits, make_frontend
from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.protocol.jsonrpc import (
    InvalidParams,
    JSONRPCResource,
    JSONRPCSite,
    error_object,
)
from leeky_twisted.protocol.jsonrpc_codes import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

__all__ = [
    "COMMIT_TIMEOUT",
    "COMPACTED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_LEADER",
    "PARSE_ERROR",
    "REMOVED",
    "SESSION_EXPIRED",
    "UNAVAILABLE",
    "KeyValueJSONRPC",
    "make_http_site",
]

NOT_LEADER = -32000
UNAVAILABLE = -32001
COMMIT_TIMEOUT = -32002
NOT_COMMITTED = -32003
SESSION_EXPIRED = -32004
COMPACTED = -32005
REMOVED = -32006


class KeyValueJSONRPC(JSONRPCResource):
    """The JSON-RPC 2.0 resource of the key-value API (a leaf resource).

    :param max_body_bytes: refuse larger request bodies (-32600, HTTP 413).
    """

    def __init__(self, frontend: KeyValueFrontend, max_body_bytes: int) -> None:
        super().__init__(max_body_bytes)
        self.frontend = frontend

    # ------------------------------------------------------------- methods

    def jsonrpc_put(
        self, key: object, value: object, session: object = None, options: object = None
    ) -> Deferred[bool]:
        """Set ``key`` to ``value``; true once committed. ``{"lease": ID}`` attaches it."""
        lease = None
        if options is not None:
            if not isinstance(options, dict) or not set(options) <= {"lease"}:
                raise InvalidParams('put options must be an object like {"lease": 7}')
            lease = options.get("lease")
        d = self.frontend.put_now(key, value, _session_params(session), lease)
        return d.addCallback(lambda _: True)

    def jsonrpc_lease_grant(self, ttl: object, session: object = None) -> Deferred[int]:
        """Create a lease of ``ttl`` seconds; return its id."""
        return Deferred.fromCoroutine(self.frontend.lease_grant(ttl, _session_params(session)))

    def jsonrpc_lease_revoke(self, lease: object, session: object = None) -> Deferred[bool]:
        """End a lease and delete its keys; true when it existed."""
        return Deferred.fromCoroutine(self.frontend.lease_revoke(lease, _session_params(session)))

    def jsonrpc_lease_keepalive(self, lease: object) -> Deferred[int]:
        """Renew a lease for its ttl; return the ttl."""
        return Deferred.fromCoroutine(self.frontend.lease_keepalive(lease))

    def jsonrpc_lease_ttl(self, lease: object) -> Deferred[Any]:
        """Return ``{"id", "ttl", "remaining", "keys"}`` of a lease."""
        return Deferred.fromCoroutine(self.frontend.lease_ttl(lease))

    def jsonrpc_get(self, key: object, options: object = None) -> Deferred[Any]:
        """Return the value of ``key`` or null; ``{"stale": true}`` reads locally.

        With ``{"revisions": true}``: ``{"revision": R, "kv": KV or null}``.
        """
        if options is None:
            options = {}
        if not isinstance(options, dict) or not set(options) <= {"stale", "revisions"}:
            raise InvalidParams('options must be an object like {"stale": true}')
        stale = options.get("stale", False)
        revisions = options.get("revisions", False)
        if not isinstance(stale, bool):
            raise InvalidParams("stale must be true or false")
        if not isinstance(revisions, bool):
            raise InvalidParams("revisions must be true or false")
        if revisions:
            d = Deferred.fromCoroutine(self.frontend.get_kv(key, stale=stale))
            return d.addCallback(
                lambda found: {
                    "revision": found[1],
                    "kv": None if found[0] is None else found[0].to_json(),
                }
            )
        return self.frontend.get_now(key, stale=stale)

    def jsonrpc_range(
        self, start: object, end: object = None, options: object = None
    ) -> Deferred[Any]:
        """Return the keys in [start, end) (end null: to the last key), sorted."""
        return self._range(start, end, False, options)

    def jsonrpc_range_prefix(self, prefix: object, options: object = None) -> Deferred[Any]:
        """Return every key that starts with ``prefix``, sorted."""
        return self._range(prefix, None, True, options)

    def _range(self, start: object, end: object, prefix: bool, options: object) -> Deferred[Any]:
        if options is None:
            options = {}
        if not isinstance(options, dict) or not set(options) <= _RANGE_OPTIONS:
            raise InvalidParams(
                f"range options must be an object with keys from {sorted(_RANGE_OPTIONS)}"
            )
        stale = options.get("stale", False)
        if not isinstance(stale, bool):
            raise InvalidParams("stale must be true or false")
        coroutine = self.frontend.range(
            start,
            end,
            prefix=prefix,
            limit=options.get("limit", 0),
            keys_only=options.get("keys_only", False),
            count_only=options.get("count_only", False),
            stale=stale,
        )
        return Deferred.fromCoroutine(coroutine).addCallback(lambda r: r.to_json())

    def jsonrpc_watch(self, key: object, options: object = None) -> Deferred[Any]:
        """Long-poll the events of ``key`` (or a prefix, or [key, end)) from a revision."""
        if options is None:
            options = {}
        if not isinstance(options, dict) or not set(options) <= _WATCH_OPTIONS:
            raise InvalidParams(
                f"watch options must be an object with keys from {sorted(_WATCH_OPTIONS)}"
            )
        prefix = options.get("prefix", False)
        end = options.get("end")
        if end is None and prefix is False and isinstance(key, str):
            end = key + "\0"
        coroutine = self.frontend.poll_watch(
            key,
            end,
            prefix=prefix,
            from_revision=options.get("from_revision"),
            wait=options.get("wait", 20.0),
            limit=options.get("limit", 1000),
        )
        return Deferred.fromCoroutine(coroutine).addCallback(
            lambda found: {"events": [e.to_json() for e in found[0]], "next_revision": found[1]}
        )

    def jsonrpc_txn(self, document: object, session: object = None) -> Deferred[Any]:
        """Run a transaction (one log entry); return which branch ran and its answers."""
        d = self.frontend.guarded(self.frontend.txn_now(document, _session_params(session)))
        return d.addCallback(lambda r: r.to_json())

    def jsonrpc_delete(self, key: object, session: object = None) -> Deferred[bool]:
        """Remove ``key``; true when it existed."""
        return Deferred.fromCoroutine(self.frontend.delete(key, _session_params(session)))

    def jsonrpc_cas(
        self, key: object, expected: object, new: object, session: object = None
    ) -> Deferred[bool]:
        """Set ``key`` to ``new`` if it holds ``expected`` (null: absent); true when swapped."""
        coroutine = self.frontend.cas(key, expected, new, _session_params(session))
        return Deferred.fromCoroutine(coroutine)

    def jsonrpc_append(self, key: object, suffix: object, session: object = None) -> Deferred[int]:
        """Append ``suffix`` to the value of ``key``; return the new length."""
        return Deferred.fromCoroutine(self.frontend.append(key, suffix, _session_params(session)))

    def jsonrpc_register_session(self) -> Deferred[str]:
        """Open a client session; return its id."""
        return Deferred.fromCoroutine(self.frontend.register_session())

    def jsonrpc_submit(self, command: object) -> Deferred[Any]:
        """Replicate a raw command (``PUT k v``, or a remote executor's ``ADD f``)."""
        return Deferred.fromCoroutine(self.frontend.submit(command))

    def jsonrpc_query(self, request: object) -> Deferred[Any]:
        """Answer a raw read-only request (``GET k``, or a remote executor's ``READ f``)."""
        return Deferred.fromCoroutine(self.frontend.query(request))

    def jsonrpc_status(self) -> dict[str, Any]:
        """Return this node's status."""
        return self.frontend.status()

    # -------------------------------------------------------------- errors

    #: Answer a request body (one call or a batch): the shared dispatcher, as is.
    answer = JSONRPCResource.dispatch

    def error_for(self, failure: Failure, method: str) -> dict[str, Any]:
        """Return the JSON-RPC error object for a failed call."""
        e = failure.value
        if isinstance(e, NotLeader):
            data = {"leader_id": e.leader_id, "leader_address": e.leader_address}
            return error_object(NOT_LEADER, str(e), data)
        if isinstance(e, CommitTimeout):
            return error_object(COMMIT_TIMEOUT, str(e))
        if isinstance(e, Unavailable):
            return error_object(UNAVAILABLE, str(e))
        if isinstance(e, NotCommitted):
            return error_object(NOT_COMMITTED, str(e))
        if isinstance(e, SessionExpired):
            return error_object(SESSION_EXPIRED, str(e))
        if isinstance(e, Compacted):
            return error_object(COMPACTED, str(e))
        if isinstance(e, Removed):
            return error_object(REMOVED, str(e))
        if isinstance(e, InvalidRequest):
            return error_object(INVALID_PARAMS, str(e))
        if isinstance(e, LeekyError):
            return error_object(INTERNAL_ERROR, str(e))
        return super().error_for(failure, method)


_SESSION_KEYS = frozenset({"session", "seq", "ack"})
_RANGE_OPTIONS = frozenset({"limit", "keys_only", "count_only", "stale"})
_WATCH_OPTIONS = frozenset({"prefix", "end", "from_revision", "wait", "limit"})


def _session_params(session: object) -> tuple[object, object, object] | None:
    """Return (session id, seq, ack) from a write's session object, or None without one."""
    if session is None:
        return None
    if not isinstance(session, dict) or not set(session) <= _SESSION_KEYS:
        raise InvalidParams('session must be an object like {"session": ID, "seq": 1, "ack": 1}')
    if session.get("session") is None or session.get("seq") is None:
        raise InvalidParams("a session needs both session and seq")
    return session["session"], session["seq"], session.get("ack")


def make_http_site(
    node_or_frontend: IRaftNode | KeyValueFrontend,
    reactor: Any = None,
    *,
    max_body_bytes: int | None = None,
    **frontend_options: Any,
) -> server.Site:
    """Return a Site serving the JSON-RPC API at ``/jsonrpc``.

    Pass the shared :class:`~leeky_twisted.api.amp_api.KeyValueFrontend`, or
    a node plus ``reactor`` (and any ``make_frontend`` options). The body
    limit defaults to room for two maximal values (a ``cas``) plus 64 KiB.
    """
    if isinstance(node_or_frontend, KeyValueFrontend):
        frontend = node_or_frontend
    else:
        if reactor is None:
            raise TypeError("a reactor is needed to build a frontend")
        frontend = make_frontend(node_or_frontend, reactor, **frontend_options)
    if max_body_bytes is None:
        limits = frontend.limits if frontend.limits is not None else RequestLimits()
        max_body_bytes = defaults.http_body_bytes(limits.max_value_bytes)
    root = resource.Resource()
    root.putChild(b"jsonrpc", KeyValueJSONRPC(frontend, max_body_bytes))
    return JSONRPCSite(root, max_body_bytes)
