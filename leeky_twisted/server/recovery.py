"""Disaster recovery: make one surviving node the only member of its cluster.

This is Leeky Raft's ``--force-new-cluster`` (etcd's flag of the same name,
Consul's ``peers.json``). When a majority of the voters is lost for good, no
leader can ever be elected again. The operator picks one survivor (the one with
the longest log) and starts it once with ``--force-new-cluster``. Before the
node is built, :func:`force_new_cluster` rewrites its stores:

- every entry of its log is kept (those past its commit index too: they may
  have been acknowledged by the lost leader, and committing them now is one of
  the outcomes a client that got no answer must expect);
- configuration entries are appended at a new term (the saved term + 1) that
  promote the node to voter if it was a learner, then remove every other voter
  and learner, one at a time;
- the hard state is saved with that term, a vote for itself and a commit index
  that covers the whole log, so the entries are committed locally.

The node then starts as the only voter and elects itself after one election
timeout. Others are added back with ``leekyraft add-server``. Writes
acknowledged only by the lost nodes are gone; the other old members must be
wiped before they come back (docs/running.md, "Recovering from a lost quorum").

The rewrite is one-shot: it leaves ``DATA-DIR/forced-new-cluster`` behind,
and a node started with the option again refuses to start rather than remove
the members added since.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from leeky_twisted.core.log import RaftLog
from leeky_twisted.core.messages import (
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    SnapshotMeta,
)
from leeky_twisted.interfaces import ILogStore, ISnapshotStore, IStableStore
from leeky_twisted.storage.fsutil import atomic_write

MARKER_FILE = "forced-new-cluster"


class ForceNewClusterError(Exception):
    """The stores cannot be turned into a one-node cluster; the message says why."""


@dataclass(frozen=True)
class ForcedCluster:
    """What :func:`force_new_cluster` did."""

    term: int  #: the new term the configuration entries carry
    removed: tuple[NodeId, ...]  #: the members taken out, in order
    first_index: int  #: index of the first entry appended
    commit: int  #: the commit index saved (the end of the log)
    previous_commit: int  #: the commit index saved before
    previous_config: Configuration


def force_new_cluster(
    node_id: NodeId,
    log_store: ILogStore,
    stable_store: IStableStore,
    snapshot_store: ISnapshotStore,
) -> ForcedCluster:
    """Rewrite the stores so that ``node_id`` is the only member; return what changed.

    Raise ForceNewClusterError (changing nothing) when the node holds no
    cluster at all (an empty data folder) or is not a member of its latest
    configuration. The entries are durable before the hard state that
    commits them is saved, so a crash in between leaves a log whose extra
    entries are simply uncommitted; running the option again finishes the job.
    """
    hs = stable_store.load()
    assert isinstance(hs, HardState)
    meta = snapshot_store.latest()
    assert meta is None or isinstance(meta, SnapshotMeta)
    start = meta.index if meta is not None else 0
    first, last = log_store.first_index(), log_store.last_index()
    entries: list[Entry] = []
    if last > start:
        lo = max(first, start + 1)
        if lo > start + 1:
            raise ForceNewClusterError(
                f"the log starts at {first} but the newest snapshot ends at {start}"
            )
        entries = list(log_store.entries(lo, last + 1))
    log = (
        RaftLog(meta.index, meta.term, meta.config, entries)
        if meta is not None
        else RaftLog(0, 0, None, entries)
    )
    config = log.config()
    if not config.members():
        raise ForceNewClusterError(
            "this data folder holds no cluster (no configuration in its log or snapshot): "
            "there is nothing to recover; start the node without --force-new-cluster"
        )
    if node_id not in config.members():
        raise ForceNewClusterError(
            f"node {node_id} is not a member of its latest configuration (voters "
            f"{sorted(config.voters)}, learners {sorted(config.learners)}): it was "
            "removed, so its data is not the cluster's; pick another survivor"
        )
    term = max(hs.term, log.last_term()) + 1
    changes: list[ConfChange] = []
    if node_id not in config.voters:
        changes.append(ConfChange(ConfChangeOp.ADD_VOTER, node_id))
    removed = tuple(sorted(config.members() - {node_id}))
    changes.extend(ConfChange(ConfChangeOp.REMOVE, nid) for nid in removed)
    changes.extend(_own_seat(config, changes, node_id, hs.storage_id))
    index = log.last_index()
    appended = [
        Entry(index + 1 + i, term, EntryKind.CONFIG, change.encode())
        for i, change in enumerate(changes)
    ]
    if last < start:
        log_store.reset(start + 1)  # the log ended below the snapshot: start after it
    if appended:
        log_store.append(appended)
    commit = index + len(appended)
    stable_store.save(HardState(term, node_id, commit, False, hs.storage_id))
    return ForcedCluster(term, removed, index + 1, commit, hs.commit, config)


def _own_seat(
    config: Configuration, changes: list[ConfChange], node_id: NodeId, storage_id: int
) -> list[ConfChange]:
    """Return the changes that seat this node's own storage (docs/core.md, seats).

    A survivor whose seat is vacant, or names a storage it lost, would never
    stand for election alone: it is the only voter now, so it takes the seat.
    """
    for change in changes:
        config = config.apply(change)
    seat = config.storage_of(node_id)
    if seat is None or seat == storage_id or not storage_id:
        return []
    vacate = [ConfChange.bind(node_id, 0)] if seat else []
    return [*vacate, ConfChange.bind(node_id, storage_id)]


def check_not_forced_before(data_dir: str) -> None:
    """Raise ForceNewClusterError when ``--force-new-cluster`` already ran on ``data_dir``."""
    path = os.path.join(data_dir, MARKER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            before = f.read().strip()
    except FileNotFoundError:
        return
    raise ForceNewClusterError(
        f"--force-new-cluster already ran on this data folder ({before}); it is one-shot: "
        "start the node without it. Running it again would remove every member added "
        f"since. If you truly mean to, delete {path} first"
    )


def mark_forced(data_dir: str, result: ForcedCluster) -> None:
    """Record in ``DATA-DIR/forced-new-cluster`` that the rewrite ran, and how."""
    record = {
        "term": result.term,
        "removed": list(result.removed),
        "commit": result.commit,
        "previous_commit": result.previous_commit,
    }
    atomic_write(os.path.join(data_dir, MARKER_FILE), json.dumps(record).encode() + b"\n")


def recover_as_new_cluster(
    data_dir: str,
    node_id: NodeId,
    log_store: ILogStore,
    stable_store: IStableStore,
    snapshot_store: ISnapshotStore,
    warn: Callable[[str], None],
) -> ForcedCluster:
    """Run the one-shot rewrite for ``--force-new-cluster``, mark it done, warn loudly.

    Raise ForceNewClusterError when it ran on this folder before or cannot run.
    """
    check_not_forced_before(data_dir)
    result = force_new_cluster(node_id, log_store, stable_store, snapshot_store)
    mark_forced(data_dir, result)
    removed = ", ".join(result.removed) or "none"
    warn(
        f"--force-new-cluster: node {node_id} is now the ONLY member of its cluster, at "
        f"term {result.term}; removed: {removed}. Entries up to {result.commit} are "
        f"committed (the commit index was {result.previous_commit}). Writes acknowledged "
        "only by the removed nodes are lost. Wipe the data folder of every removed node "
        "before it is added again (leekyraft add-server), and never start another node "
        "with --force-new-cluster. Start this node without the option from now on."
    )
    return result
