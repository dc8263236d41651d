"""Concurrent clients that run random get/put/cas over JSON-RPC and record a history.

Each client is a thread with blocking ``http.client`` calls: simple, and a
stuck call blocks only its own client. Every call opens a fresh connection, so
the outcome of a call is never confused with an idle connection's death:

* the TCP connect fails (refused, unreachable, timed out): nothing was sent,
  the operation ``fail``\\ s;
* the node answers with JSON-RPC ``-32000`` (not the leader) or ``-32001``
  (unavailable): it refused before proposing, ``fail`` (but ``-32001`` "node is
  shutting down" can fail a proposal already in the log, so that one is
  ``unknown``);
* ``-32602`` (invalid params) and ``-32006`` (this node was removed from the
  cluster: it refuses every new request) are refusals too, ``fail``;
* ``-32002`` (timed out, outcome unknown), any other error, a read timeout, a
  connection lost after sending, a malformed answer: ``unknown``;
* a result: ``ok``.

Values are unique (``c<client>.<n>``), which is what lets the checker tell
writes apart. Keys rotate: each of ``keys`` slots moves to a fresh key after
``ops_per_key`` operations (as Jepsen's ``independent`` does), so the checker
searches many short histories instead of a few long ones and soaks stay
checkable. A cas expects the value its client last saw on that key. Clients
pick a node at random for each call, but not the one whose last call to them
failed or timed out, so the clients are not all stuck on a cut-off node at once.

Every loop is bounded by a stop event, a deadline and a maximum count.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from leeky_twisted.checker.history import Operation, OpKind, Outcome
from leeky_twisted.checker.txnmodel import txn_result

__all__ = [
    "CallResult",
    "Endpoint",
    "FinalReads",
    "Workload",
    "call_jsonrpc",
    "classify_error",
]

#: JSON-RPC error codes the node uses (see leeky_twisted/api/jsonrpc_api.py).
NOT_LEADER = -32000
UNAVAILABLE = -32001
COMMIT_TIMEOUT = -32002
REMOVED = -32006
INVALID_PARAMS = -32602


@dataclass(frozen=True)
class Endpoint:
    """A node's JSON-RPC address."""

    node_id: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.node_id}@{self.host}:{self.port}"


@dataclass(frozen=True)
class CallResult:
    """What one JSON-RPC call came to."""

    outcome: Outcome
    result: Any = None
    error: str | None = None


def classify_error(error: object) -> Outcome:
    """Return the outcome a JSON-RPC error object guarantees (see the module docstring)."""
    if not isinstance(error, dict):
        return Outcome.UNKNOWN
    code = error.get("code")
    message = str(error.get("message", ""))
    if code == UNAVAILABLE and "shutting down" in message:
        return Outcome.UNKNOWN
    if code in (NOT_LEADER, UNAVAILABLE, REMOVED, INVALID_PARAMS):
        return Outcome.FAIL
    return Outcome.UNKNOWN


def call_jsonrpc(
    endpoint: Endpoint,
    method: str,
    params: Sequence[Any],
    *,
    connect_timeout: float,
    timeout: float,
    request_id: int = 1,
) -> CallResult:
    """Call one method on a fresh connection and classify the outcome (never raises OSError)."""
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=connect_timeout)
    try:
        try:
            conn.connect()
        except OSError as e:
            return CallResult(Outcome.FAIL, error=f"connect: {e!r}")
        assert conn.sock is not None
        conn.sock.settimeout(timeout)
        body = json.dumps(
            {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}
        )
        try:
            conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            return CallResult(Outcome.UNKNOWN, error=f"after sending: {e!r}")
    finally:
        conn.close()
    try:
        reply = json.loads(data)
    except ValueError:
        return CallResult(Outcome.UNKNOWN, error=f"HTTP {resp.status}: not JSON")
    if not isinstance(reply, dict):
        return CallResult(Outcome.UNKNOWN, error="answer is not an object")
    if reply.get("error") is not None:
        err = reply["error"]
        return CallResult(classify_error(err), error=json.dumps(err, sort_keys=True)[:300])
    if "result" not in reply:
        return CallResult(Outcome.UNKNOWN, error="answer has no result")
    return CallResult(Outcome.OK, result=reply["result"])


