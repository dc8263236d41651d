"""Prometheus metrics of one node, in the text exposition format.

Each :class:`NodeMetrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(never the process-global one), so several nodes in one process, as in tests and
``leekyraft local``, never mix their figures.

Most values are read from ``node.status()`` at scrape time, so they are always
current and the node needs no change to expose them. Two things cannot be read
afterwards and need the node to report them as they happen:

- the distribution of persist (append + fsync) times: the node calls
  :meth:`NodeMetrics.observe_persist` after each disk write (it is thread-safe,
  so the disk thread may call it). Without that hook, the cumulative
  ``stats["persist_seconds"]``/``stats["persists"]`` still give a summary
  (count and sum, hence the mean), just no buckets.
- the executor's applied index when the state machine is a separate process:
  the node puts its ``executor`` figures in its status and the lag is
  measured against their applied index (otherwise against ``applied_index``).

Serve it from the lean HTTP server with
``extra_routes={b"/metrics": metrics_route(node)}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from leeky_twisted.interfaces import IRaftNode

__all__ = [
    "CONTENT_TYPE",
    "PERSIST_BUCKETS",
    "ROLES",
    "NodeMetrics",
    "metrics_route",
]

#: The Content-Type of the exposition (text format 0.0.4, what every scraper reads).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: The roles a node reports in ``status().role``; one ``leeky_raft_role`` series each.
ROLES = ("leader", "follower", "candidate", "learner", "removed")

#: Histogram buckets for one persist (append + fsync), in seconds: 50 µs to 2.5 s.
PERSIST_BUCKETS: Sequence[float] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


def _number(status: Mapping[str, Any] | None, key: str, default: float = 0) -> float:
    return _value(status.get(key, default) if status else default, default)


def _value(value: object, default: float = 0) -> float:
    """Return ``value`` as a float; ``default`` for anything not a number (never raise)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float(default)
    return float(value)


class _StatusCollector:
    """A custom collector: turn one ``status()`` call into metric families."""

    def __init__(self, node: IRaftNode) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        """Yield every status-derived metric family (called once per scrape)."""
        st = self._node.status()

        info = GaugeMetricFamily(
            "leeky_raft_node_info", "Constant 1, labelled with this node's id.", labels=["node_id"]
        )
        info.add_metric([str(st.node_id)], 1)
        yield info

        role = GaugeMetricFamily(
            "leeky_raft_role", "1 for the current role, 0 for others.", labels=["role"]
        )
        for name in ROLES:
            role.add_metric([name], 1 if name == st.role else 0)
        yield role

        gauges = (
            ("leeky_raft_term", "The current term.", st.term),
            ("leeky_raft_commit_index", "The highest committed log index.", st.commit_index),
            ("leeky_raft_applied_index", "The highest log index applied.", st.applied_index),
            ("leeky_raft_first_index", "The first index still in the log.", st.first_index),
            ("leeky_raft_last_index", "The last index in the log.", st.last_index),
            ("leeky_raft_log_entries", "Entries held in the log (not compacted).", st.log_entries),
            ("leeky_raft_snapshot_index", "The index of the latest snapshot.", st.snapshot_index),
            (
                "leeky_raft_pending_requests",
                "Proposals waiting to be applied.",
                st.pending_requests,
            ),
            ("leeky_raft_pending_reads", "Linearizable reads waiting.", st.pending_reads),
        )
        for name, help_text, value in gauges:
            yield GaugeMetricFamily(name, help_text, value=_value(value))

        yield GaugeMetricFamily("leeky_raft_voters", "Voters in the configuration.", len(st.voters))
        yield GaugeMetricFamily(
            "leeky_raft_learners", "Learners in the configuration.", len(st.learners)
        )
        yield GaugeMetricFamily(
            "leeky_raft_has_leader", "1 when this node knows a leader.", 1 if st.leader else 0
        )

        applied = st.executor.applied_index if st.executor is not None else st.applied_index
        yield GaugeMetricFamily(
            "leeky_raft_executor_lag_entries",
            "Committed entries the state machine has not applied yet (commit - applied).",
            value=max(_value(st.commit_index) - _value(applied), 0),
        )

        counters = (
            ("leeky_raft_leader_changes", "Times the known leader changed.", st.leader_changes),
            ("leeky_raft_elections_started", "Elections this node started.", st.elections),
        )
        for name, help_text, value in counters:
            yield CounterMetricFamily(name, help_text, value=_value(value))

        yield from self._members()

        stats = st.stats
        stat_counters = (
            ("leeky_raft_readies", "Ready batches handled.", "readies"),
            ("leeky_raft_entries_persisted", "Log entries written to disk.", "entries_persisted"),
            ("leeky_raft_entries_applied", "Committed entries applied.", "applied"),
            ("leeky_raft_messages_sent", "Raft messages sent to peers.", "messages_sent"),
        )
        for name, help_text, key in stat_counters:
            yield CounterMetricFamily(name, help_text, value=_number(stats, key))
        yield SummaryMetricFamily(
            "leeky_raft_persist_seconds",
            "Time spent persisting (append + fsync) on the disk thread.",
            count_value=int(_number(stats, "persists")),
            sum_value=_number(stats, "persist_seconds"),
        )

    def _members(self) -> Iterator[Metric]:
        """Yield gossip members by state and Raft role, when the node has ``members()``."""
        members = self._node.members
        gossip = GaugeMetricFamily(
            "leeky_gossip_members",
            "Nodes known through gossip, by gossip state.",
            labels=["state"],
        )
        raft = GaugeMetricFamily(
            "leeky_raft_members", "Known nodes, by Raft role.", labels=["raft_role"]
        )
        by_state: dict[str, int] = {}
        by_role: dict[str, int] = {}
        for m in members():
            state = m.get("gossip")
            if state is not None:
                by_state[str(state)] = by_state.get(str(state), 0) + 1
            role = str(m.get("raft", "unknown"))
            by_role[role] = by_role.get(role, 0) + 1
        for state, n in sorted(by_state.items()):
            gossip.add_metric([state], n)
        for role, n in sorted(by_role.items()):
            raft.add_metric([role], n)
        yield gossip
        yield raft


