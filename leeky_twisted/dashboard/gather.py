"""The whole cluster as one node sees it: every member's dashboard state, gathered.

:class:`Gatherer` asks each other member's ``/dashboard/local`` over HTTP
every :data:`GATHER_SECONDS` with a short timeout while a page watches this
node (every :data:`IDLE_GATHER_SECONDS` otherwise), so any node's page shows
the whole cluster, also while the leader is down. A member that does not
answer is shown as unreachable, with its last known state and since when.

Where a member's HTTP port is: the node's address book (leaders announce
theirs), else what the member told us. Each request carries the asker's id
and HTTP port (``?from=ID&port=P``); the asked node notes that address
(at the asker's own IP) and returns the addresses it has learned, so members
that never led still find each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from leeky_twisted.dashboard.recorder import Recorder

__all__ = [
    "GATHER_SECONDS",
    "GATHER_TIMEOUT",
    "IDLE_GATHER_SECONDS",
    "WATCH_SECONDS",
    "Fetch",
    "Gatherer",
    "treq_fetch",
]

#: how often the other members are asked
GATHER_SECONDS = 0.5
#: how long one answer may take
GATHER_TIMEOUT = 0.45
#: while no page watches this node, the members are asked this rarely (it keeps
#: the address books warm at almost no cost)
IDLE_GATHER_SECONDS = 10.0
#: a page's request or an open event stream makes this node gather at full pace
#: for this many seconds
WATCH_SECONDS = 10.0

#: fetch(url, timeout) -> Deferred firing with the decoded JSON answer
Fetch = Callable[[str, float], "Deferred[Any]"]


@implementer(IPolicyForHTTPS)
class _ClusterTLS:
    """HTTPS to any node of the cluster: our node certificate, the cluster's CA."""

    def __init__(self, credentials: Any) -> None:
        self.options = credentials.cluster_options()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        """Return the same options for every member (each presents a node certificate)."""
        return self.options


def treq_fetch(reactor: Any, credentials: Any = None) -> Fetch:
    """Return a :data:`Fetch` using treq on ``reactor``; HTTPS with node ``credentials``.

    With credentials (:class:`~leeky_twisted.security.tls.TLSCredentials`), the ``http://``
    of each URL becomes ``https://``: the node shows its own certificate and
    accepts any node certificate of the cluster's CA.
    """
    import treq
    from twisted.web.client import Agent

    from leeky_twisted.protocol.httppool import quiet_http_pool

    pool = quiet_http_pool(reactor, persistent=True)
    pool.maxPersistentPerHost = 1
    if credentials is not None:
        agent = Agent(
            reactor,
            contextFactory=_ClusterTLS(credentials),
            connectTimeout=GATHER_TIMEOUT,
            pool=pool,
        )
    else:
        agent = Agent(reactor, connectTimeout=GATHER_TIMEOUT, pool=pool)
    client = treq.client.HTTPClient(agent)

    def fetch(url: str, timeout: float) -> Deferred[Any]:
        if credentials is not None and url.startswith("http://"):
            url = "https://" + url[len("http://") :]
        d = client.get(url, timeout=timeout)

        def body(response: Any) -> Any:
            if response.code != 200:
                raise ValueError(f"HTTP {response.code}")
            return response.json()

        return d.addCallback(body)

    fetch.pool = pool  # type: ignore[attr-defined]
    return fetch


