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
======= ===========================================================

Why not txJSON-RPC's ``web.jsonrpc.JSONRPC`` as is: its ``render`` lets a
malformed body, a batch (JSON array), a request without ``method`` or a
non-numeric ``jsonrpc`` version raise out of ``render`` (Twisted then answers
an HTML 500), reports wrong parameters as code 8002 instead of -32602, logs
every request body in full, and has no body size limit; and its module imports
the global reactor at import time. ``JSONRPC`` is ``Resource`` plus txJSON-RPC's
``BaseSubhandler`` (the ``jsonrpc_*`` method lookup, ``_getFunction``) plus
that ``render``. So the resource here is ``Resource`` plus ``BaseSubhandler``
with its own ``render``: txJSON-RPC's method lookup, none of the above
problems, and importing this module leaves the reactor alone.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from txjsonrpc import jsonrpclib
from txjsonrpc.jsonrpc import BaseSubhandler

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
    SessionExpired,
    Unavailable,
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
    "SESSION_EXPIRED",
    "UNAVAILABLE",
    "KeyValueJSONRPC",
    "make_http_site",
]

_log = Logger()

NOT_LEADER = -32000
UNAVAILABLE = -32001
COMMIT_TIMEOUT = -32002
NOT_COMMITTED = -32003
SESSION_EXPIRED = -32004
COMPACTED = -32005

#: At most this many calls in one batch request.
MAX_BATCH = 100
#: The longest string id a request may carry (ids are echoed in the answer).
MAX_ID_CHARS = 256
#: Integer ids are signed 64-bit.
_ID_INTS = range(-(2**63), 2**63)


def _refuse_constant(name: str) -> None:
    """Refuse NaN and Infinity, which Python's parser accepts but JSON does not have."""
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every request: ``json.loads`` with a keyword builds a new one per call.
_decode_text = json.JSONDecoder(parse_constant=_refuse_constant).decode


def _decode_body(body: bytes) -> Any:
    """Parse a request body exactly as ``json.loads(body, parse_constant=...)`` would."""
    return _decode_text(body.decode(json.detect_encoding(body), "surrogatepass"))


def _id_problem(request_id: object) -> str | None:
    """Return why ``request_id`` is not an acceptable JSON-RPC id, or None."""
    if request_id is None:
        return None
    if isinstance(request_id, str):
        return None if len(request_id) <= MAX_ID_CHARS else f"id longer than {MAX_ID_CHARS}"
    if isinstance(request_id, bool):
        return "id must be a string, a number or null"
    if isinstance(request_id, int):
        return None if request_id in _ID_INTS else "id must be a 64-bit integer"
    if isinstance(request_id, float):
        return None if math.isfinite(request_id) else "id must be a finite number"
    return "id must be a string, a number or null"


class _InvalidParams(Exception):
    """The params do not fit the method."""