class NodeMetrics:
    """The metrics of one node, in a registry of their own.

    Made before the node, so the node can be given :meth:`observe_persist` and
    :meth:`observe_peer_rtt` as hooks when it is built; :meth:`track` (or
    ``node`` here) then adds the figures read from its ``status()``.
    """

    def __init__(self, node: IRaftNode | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        if node is not None:
            self.track(node)
        self._persist = Histogram(
            "leeky_raft_persist_duration_seconds",
            "Duration of one persist (append + fsync), observed by the node.",
            buckets=PERSIST_BUCKETS,
            registry=self.registry,
        )
        self._peer_rtt = Histogram(
            "leeky_raft_peer_rtt_seconds",
            "Heartbeat round trip from the leader to each peer.",
            ["peer"],
            buckets=PERSIST_BUCKETS,
            registry=self.registry,
        )
        self._persist_entries = Histogram(
            "leeky_raft_persist_batch_entries",
            "Log entries written per persist (group commit size).",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )

    def track(self, node: IRaftNode) -> None:
        """Read ``node``'s status at each scrape."""
        self.registry.register(_StatusCollector(node))

    def observe_peer_rtt(self, peer: str, seconds: float) -> None:
        """Record one heartbeat round trip to ``peer`` (leader only)."""
        self._peer_rtt.labels(peer=peer).observe(seconds)

    def observe_persist(self, seconds: float, entries: int = 0) -> None:
        """Record one persist that took ``seconds`` and wrote ``entries`` entries.

        Safe to call from the disk thread.
        """
        self._persist.observe(seconds)
        self._persist_entries.observe(entries)

    def render(self) -> tuple[bytes, bytes]:
        """Return ``(content_type, body)``: the text exposition of every metric now."""
        return CONTENT_TYPE, generate_latest(self.registry)


def metrics_route(
    node: IRaftNode, metrics: NodeMetrics | None = None
) -> Callable[[], tuple[bytes, bytes]]:
    """Return a GET route for the lean HTTP server's ``extra_routes[b"/metrics"]``.

    Pass ``metrics`` when the node also reports persist observations into it
    (see :meth:`NodeMetrics.observe_persist`); otherwise a fresh one is made.
    """
    return (metrics or NodeMetrics(node)).render
