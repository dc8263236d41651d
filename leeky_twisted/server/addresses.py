"""The address book: where each node listens (peer, client and HTTP addresses).

Node ids are stable; addresses are separate data, learned from the command
line, configuration entries, snapshots, a leader's announcement in the log and
gossip. Every writer goes through :class:`AddressBook`; readers see a mapping.

The book also keeps, for each node an applied configuration change removed
(and no later one added back), the index of that change: what a node tells a
removed node that asks it for votes. Only :meth:`AddressBook.apply_removal`
writes it (from applied configuration entries) and snapshots carry it, under
a key no node id can take (:data:`REMOVED_KEY`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from twisted.logger import Logger

log = Logger()

#: The snapshot key of the removal marks. Not a node id: node ids never hold a
#: space (``server/nodeid.py``). A node of an earlier version that reads such a
#: snapshot sees one harmless extra entry.
REMOVED_KEY = " removed"


class AddressBook(Mapping[str, Mapping[str, str]]):
    """Node id -> {"peer", "client", "http"}: what is known of each node's addresses.

    With ``keep_own``, this node's own entry changes only through
    :meth:`set_own`: the log and snapshots may hold old news of it (a
    re-created container has a new host name), which must not overwrite what
    it listens on.
    """

    def __init__(
        self,
        own_id: str,
        book: Mapping[str, Mapping[str, str]] | None = None,
        *,
        keep_own: bool = False,
    ) -> None:
        self.own_id = own_id
        self._keep_own = keep_own
        self._book: dict[str, dict[str, str]] = {k: dict(v) for k, v in (book or {}).items()}
        #: node id -> index of the applied configuration change that removed it
        self._removed: dict[str, int] = {}
        if keep_own:
            self._book.setdefault(own_id, {})

    # -------------------------------------------------------------- reading

    def __getitem__(self, node_id: str) -> Mapping[str, str]:
        return self._book[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._book)

    def __len__(self) -> int:
        return len(self._book)

    def address_of(self, node_id: str) -> dict[str, str]:
        """Return a copy of what is known of ``node_id``'s addresses."""
        return dict(self._book.get(node_id, {}))

    def own(self) -> dict[str, str]:
        """Return a copy of this node's own addresses."""
        return dict(self._book.get(self.own_id, {}))

    def removed_at(self, node_id: str) -> int | None:
        """Return the index of the applied change that removed ``node_id`` (and no later
        one added back), or None."""
        return self._removed.get(node_id)

    def as_dict(self) -> dict[str, dict[str, str]]:
        """Return a copy of the whole book, removal marks included (for a snapshot)."""
        book = {k: dict(v) for k, v in self._book.items()}
        if self._removed:
            book[REMOVED_KEY] = {k: str(v) for k, v in self._removed.items()}
        return book

    # -------------------------------------------------------------- writing

    def set_own(self, kind: str, address: str) -> None:
        """Record one of this node's own addresses (a port it has bound)."""
        self._book.setdefault(self.own_id, {})[kind] = address

    def learn(self, node_id: str, addresses: Mapping[str, str]) -> None:
        """Merge what was learned of ``node_id`` (gossip, a configuration entry)."""
        if (self._keep_own and node_id == self.own_id) or node_id == REMOVED_KEY:
            return
        self._book.setdefault(node_id, {}).update({str(k): str(v) for k, v in addresses.items()})

    def restore(self, book: Mapping[str, Mapping[str, str]]) -> None:
        """Take each node's entry from a snapshot's book, replacing what was known.

        The snapshot's removal marks replace ours (a snapshot of an earlier
        version has none); a malformed mark is skipped.
        """
        removed: dict[str, int] = {}
        for node_id, index in book.get(REMOVED_KEY, {}).items():
            if str(index).isdigit() and int(index) > 0:
                removed[str(node_id)] = int(index)
        self._removed = removed
        for node_id, addresses in book.items():
            if node_id == REMOVED_KEY or (self._keep_own and node_id == self.own_id):
                continue
            self._book[node_id] = dict(addresses)

    def apply_removal(self, node_id: str, index: int, removed: bool) -> None:
        """Record the applied configuration change at ``index`` about ``node_id``:
        it ``removed`` the node, or added it (back)."""
        if removed:
            self._removed[node_id] = index
        else:
            self._removed.pop(node_id, None)

    # --------------------------------------------------------- announcements

    def announcement(self) -> bytes | None:
        """Return the log entry data a new leader proposes so followers can forward
        to it; None when it has no addresses to tell (as in tests)."""
        mine = self._book.get(self.own_id)
        if not mine:
            return None
        return json.dumps({"announce": self.own_id, "addresses": mine}).encode()

    def apply_announcement(self, data: bytes) -> None:
        """Learn a leader's addresses from its announcement; ignore malformed ones."""
        try:
            info = json.loads(data)
            nid = str(info["announce"])
            addrs = {str(k): str(v) for k, v in dict(info["addresses"]).items()}
        except (ValueError, KeyError, TypeError):
            return
        if nid not in (self.own_id, REMOVED_KEY):
            self._book.setdefault(nid, {}).update(addrs)

    def apply_config_context(self, node_id: str, context: bytes) -> None:
        """Learn ``node_id``'s addresses from a configuration entry's context, if any."""
        if not context:
            return
        try:
            info = json.loads(context)
        except ValueError:
            return
        if isinstance(info, dict):
            self.learn(node_id, info)