def _error(code: int, message: str, data: object = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def _response(request_id: object, *, result: object = None, error: object = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "error": error, "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def _error_for(failure: Failure) -> dict[str, Any]:
    """Return the JSON-RPC error object for a failed call."""
    e = failure.value
    if isinstance(e, NotLeader):
        data = {"leader_id": e.leader_id, "leader_address": e.leader_address}
        return _error(NOT_LEADER, str(e), data)
    if isinstance(e, CommitTimeout):
        return _error(COMMIT_TIMEOUT, str(e))
    if isinstance(e, Unavailable):
        return _error(UNAVAILABLE, str(e))
    if isinstance(e, NotCommitted):
        return _error(NOT_COMMITTED, str(e))
    if isinstance(e, SessionExpired):
        return _error(SESSION_EXPIRED, str(e))
    if isinstance(e, Compacted):
        return _error(COMPACTED, str(e))
    if isinstance(e, InvalidRequest | _InvalidParams):
        return _error(INVALID_PARAMS, str(e))
    if isinstance(e, LeekyError):
        return _error(INTERNAL_ERROR, str(e))
    _log.failure("JSON-RPC call failed", failure)
    return _error(INTERNAL_ERROR, f"internal error: {failure.getErrorMessage()}")


class KeyValueJSONRPC(resource.Resource, BaseSubhandler):  # type: ignore[misc]
    """The JSON-RPC 2.0 resource of the key-value API (a leaf resource).

    :param max_body_bytes: refuse larger request bodies (-32600, HTTP 413).
    """

    isLeaf = True

    def __init__(self, frontend: KeyValueFrontend, max_body_bytes: int) -> None:
        resource.Resource.__init__(self)
        BaseSubhandler.__init__(self)
        self.frontend = frontend
        #: Methods already looked up by name (only ``jsonrpc_*`` methods of this
        #: class, so it stays as small as the API).
        self._functions: dict[str, Callable[..., Any]] = {}
        self.max_body_bytes = max_body_bytes

    # ------------------------------------------------------------- methods

    def jsonrpc_put(
        self, key: object, value: object, session: object = None, options: object = None
    ) -> Deferred[bool]:
        """Set ``key`` to ``value``; true once committed. ``{"lease": ID}`` attaches it."""
        lease = None
        if options is not None:
            if not isinstance(options, dict) or not set(options) <= {"lease"}:
                raise _InvalidParams('put options must be an object like {"lease": 7}')
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
            raise _InvalidParams('options must be an object like {"stale": true}')
        stale = options.get("stale", False)
        revisions = options.get("revisions", False)
        if not isinstance(stale, bool):
            raise _InvalidParams("stale must be true or false")
        if not isinstance(revisions, bool):
            raise _InvalidParams("revisions must be true or false")
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
            raise _InvalidParams(
                f"range options must be an object with keys from {sorted(_RANGE_OPTIONS)}"
            )
        stale = options.get("stale", False)
        if not isinstance(stale, bool):
            raise _InvalidParams("stale must be true or false")
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
            raise _InvalidParams(
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
        coroutine = self.frontend.txn(document, _session_params(session))
        return Deferred.fromCoroutine(coroutine).addCallback(lambda r: r.to_json())

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

    # -------------------------------------------------------------- render

    def render(self, request: server.Request) -> int | bytes:
        """Answer one JSON-RPC request or batch; never raise."""
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            return self._finish(
                request, 405, _response(None, error=_error(INVALID_REQUEST, "use POST"))
            )
        content = request.content
        content.seek(0, io.SEEK_END)
        too_large = getattr(request, "body_too_large", False) or (
            content.tell() > self.max_body_bytes
        )
        if too_large:
            message = f"request body too large (limit {self.max_body_bytes} bytes)"
            return self._finish(
                request, 413, _response(None, error=_error(INVALID_REQUEST, message))
            )
        content.seek(0)
        d = self.answer(content.read())

        finished = {"gone": False}
        request.notifyFinish().addErrback(lambda _: finished.update(gone=True))

        def send(answer: object) -> None:
            if not finished["gone"]:
                self._finish(request, 200, answer)

        d.addCallback(send)
        d.addErrback(lambda f: _log.failure("JSON-RPC response failed", f))
        return server.NOT_DONE_YET

    def answer(self, body: bytes) -> Deferred[Any]:
        """Answer a JSON-RPC request body (one call or a batch); never fails.

        Fires with the response object (or list, for a batch), or None when
        nothing is to be sent back (notifications only).
        """
        try:
            parsed = _decode_body(body)
        except (ValueError, RecursionError) as e:
            return _now(_response(None, error=_error(PARSE_ERROR, f"parse error: {e}")))
        if isinstance(parsed, list):
            if not parsed or len(parsed) > MAX_BATCH:
                message = f"a batch must hold 1 to {MAX_BATCH} requests"
                return _now(_response(None, error=_error(INVALID_REQUEST, message)))
            d: Deferred[Any] = gatherResults([self._call(item) for item in parsed])
            return d.addCallback(lambda answers: [a for a in answers if a is not None] or None)
        return self._call(parsed)

    def _lookup(self, method: str) -> Callable[..., Any]:
        """Find ``method`` (txJSON-RPC's lookup); remember plain ``jsonrpc_*`` methods."""
        function: Callable[..., Any] = self._getFunction(method)
        if "." not in method and method != "__dir__":
            self._functions[method] = function
        return function

    def too_large(self) -> dict[str, Any]:
        """Return the error response for a body over the limit."""
        message = f"request body too large (limit {self.max_body_bytes} bytes)"
        return _response(None, error=_error(INVALID_REQUEST, message))

    def _call(self, call: object) -> Deferred[dict[str, Any] | None]:
        """Run one call; fire with its response object, or None for a notification."""
        if not isinstance(call, dict):
            return _now(_response(None, error=_error(INVALID_REQUEST, "not a request object")))
        request_id = call.get("id")
        notification = "id" not in call
        problem = _id_problem(request_id)
        if problem is not None:
            return _now(_response(None, error=_error(INVALID_REQUEST, problem)))
        method, params = call.get("method"), call.get("params", [])
        problem = None
        if call.get("jsonrpc", "2.0") != "2.0":
            problem = 'only "jsonrpc": "2.0" is supported'
        elif not isinstance(method, str):
            problem = "method must be a string"
        elif not isinstance(params, list | dict):
            problem = "params must be an array or an object"
        if problem is not None:
            return _now(_response(request_id, error=_error(INVALID_REQUEST, problem)))
        try:
            function = self._functions.get(method) or self._lookup(method)
        except jsonrpclib.Fault:
            error = _error(METHOD_NOT_FOUND, f"method not found: {method[:100]!r}")
            return _now(None if notification else _response(request_id, error=error))
        args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
        d = maybeDeferred(_checked_call, function, args, kwargs)

        def answer(result: object) -> dict[str, Any] | None:
            return None if notification else _response(request_id, result=result)

        def fail(failure: Failure) -> dict[str, Any] | None:
            error = _error_for(failure)
            return None if notification else _response(request_id, error=error)

        return d.addCallbacks(answer, fail)

    def _finish(self, request: server.Request, code: int, answer: object) -> int:
        """Write ``answer`` (None: nothing, 204) and finish the request."""
        if answer is None:
            request.setResponseCode(204)
            request.finish()
            return server.NOT_DONE_YET  # type: ignore[no-any-return]
        try:
            body = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            body = json.dumps(answer, default=str).encode("ascii")
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()
        return server.NOT_DONE_YET  # type: ignore[no-any-return]


_SESSION_KEYS = frozenset({"session", "seq", "ack"})
_RANGE_OPTIONS = frozenset({"limit", "keys_only", "count_only", "stale"})
_WATCH_OPTIONS = frozenset({"prefix", "end", "from_revision", "wait", "limit"})


def _session_params(session: object) -> tuple[object, object, object] | None:
    """Return (session id, seq, ack) from a write's session object, or None without one."""
    if session is None:
        return None
    if not isinstance(session, dict) or not set(session) <= _SESSION_KEYS:
        raise _InvalidParams('session must be an object like {"session": ID, "seq": 1, "ack": 1}')
    if session.get("session") is None or session.get("seq") is None:
        raise _InvalidParams("a session needs both session and seq")
    return session["session"], session["seq"], session.get("ack")


@functools.lru_cache(maxsize=64)
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


@functools.lru_cache(maxsize=64)
def _positional_arity(function: Callable[..., Any]) -> tuple[int, int]:
    """Return (fewest, most) positional arguments ``function`` accepts with no keywords."""
    fewest = most = 0
    for parameter in _signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            most = 1 << 30
        elif parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            most += 1
            if parameter.default is inspect.Parameter.empty:
                fewest += 1
        elif (
            parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is inspect.Parameter.empty
        ):
            fewest = 1 << 30  # a required keyword: positional params never do
    return fewest, most


def _checked_call(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if not kwargs:  # the usual call: positional params, checked by count alone
        fewest, most = _positional_arity(function)
        if fewest <= len(args) <= most:
            return function(*args)
    try:
        _signature(function).bind(*args, **kwargs)
    except TypeError as e:
        raise _InvalidParams(f"invalid params: {e}") from None
    return function(*args, **kwargs)


def _now(value: Any) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.callback(value)
    return d


class _CappedRequest(server.Request):
    """A request that stops storing its body past the site's ``max_body_bytes``.

    The body is still read (and discarded) so the client gets a proper answer;
    the resource sees ``body_too_large`` and refuses the call.
    """

    body_too_large = False
    _received = 0

    def _limit(self) -> int | None:
        return getattr(getattr(self.channel, "site", None), "max_body_bytes", None)

    def gotLength(self, length: int | None) -> None:
        """Refuse at once a declared length above the limit."""
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Store ``data`` while the body stays within the limit."""
        if self.body_too_large:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self.body_too_large = True
            self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)


class _JSONRPCSite(server.Site):
    """A site whose requests cap their bodies at ``max_body_bytes``."""

    requestFactory = _CappedRequest

    def __init__(self, root: resource.Resource, max_body_bytes: int) -> None:
        # JSON-RPC bodies are never HTML forms: skip Twisted's form parsing, which
        # costs a Content-Type parse through the email package on every request.
        super().__init__(root, parsePOSTFormSubmission=False)
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False

    def log(self, request: server.Request) -> None:
        """Write no access log line per request (the hot path); errors are logged."""


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
    return _JSONRPCSite(root, max_body_bytes)