class Gatherer:
    """Keeps the latest state of every member; :meth:`view` is the cluster."""

    def __init__(
        self,
        clock: IReactorTime,
        recorder: Recorder,
        fetch: Fetch | None,
        own_http: Callable[[], str | None],
    ) -> None:
        self.clock = clock
        self.recorder = recorder
        self.fetch = fetch
        self.own_http = own_http
        self.own_id = recorder.timeline.node_id
        #: HTTP addresses learned from the members themselves (``host:port``)
        self.learned: dict[str, str] = {}
        #: per member: {"reachable", "since", "seen", "error", "state"}
        self.peers: dict[str, dict[str, Any]] = {}
        self._pending: set[str] = set()
        self._watched_until = float("-inf")
        self._last_round = float("-inf")
        self._loop = LoopingCall(self.gather)
        self._loop.clock = clock

    def start(self) -> None:
        """Gather now and every :data:`GATHER_SECONDS`."""
        self._loop.start(GATHER_SECONDS, now=True)

    def stop(self) -> None:
        """Stop gathering (answers still on their way are ignored)."""
        if self._loop.running:
            self._loop.stop()

    def member_ids(self) -> list[str]:
        """Return every member this node knows of: configuration and gossip."""
        st = self.recorder.status
        ids = {str(n) for n in (st.get("voters") or ())} | {
            str(n) for n in st.get("learners") or ()
        }
        ids |= {str(m["id"]) for m in self.recorder.members() if m.get("gossip") == "alive"}
        ids.add(self.own_id)
        return sorted(ids)

    def address_of(self, nid: str) -> str | None:
        """Return ``nid``'s HTTP ``host:port``: from the node, else learned."""
        book = self.recorder.node.addresses
        known = book.get(nid, {}).get("http")
        if known and not known.endswith(":0"):
            return str(known)
        return self.learned.get(nid)

    def book(self) -> dict[str, str]:
        """Return every member's HTTP address this node knows."""
        out = {}
        for nid in self.member_ids():
            addr = self.address_of(nid)
            if addr:
                out[nid] = addr
        return out

    def learn(self, nid: str, address: str) -> None:
        """Note ``nid``'s HTTP address, if ``nid`` is a member and not this node."""
        if nid != self.own_id and nid in self.member_ids():
            self.learned[nid] = address

    def watch(self) -> None:
        """A page is watching: gather every :data:`GATHER_SECONDS` for a while."""
        self._watched_until = self.clock.seconds() + WATCH_SECONDS

    def gather(self) -> None:
        """Ask every other member whose address is known (one request at a time each).

        Unwatched, a round runs only every :data:`IDLE_GATHER_SECONDS`.
        """
        now = self.clock.seconds()
        if self.fetch is None:
            return
        if now > self._watched_until and now - self._last_round < IDLE_GATHER_SECONDS:
            return
        self._last_round = now
        me = self.own_http()
        port = me.rpartition(":")[2] if me else ""
        for nid in self.member_ids():
            if nid == self.own_id or nid in self._pending:
                continue
            addr = self.address_of(nid)
            if addr is None:
                self.peers.setdefault(nid, {"reachable": False, "since": None, "state": None})
                self.peers[nid]["error"] = "HTTP address not known yet"
                continue
            url = f"http://{addr}/dashboard/local?from={quote(self.own_id)}&port={port}"
            self._pending.add(nid)
            d = self.fetch(url, GATHER_TIMEOUT)
            d.addCallbacks(self._answer, self._failed, (nid,), None, (nid,))

    def _answer(self, state: Any, nid: str) -> None:
        self._pending.discard(nid)
        if not isinstance(state, dict):
            self._failed(Failure(ValueError("not a dashboard answer")), nid)
            return
        now = self.clock.seconds()
        entry = self.peers.setdefault(nid, {"reachable": False, "since": None, "state": None})
        if not entry["reachable"] and entry["since"] is not None:
            self.recorder.timeline.add(now, "reachable", f"{nid} answers again", member=nid)
        before = _headline(entry["state"]) if entry["reachable"] else None
        entry.update(reachable=True, since=now, seen=now, error=None, state=state)
        if before != _headline(state) and self.recorder.timeline.on_event is not None:
            self.recorder.timeline.on_event()  # a member's role, term or leader changed
        for other, addr in dict(state.get("book") or {}).items():
            if isinstance(addr, str) and other not in self.learned:
                self.learn(str(other), addr)

    def _failed(self, failure: Failure, nid: str) -> None:
        self._pending.discard(nid)
        now = self.clock.seconds()
        entry = self.peers.setdefault(nid, {"reachable": False, "since": None, "state": None})
        if entry["reachable"] or entry["since"] is None:
            text = f"{nid} does not answer ({failure.getErrorMessage() or failure.type.__name__})"
            self.recorder.timeline.add(now, "unreachable", text, member=nid)
            entry["since"] = now
        entry.update(reachable=False, error=failure.getErrorMessage() or failure.type.__name__)

    def view(self) -> dict[str, Any]:
        """Return the cluster: each member's state (or why it is missing) and one timeline."""
        now = self.clock.seconds()
        own = self.recorder.local_state()
        members: dict[str, Any] = {self.own_id: {"reachable": True, "age": 0.0, "state": own}}
        for nid in self.member_ids():
            if nid == self.own_id:
                continue
            entry = self.peers.get(nid, {"reachable": False, "since": None, "state": None})
            seen = entry.get("seen")
            members[nid] = {
                "reachable": entry["reachable"],
                "age": None if seen is None else round(now - seen, 3),
                "down_since": None if entry["reachable"] else entry.get("since"),
                "error": entry.get("error"),
                "address": self.address_of(nid),
                "state": entry["state"],
            }
        return {
            "self": self.own_id,
            "now": now,
            "members": members,
            "timeline": merge_timelines(m["state"] for m in members.values()),
        }


def _headline(state: Any) -> tuple[Any, ...]:
    """Return what makes a member's change worth pushing at once: role, term, leader."""
    st = (state or {}).get("status") or {}
    return (st.get("role"), st.get("term"), st.get("leader"))


def merge_timelines(states: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Merge the members' timelines, newest last; a leader change seen by many shows once."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for state in states:
        for e in (state or {}).get("timeline") or ():
            if e.get("kind") == "leader":
                key: tuple[Any, ...] = ("leader", e.get("term"), e.get("leader"))
            elif e.get("kind") in ("join", "leave"):
                key = (e.get("kind"), e.get("term"), e.get("member"), e.get("text"))
            else:
                key = (e.get("node"), e.get("seq"))
            if key not in seen or _better(e, seen[key]):
                seen[key] = e
    return sorted(seen.values(), key=lambda e: e["t"])[-limit:]


def _better(e: dict[str, Any], other: dict[str, Any]) -> bool:
    """Prefer the winner's own word on its election, else the earliest report."""
    mine, theirs = e.get("node") == e.get("leader"), other.get("node") == other.get("leader")
    if mine != theirs:
        return mine
    return bool(e["t"] < other["t"])