@dataclass
class FinalReads:
    """The reads after healing: did every key answer on every node, and how fast."""

    keys: list[str]
    readable: bool
    seconds: float
    unreadable: list[str] = field(default_factory=list)
    attempts: int = 0


class Workload:
    """``clients`` threads running random get/put/cas against ``endpoints``.

    :param mix: probabilities of (get, put, cas); they must sum to 1.
    :param think: each client waits a uniform time in this range between calls.
    :param timeout: the client's read timeout (give the node's own request
        timeout plus its grace, so the node can answer "outcome unknown" first).
    :param stale_reads: ask for ``{"stale": true}`` reads: a broken read path,
        for testing the rig itself.
    :param txn_share: the share of operations that are two-key transactions
        (before the get/put/cas mix): on a slot's key ``K`` and its companion
        ``K/t``, "if K holds what this client last saw, put a new value into
        both, else read both". The checker checks each as one atomic step over
        the pair (0: none, the default).
    :param clock: a monotonic clock; all times in the history come from it.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        clients: int = 10,
        keys: int = 3,
        key_prefix: str = "chaos",
        ops_per_key: int = 1000,
        seed: int = 0,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
        think: tuple[float, float] = (0.0, 0.02),
        mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
        stale_reads: bool = False,
        txn_share: float = 0.0,
        max_ops_per_client: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoints")
        if clients < 1 or keys < 1 or ops_per_key < 1:
            raise ValueError("clients, keys and ops_per_key must be positive")
        if abs(sum(mix) - 1.0) > 1e-9 or min(mix) < 0:
            raise ValueError("mix must be three non-negative probabilities summing to 1")
        self.endpoints = list(endpoints)
        self.clients = clients
        self.slots = keys
        self.key_prefix = key_prefix
        self.ops_per_key = ops_per_key
        self.seed = seed
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.think = think
        self.mix = mix
        self.stale_reads = stale_reads
        if not 0.0 <= txn_share <= 1.0:
            raise ValueError("txn_share must be from 0 to 1")
        self.txn_share = txn_share
        self.max_ops_per_client = max_ops_per_client
        self.clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._index = itertools.count()
        self._ops: list[Operation] = []
        self._in_flight: dict[int, Operation] = {}
        self._counts: Counter[str] = Counter()
        self._generation = [0] * keys
        self._used = [0] * keys
        self._keys_seen: list[str] = []
        self._threads: list[threading.Thread] = []
        self.errors: Counter[str] = Counter()

    # -------------------------------------------------------------- running

    def start(self) -> None:
        """Start the client threads."""
        if self._threads:
            raise RuntimeError("already started")
        for c in range(self.clients):
            t = threading.Thread(
                target=self._client, args=(c,), name=f"leeky-chaos-client-{c}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def stop(self) -> bool:
        """Stop the clients; wait for their calls in flight. Return whether all ended."""
        self._stop.set()
        deadline = time.monotonic() + self.timeout + self.connect_timeout + 2.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def run_for(self, seconds: float) -> None:
        """Start, run for ``seconds``, and stop."""
        self.start()
        try:
            self._stop.wait(seconds)
        finally:
            self.stop()

    def history(self) -> list[Operation]:
        """Return the operations recorded so far, in invoke order.

        Calls still in flight (a client that did not stop in time) are included
        with an unknown outcome: they may yet take effect.
        """
        with self._lock:
            ops = self._ops + list(self._in_flight.values())
        return sorted(ops, key=lambda o: (o.invoke, o.index))

    def counts(self) -> dict[str, int]:
        """Return the number of operations by outcome so far."""
        with self._lock:
            return {
                "operations": sum(self._counts.values()),
                "ok": self._counts["ok"],
                "fail": self._counts["fail"],
                "unknown": self._counts["unknown"],
            }

    def keys(self) -> list[str]:
        """Return every key the workload has used, oldest first."""
        with self._lock:
            return list(self._keys_seen)

    def current_keys(self) -> list[str]:
        """Return the key each slot uses now."""
        with self._lock:
            return [self._key_name(s, self._generation[s]) for s in range(self.slots)]

    # ---------------------------------------------------------- operations

    def _key_name(self, slot: int, generation: int) -> str:
        return f"{self.key_prefix}-{slot}.{generation}"

    def _next_key(self, rng: random.Random) -> str:
        with self._lock:
            slot = rng.randrange(self.slots)
            if self._used[slot] >= self.ops_per_key:
                self._generation[slot] += 1
                self._used[slot] = 0
            self._used[slot] += 1
            key = self._key_name(slot, self._generation[slot])
            if self._used[slot] == 1 and key not in self._keys_seen:
                self._keys_seen.append(key)
            return key

    def _record(self, op: Operation) -> None:
        with self._lock:
            self._in_flight.pop(op.index, None)
            self._ops.append(op)
            self._counts[op.outcome.value] += 1

    def invoke(
        self,
        client: int,
        endpoint: Endpoint,
        kind: OpKind,
        key: str,
        *,
        value: str | None = None,
        expected: str | None = None,
        stale: bool = False,
    ) -> Operation:
        """Run one operation now, record it and return it."""
        params: list[object]
        if kind is OpKind.GET:
            method, params = "get", [key, {"stale": True}] if stale else [key]
        elif kind is OpKind.PUT:
            method, params = "put", [key, value]
        else:
            method, params = "cas", [key, expected, value]
        index = next(self._index)
        start = self.clock()
        pending = Operation(
            index=index,
            client=client,
            key=key,
            kind=kind,
            invoke=start,
            complete=None,
            outcome=Outcome.UNKNOWN,
            value=value if kind is OpKind.PUT else None,
            expected=expected if kind is OpKind.CAS else None,
            new=value if kind is OpKind.CAS else None,
            node=endpoint.node_id,
            error="still in flight",
        )
        with self._lock:
            self._in_flight[index] = pending
        res = call_jsonrpc(
            endpoint,
            method,
            params,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            request_id=index,
        )
        end = self.clock()
        outcome, result, error = res.outcome, res.result, res.error
        if outcome is Outcome.OK and not _result_fits(kind, result):
            outcome, error = Outcome.UNKNOWN, f"unexpected result {result!r}"
        if error is not None:
            self.errors[_error_class(error)] += 1
        op = replace(
            pending,
            complete=None if outcome is Outcome.UNKNOWN else end,
            gave_up=end if outcome is Outcome.UNKNOWN else None,
            outcome=outcome,
            result=result if outcome is Outcome.OK and kind is not OpKind.PUT else None,
            error=error,
        )
        self._record(op)
        return op

    def invoke_txn(
        self, client: int, endpoint: Endpoint, key: str, expected: str | None, value: str
    ) -> Operation:
        """Run one two-key transaction on ``key`` and ``key/t`` now, record it and return it."""
        pair = f"{key}/t"
        if expected is None:
            compare = {"key": key, "target": "version", "op": "==", "value": 0}
        else:
            compare = {"key": key, "target": "value", "op": "==", "value": expected}
        document = {
            "compare": [compare],
            "success": [
                {"type": "put", "key": key, "value": value},
                {"type": "put", "key": pair, "value": value},
            ],
            "failure": [{"type": "range", "key": key}, {"type": "range", "key": pair}],
        }
        index = next(self._index)
        pending = Operation(
            index=index,
            client=client,
            key=key,
            kind=OpKind.TXN,
            invoke=self.clock(),
            complete=None,
            outcome=Outcome.UNKNOWN,
            node=endpoint.node_id,
            error="still in flight",
            txn=json.dumps(document, sort_keys=True),
        )
        with self._lock:
            self._in_flight[index] = pending
        res = call_jsonrpc(
            endpoint,
            "txn",
            [document],
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
            request_id=index,
        )
        end = self.clock()
        outcome, error, result = res.outcome, res.error, None
        if outcome is Outcome.OK:
            try:
                result = txn_result(bool(res.result["succeeded"]), res.result["responses"])
            except (TypeError, KeyError):
                outcome, error = Outcome.UNKNOWN, f"unexpected result {res.result!r:.200}"
        if error is not None:
            self.errors[_error_class(error)] += 1
        op = replace(
            pending,
            complete=None if outcome is Outcome.UNKNOWN else end,
            gave_up=end if outcome is Outcome.UNKNOWN else None,
            outcome=outcome,
            result=result,
            error=error,
        )
        self._record(op)
        return op

    def _client(self, client: int) -> None:
        rng = random.Random(f"{self.seed}/{client}")
        seen: dict[str, str | None] = {}
        p_get, p_put, _ = self.mix
        avoid: Endpoint | None = None
        for n in range(self.max_ops_per_client):
            if self._stop.is_set():
                return
            choices = [e for e in self.endpoints if e != avoid] or self.endpoints
            endpoint = rng.choice(choices)
            key = self._next_key(rng)
            value = f"c{client}.{n}"
            if self.txn_share and rng.random() < self.txn_share:
                op = self.invoke_txn(client, endpoint, key, seen.get(key), value)
                if op.outcome is Outcome.OK:
                    answer = json.loads(str(op.result))
                    if answer["succeeded"]:
                        seen[key] = value
                    else:
                        seen[key] = dict(answer["responses"][0]).get(key)
                avoid = endpoint if op.outcome is not Outcome.OK else None
                self._stop.wait(rng.uniform(*self.think))
                continue
            roll = rng.random()
            if roll < p_get:
                op = self.invoke(client, endpoint, OpKind.GET, key, stale=self.stale_reads)
                if op.outcome is Outcome.OK:
                    seen[key] = op.result  # type: ignore[assignment]
            elif roll < p_get + p_put:
                op = self.invoke(client, endpoint, OpKind.PUT, key, value=value)
                if op.outcome is Outcome.OK:
                    seen[key] = value
            else:
                expected = seen.get(key)
                op = self.invoke(client, endpoint, OpKind.CAS, key, value=value, expected=expected)
                if op.outcome is Outcome.OK and op.result is True:
                    seen[key] = value
            avoid = endpoint if op.outcome is not Outcome.OK else None
            self._stop.wait(rng.uniform(*self.think))

    # ---------------------------------------------------------- final reads

    def final_reads(
        self,
        keys: Sequence[str] | None = None,
        *,
        within: float = 30.0,
        endpoints: Sequence[Endpoint] | None = None,
        stop: threading.Event | None = None,
    ) -> FinalReads:
        """Read every key (default: all used) linearizably on each endpoint, retrying
        each until it answers or ``within`` seconds pass. The reads join the history.

        ``seconds`` is how long until the last key answered on the last endpoint.
        """
        stop = stop or threading.Event()
        keys = list(self.keys() if keys is None else keys)
        client = self.clients  # one past the workers' ids
        start = time.monotonic()
        deadline = start + within
        pending = [
            (k, e) for k in keys for e in (self.endpoints if endpoints is None else endpoints)
        ]
        attempts = 0
        unreadable = []
        for key, endpoint in pending:
            while True:
                attempts += 1
                op = self.invoke(client, endpoint, OpKind.GET, key)
                if op.outcome is Outcome.OK:
                    break
                if time.monotonic() > deadline or stop.is_set():
                    unreadable.append(f"{key}@{endpoint.node_id}")
                    break
                stop.wait(0.2)
        return FinalReads(
            keys=keys,
            readable=not unreadable,
            seconds=time.monotonic() - start,
            unreadable=unreadable,
            attempts=attempts,
        )


def _result_fits(kind: OpKind, result: object) -> bool:
    if kind is OpKind.GET:
        return result is None or isinstance(result, str)
    if kind is OpKind.PUT:
        return result is True
    return isinstance(result, bool)


def _error_class(error: str) -> str:
    """Return a short class for an error text, for the report's error counts."""
    if error.startswith("{"):
        try:
            return f"rpc {json.loads(error).get('code')}"
        except ValueError:
            return "rpc"
    if error.startswith("unexpected result"):
        return "unexpected result"
    head, _, rest = error.partition(": ")
    return f"{head}: {rest.split('(', 1)[0]}" if rest else head
