"""Fakes that tests share: a base for fake nodes that provides all of IRaftNode."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from leeky_twisted.core.messages import ConfChange, Configuration, NodeId, Role
from leeky_twisted.interfaces import (
    FollowerProgress,
    IRaftNode,
    IStateMachine,
    NodeStatus,
    NodeView,
)
from leeky_twisted.protocol.errors import InvalidRequest, Removed

_ROLES = {"leader": Role.LEADER, "candidate": Role.CANDIDATE}


@implementer(IRaftNode)
class FakeNodeBase:
    """Every IRaftNode member with a harmless default, derived from ``status()``.

    A fake subclasses it and overrides what its tests drive; what it does not
    override answers as a follower with no admin powers (InvalidRequest).
    """

    node_id: str = "1"
    stopped = False
    membership: Any = None
    addresses: Mapping[str, Mapping[str, str]] = MappingProxyType({})

    def propose(self, command: bytes, timeout: float) -> Deferred[Any]:
        """Refuse: this fake replicates nothing."""
        return fail(InvalidRequest("this fake node does not propose"))

    def read(self, request: object, linearizable: bool, timeout: float) -> Deferred[Any]:
        """Refuse: this fake holds no state."""
        return fail(InvalidRequest("this fake node does not read"))

    def status(self) -> NodeStatus:
        """Return a follower's status."""
        return NodeStatus(node_id=NodeId(self.node_id), role="follower")

    def view(self) -> NodeView:
        """Return a value object built from ``status()``."""
        st = self.status()
        return NodeView(
            node_id=NodeId(self.node_id),
            role=_ROLES.get(st.role, Role.FOLLOWER),
            term=st.term,
            leader=st.leader,
            commit=st.commit_index,
            applied=st.applied_index,
            first_index=st.first_index,
            last_index=st.last_index,
            configuration=Configuration(frozenset(st.voters), frozenset(st.learners)),
            config_change_pending=False,
            progress=self.progress(),
        )

    def progress(self) -> Mapping[NodeId, FollowerProgress]:
        """Return no followers."""
        return {}

    def role_name(self) -> str:
        """Return ``status().role``."""
        return self.status().role

    def removed(self) -> Removed | None:
        """Return None: a fake node is never removed (unless :meth:`learn_removed`)."""
        return None

    def on_removed(self, observer: Callable[[Exception], None]) -> None:
        """Keep ``observer``: :meth:`learn_removed` tells it."""
        self.__dict__.setdefault("removal_observers", []).append(observer)

    def learn_removed(self, error: Removed) -> None:
        """Act as a node that learned it was removed: refuse with ``error`` from now on,
        and tell the removal observers."""
        self.removed = lambda: error  # type: ignore[method-assign]
        for observer in list(self.__dict__.get("removal_observers", [])):
            observer(error)

    def local_state_machine(self) -> IStateMachine | None:
        """Return no state machine."""
        return None

    #: what ``want_eager_commits`` was last told
    eager_commits = False

    def want_eager_commits(self, wanted: bool) -> None:
        """Remember ``wanted``: this fake has no leader to ask."""
        self.eager_commits = wanted

    def members(self) -> list[dict[str, Any]]:
        """Return nobody."""
        return []

    def address_of(self, node_id: NodeId) -> dict[str, str]:
        """Return what ``addresses`` holds for ``node_id``."""
        return dict(self.addresses.get(node_id, {}))

    def propose_config_change(self, change: ConfChange, timeout: float) -> Deferred[Any]:
        """Refuse."""
        return fail(InvalidRequest("this fake node changes no configuration"))

    def add_server(self, node_id: str, address: str | None, voter: bool) -> Deferred[Any]:
        """Refuse."""
        return fail(InvalidRequest("this fake node adds no server"))

    def remove_server(self, node_id: str) -> Deferred[Any]:
        """Refuse."""
        return fail(InvalidRequest("this fake node removes no server"))

    def transfer_leader(self, node_id: str) -> None:
        """Refuse."""
        raise InvalidRequest("this fake node transfers no leadership")
