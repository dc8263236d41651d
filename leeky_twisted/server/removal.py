"""Telling a removed node that it was removed, and hearing it.

A node removed while it was down or cut off never receives the entry that
removed it: the leader stops sending to it at once. Its own log still holds a
configuration that includes it, so it keeps asking for (pre-)votes, which the
members ignore. As etcd does, the members answer it instead:

- A member answers a (pre-)vote request from node X with a
  :class:`~leeky_twisted.transport.notices.RemovedNotice` only when its
  *applied* configuration changes removed X at index ``r`` and none added X
  back since (the marks of :class:`~leeky_twisted.server.addresses.AddressBook`,
  kept in snapshots), and X is not in its configuration. A member that has not
  applied X's addition has no mark, so it says nothing.
- X believes the notice only when its own log holds no configuration change
  at ``r`` or later (it never saw the removal, nor anything after it) and the
  sender is in its configuration; the peer transport delivers notices only
  from a peer whose Hello proved who it is (cluster key or TLS). X then stops
  campaigning, shows role ``removed`` and logs why, once.
- Ids may be added back (``add-server``, or the autopilot for a node gossip
  sees alive again). A member that lags behind such a re-addition can still
  say "removed at r": X, once added back, holds that later change (a voter
  must hold the entry that added it before it is promoted), so it refuses the
  notice; a learner added back that has not received it yet stops
  campaigning, which a learner never does anyway. As soon as a leader's
  entries carry X's log past ``r``, X campaigns again.

Nothing here changes the core's state: a notice only stops the node from
ticking its core's election timer, which the core already tolerates (a slow
reactor looks the same).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, NodeId, RequestVote, Role
from leeky_twisted.core.raft import RaftCore
from leeky_twisted.server.addresses import AddressBook
from leeky_twisted.transport.codec import PeerMessage
from leeky_twisted.transport.notices import RemovedNotice

__all__ = ["Removal"]

log = Logger()


class Removal:
    """One node's side of removal notices: answering removed nodes, and being told."""

    def __init__(
        self,
        node_id: NodeId,
        core: RaftCore,
        addresses: AddressBook,
        send: Callable[[PeerMessage], None],
    ) -> None:
        self._node_id = node_id
        self._core = core
        self._addresses = addresses
        self._send = send
        #: the notice this node believed, while its log has not moved past it
        self.told: RemovedNotice | None = None
        #: notices sent to removed nodes, since start
        self.notices_sent = 0
        self._ignored: int | None = None  #: the removal index of the last notice ignored

    def applied(self, change: ConfChange, index: int) -> None:
        """Note an applied configuration change: it removes a node, or adds one (back)."""
        if change.op is ConfChangeOp.REMOVE:
            self._addresses.apply_removal(change.node_id, index, removed=True)
        elif change.op in (ConfChangeOp.ADD_LEARNER, ConfChangeOp.ADD_VOTER):
            self._addresses.apply_removal(change.node_id, index, removed=False)

    def answer(self, message: RequestVote) -> bool:
        """Tell the sender of a vote request that it was removed, if it was; True if told.

        A told request is not stepped: a removed node's vote must not move anyone's term.
        """
        sender = message.sender
        index = self._addresses.removed_at(sender)
        if index is None or sender == self._node_id:
            return False
        if sender in self._core.configuration.members():
            return False  # added back, in an entry not yet applied here
        self._send(RemovedNotice(self._node_id, sender, index))
        self.notices_sent += 1
        return True

    def hear(self, notice: RemovedNotice) -> None:
        """Believe ``notice`` if this node's log does not know better; log it once."""
        core = self._core
        if self.told is not None or notice.recipient != self._node_id:
            return
        cfg = core.configuration
        if (
            core.role is Role.LEADER
            or notice.sender not in cfg.members()
            or self._node_id not in cfg.members()
            or core.log.config_index() >= notice.index
        ):
            if notice.index == self._ignored:
                return  # said already: one line per removal, not one per election
            self._ignored = notice.index
            log.info(
                "ignored {peer}'s notice that this node was removed at {index}: this node's "
                "log holds configuration changes up to {mine}",
                peer=notice.sender,
                index=notice.index,
                mine=core.log.config_index(),
            )
            return
        self.told = notice
        log.warn(
            "this node ({node}) was removed from the cluster (configuration change at {index}, "
            "as {peer} says): it no longer campaigns. It stays removed unless the cluster adds "
            "it back (`leekyraft add-server {node} PEER-ADDRESS`; the autopilot does so for a "
            "node gossip sees alive). Or stop it, wipe its data folder and add it as a new node.",
            node=self._node_id,
            index=notice.index,
            peer=notice.sender,
        )

    def silenced(self) -> bool:
        """Whether the node must not campaign: told it was removed, and nothing newer since."""
        told = self.told
        if told is None:
            return False
        core = self._core
        if core.log.config_index() < told.index and core.role is not Role.LEADER:
            return True
        self.told = None
        log.info(
            "this node ({node}) holds configuration changes past its removal at {index}: "
            "it was added back",
            node=self._node_id,
            index=told.index,
        )
        return False
