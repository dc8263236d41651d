"""Membership administration of a node: add, remove, transfer, and the members view.

What ``leekyraft add-server``, ``remove-server``, ``transfer-leader`` and
``members`` reach through :class:`~leeky_twisted.interfaces.IRaftNode`. The
node owns an :class:`Admin` and hands these calls to it; every change goes
through the log as a configuration entry (:meth:`RaftNode.propose_config_change`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, NodeId, Role
from leeky_twisted.core.raft import RaftCore
from leeky_twisted.protocol.errors import InvalidRequest, LeekyError
from leeky_twisted.server.addresses import AddressBook

__all__ = ["Admin", "check_peer_address"]


def check_peer_address(address: str) -> None:
    """Raise ValueError unless ``address`` is ``HOST:PORT`` with a port in 1-65535."""
    host, sep, port = address.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address[:100]!r} is not a peer address (HOST:PORT)")


class Admin:
    """Membership changes and the members view of one node (leader-only changes)."""

    def __init__(
        self,
        node_id: NodeId,
        core: RaftCore,
        settings: Any,
        reactor: Any,
        addresses: AddressBook,
        propose: Callable[[ConfChange, float], Deferred[Any]],
        transfer: Callable[[NodeId], None],
        membership: Any = None,
        last_heard: Callable[[NodeId], float | None] | None = None,
    ) -> None:
        self._node_id = node_id
        self._core = core
        self._settings = settings
        self._reactor = reactor
        self._addresses = addresses
        self._propose = propose
        self._transfer = transfer
        self._membership = membership
        self._last_heard = last_heard

    def add_server(self, node_id: str, address: str | None, voter: bool) -> Deferred[Any]:
        """Add ``node_id`` as learner, or as voter; leader only.

        A new voter joins as a learner and is promoted once it holds the entry
        that added it (within the request timeout): a voter never starts empty.
        A new member needs a peer address (given, or already known): without one
        nobody could reach it. The address enters the address book only when the
        entry that adds the member is applied, so a refused request leaves none.
        """
        nid = NodeId(node_id)
        if address:
            try:
                check_peer_address(address)
            except ValueError as e:
                return defer.fail(InvalidRequest(f"add-server {node_id}: {e}"))
        cfg = self._core.configuration
        known = address or self._addresses.get(node_id, {}).get("peer")
        if not known and nid not in cfg.members():
            return defer.fail(
                InvalidRequest(
                    f"add-server {node_id}: no peer address is known for it, so nobody could "
                    f"reach it; give its Raft peer address: add-server {node_id} HOST:PORT"
                )
            )
        context = json.dumps({"peer": address}).encode() if address else b""
        if voter and nid not in cfg.learners and nid not in cfg.voters:
            return Deferred.fromCoroutine(self._add_voter(nid, context, known or "?"))
        op = ConfChangeOp.ADD_VOTER if voter else ConfChangeOp.ADD_LEARNER
        return self._config_change(ConfChange(op, nid, context))

    async def _add_voter(self, nid: NodeId, context: bytes, address: str) -> Any:
        await self._config_change(ConfChange(ConfChangeOp.ADD_LEARNER, nid, context))
        deadline = self._reactor.seconds() + self._settings.request_timeout
        while True:
            try:
                return await self._config_change(ConfChange(ConfChangeOp.ADD_VOTER, nid))
            except InvalidRequest as e:
                if "not caught up" not in str(e):
                    raise
                if self._reactor.seconds() >= deadline:
                    raise InvalidRequest(
                        f"node {nid} joined as a learner but has not caught up within "
                        f"{self._settings.request_timeout:g}s (is it running at {address}?); "
                        "it stays a learner and does not count toward the quorum: run "
                        f"add-server {nid} again once it has caught up, or remove-server {nid}"
                    ) from None
            await task.deferLater(self._reactor, self._settings.tick_interval, lambda: None)

    def remove_server(self, node_id: str) -> Deferred[Any]:
        """Remove ``node_id`` from the configuration; leader only."""
        return self._config_change(ConfChange(ConfChangeOp.REMOVE, NodeId(node_id)))

    def transfer_leader(self, node_id: str) -> None:
        """Start handing leadership to ``node_id``; raise NotLeader or InvalidRequest."""
        try:
            self._transfer(NodeId(node_id))
        except ValueError as e:
            raise InvalidRequest(str(e)) from None

    def _config_change(self, change: ConfChange) -> Deferred[Any]:
        d = self._propose(change, self._settings.request_timeout)

        def refine(failure: Any) -> Any:
            if failure.check(ValueError) and not failure.check(LeekyError):
                raise InvalidRequest(str(failure.value))
            return failure

        return d.addErrback(refine)

    def members(self) -> list[dict[str, Any]]:
        """Return every node this node knows of: Raft role, gossip state, addresses, contact.

        ``this_node`` marks the answering node. ``last_contact`` is how many
        seconds ago this node last heard the member over Raft (None: never
        since it started, or itself). ``reachable`` judges it where this node
        can: a leader for every member of the configuration, a follower for
        its leader; heard within an election timeout is reachable. Elsewhere
        it is None (unknown here).
        """
        cfg = self._core.configuration
        gossip = self._membership.members() if self._membership is not None else {}
        ids = set(cfg.members()) | set(gossip) | {self._node_id}
        now = self._reactor.seconds()
        window = self._core.cfg.election_ticks * self._settings.tick_interval
        leading = self._core.role is Role.LEADER
        out = []
        for nid in sorted(ids):
            heard = self._last_heard(nid) if self._last_heard is not None else None
            since = None if heard is None or nid == self._node_id else max(0.0, now - heard)
            reachable: bool | None = None
            if nid == self._node_id:
                reachable = True
            elif (leading and nid in cfg.members()) or nid == self._core.leader_id:
                reachable = since is not None and since <= window
            if nid == self._core.leader_id and nid in cfg.voters:
                role = "leader"
            elif nid in cfg.voters:
                role = "voter"
            elif nid in cfg.learners:
                role = "learner"
            else:
                role = "not in configuration"
            m = gossip.get(nid)
            out.append(
                {
                    "id": nid,
                    "raft": role,
                    "gossip": m.state.name.lower() if m is not None else None,
                    "incarnation": getattr(m, "incarnation", None),
                    "addresses": dict(self._addresses.get(nid, {})),
                    "this_node": nid == self._node_id,
                    "reachable": reachable,
                    "last_contact": None if since is None else round(since, 3),
                }
            )
        return out
