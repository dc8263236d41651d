"""The node as a Twisted service tree: storage, peer transport, node, client APIs.

With ``NodeOptions.tls_dir`` every listener speaks mutual TLS
(:class:`~leeky_twisted.security.tls.MutualTLSServerEndpoint`): the peer port accepts
only node certificates, and a peer's Hello must name the node in its
certificate; the AMP client port and the HTTP port (then HTTPS) accept node
and client certificates. The node dials its peers, and forwards requests to
the leader, with its own node certificate. Without it everything is
plaintext and each listener logs a warning (:func:`~leeky_twisted.security.tls.warn_tls_disabled`).

Every listener admits connections through a
:class:`~leeky_twisted.security.connlimits.ConnectionGuard` of its own: caps sized from
the open-files limit (raised to the hard limit at start), a first-bytes (and
TLS handshake) timeout, and on the client ports an idle timeout and a bound on
the time one request may take to arrive.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from leeky_twisted import defaults
from leeky_twisted.api.amp_api import (
    ClientAPIProtocol,
    ClientLocator,
    RequestLimits,
    make_frontend,
)
from leeky_twisted.api.http_server import MAX_HEADER_BYTES, JSONRPCHTTPFactory
from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.api.sse import add_watch_resource
from leeky_twisted.api.web import NodeWebSite, make_node_site
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import NodeId, SnapshotMeta
from leeky_twisted.dashboard import (
    CountingTransport,
    MessageCounter,
    MeteredNode,
    RequestMeter,
    make_dashboard,
)
from leeky_twisted.membership.autopilot import Autopilot
from leeky_twisted.membership.contact import ContactTracker, ContactTrackingTransport
from leeky_twisted.membership.reconciler import ReconcilerSettings
from leeky_twisted.membership.udp import GossipService, make_gossip_service
from leeky_twisted.protocol.connection import Connector, tls_connector
from leeky_twisted.security.certs import NODE_ROLE, node_dns_name
from leeky_twisted.security.connlimits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HELD_BYTES,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_REQUEST_READ_TIMEOUT,
    ConnectionGuard,
    GuardedFactory,
    guard_metrics,
    plan_caps,
    raise_descriptor_limit,
)
from leeky_twisted.security.peerauth import UnauthenticatedPeersError, unauthenticated_peers_refusal
from leeky_twisted.security.tls import (
    ALL_ROLES,
    MutualTLSServerEndpoint,
    TLSCredentials,
    TLSFiles,
    client_endpoint,
    warn_tls_disabled,
)
from leeky_twisted.server.addresses import AddressBook
from leeky_twisted.server.folderguard import DataFolderGuard
from leeky_twisted.server.metrics import NodeMetrics
from leeky_twisted.server.node import NodeHooks, NodeSettings, RaftNode
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.files import FileLogStore, FileSnapshotStore, FileStableStore
from leeky_twisted.storage.folderwatch import FolderIdentity
from leeky_twisted.transport.bootstrap_config import BootstrapConfig
from leeky_twisted.transport.hello_auth import HelloAuthenticator
from leeky_twisted.transport.peer_protocol import certificate_node_id
from leeky_twisted.transport.peers import AMPPeerTransport

#: pending connections the kernel holds per port while the node accepts: a
#: flood of connections must not make every other client's connect wait
LISTEN_BACKLOG = 1024

log = Logger()


@dataclass(frozen=True)
class PeerSpec:
    """A voter named on the command line: its id and peer (Raft) address."""

    node_id: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """Return ``host:port``."""
        return f"{self.host}:{self.port}"


@dataclass
class NodeOptions:
    """Everything needed to run one node (what ``twistd leekyraft`` parses)."""

    node_id: str
    peers: list[PeerSpec]
    data_dir: str
    client_port: int = 0
    http_port: int = 0
    client_host: str | None = None
    cluster_id: str = "leeky"
    tick: float = defaults.TICK_SECONDS
    heartbeat_ticks: int = defaults.HEARTBEAT_TICKS
    election_ticks: int = defaults.ELECTION_TICKS
    request_timeout: float = defaults.REQUEST_TIMEOUT
    snapshot_entries: int = defaults.SNAPSHOT_ENTRIES
    snapshot_bytes: int = defaults.SNAPSHOT_BYTES
    inline_write_budget: float = defaults.INLINE_WRITE_BUDGET
    #: seconds between two checks that the data folder is still the one opened
    data_dir_check: float = defaults.DATA_DIR_CHECK_SECONDS
    max_key_bytes: int = defaults.MAX_KEY_BYTES
    max_value_bytes: int = defaults.MAX_VALUE_BYTES
    #: recent events kept for watches (docs/coordination.md)
    watch_window: int = defaults.WATCH_WINDOW
    lease_read: bool = False
    #: followers serve linearizable reads with a read index from the leader
    follower_reads: bool = True
    forward: bool = True
    unsafe_stale_reads: bool = False
    executor_url: str | None = None
    address: PeerSpec | None = None  #: own peer address when grown by gossip
    gossip_port: int | None = None
    bootstrap: bool = False
    join: list[tuple[str, int]] = field(default_factory=list)
    gossip_key: bytes | None = None
    gossip_key_path: str | None = None  #: where the key came from (for the log)
    gossip_key_created: bool = False  #: True when this start created the key file
    insecure: bool = False  #: gossip without a key was asked for explicitly
    max_voters: int = 5
    min_voters: int = 3
    dead_grace: float = 30.0
    stabilization: float = 10.0
    #: Folder with ca.pem and node-<id>.pem/.key (``leekyraft certs``); None: plaintext.
    tls_dir: str | None = None
    #: Seconds a client (AMP or HTTP) connection may stay silent before it is closed.
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Seconds a new connection has for its first bytes and its TLS handshake.
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: Seconds a client request (AMP or HTTP) may take to arrive whole, from its first bytes.
    request_read_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    #: Cap on each client port (AMP, HTTP); None: sized from the open-files limit.
    max_client_connections: int | None = None
    #: Cap on connections from one address to each client port; None: half the port's cap.
    max_connections_per_host: int | None = None
    #: Make this node the only member at start, keeping its data (leeky_twisted.server.recovery).
    force_new_cluster: bool = False
    #: The token that enables the dashboard's operator actions; None: read-only.
    dashboard_admin_token: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def own(self) -> PeerSpec:
        """Return this node's own peer entry."""
        for p in self.peers:
            if p.node_id == self.node_id:
                return p
        if self.address is not None:
            return self.address
        raise ValueError(f"node {self.node_id} is not among the peers")

    def initial_voters(self) -> list[PeerSpec]:
        """Return the voters a brand-new data folder starts with (none for a joiner)."""
        if self.peers:
            return self.peers
        return [self.own()] if self.bootstrap else []


class _DiskThread(service.Service):
    """A one-thread pool for every blocking disk operation, in order."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="leeky-disk")

    def run(self, fn: Callable[[], Any]) -> Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.pool, fn)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


def stop_for_a_port(reactor: Any, what: str, host: str, port: Any, error: object) -> None:
    """A port we must serve is taken: say so in one line, stop, and exit with status 1.

    A node that cannot listen is of no use, and one left running without its
    port looks alive to whoever started it.
    """
    why = getattr(error, "socketError", None) or error
    log.critical(
        "cannot listen on {what} ({host}:{port}): {why}; is another node or cluster "
        "using that port? Start this node with another port.",
        what=what,
        host=host,
        port=port,
        why=why,
    )
    exit_1_after_shutdown(reactor)
    reactor.callWhenRunning(reactor.stop)


def exit_1_after_shutdown(reactor: Any) -> None:
    """Make the process exit with status 1 once the reactor has shut down.

    For a node that stops because it must not go on: a supervisor (or a
    shell) sees that it failed.
    """
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)


class _Listener(service.Service):
    """Listen on a plaintext TCP port at start; report the bound port (for port 0).

    Logs :func:`~leeky_twisted.security.tls.warn_tls_disabled` for ``what`` once it listens.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        factory: Any,
        on_port: Callable[[int], None] | None = None,
        what: str = "a port",
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.on_port = on_port
        self.what = what
        self.listening: Any = None

    def startService(self) -> None:
        super().startService()
        try:
            self.listening = self.reactor.listenTCP(
                self.port, self.factory, backlog=LISTEN_BACKLOG, interface=self.host
            )
        except CannotListenError as e:
            stop_for_a_port(self.reactor, self.what, self.host, self.port, e)
            return
        bound = self.listening.getHost().port
        warn_tls_disabled(f"{self.what} ({self.host}:{bound})")
        if self.on_port is not None:
            self.on_port(bound)

    def stopService(self) -> Any:
        super().stopService()
        if self.listening is not None:
            return self.listening.stopListening()
        return None


class _EndpointListener(service.Service):
    """Listen on a server endpoint at start (e.g. mutual TLS); report the bound port.

    A TCP-based endpoint listens at once, so a port that cannot be bound
    fails ``startService`` (and twistd's start) just as ``listenTCP`` does.
    """

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: Any,
        on_port: Callable[[int], None] | None = None,
        what: str = "a port",
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.on_port = on_port
        self.what = what
        self.listening: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:  # TCP-based endpoints always answer at once
            raise RuntimeError(f"{self.what}: the endpoint did not listen at once")
        if isinstance(outcome[0], Failure):
            reactor = getattr(self.endpoint, "reactor", None)
            if outcome[0].check(CannotListenError) and reactor is not None:
                port = getattr(outcome[0].value, "port", "?")
                host = getattr(outcome[0].value, "interface", "") or "*"
                stop_for_a_port(reactor, self.what, host, port, outcome[0].value)
                return
            outcome[0].raiseException()
        self.listening = outcome[0]
        bound = outcome[0].getHost().port
        log.info("{what} listening with mutual TLS on port {port}", what=self.what, port=bound)
        if self.on_port is not None:
            self.on_port(bound)

    def stopService(self) -> Any:
        super().stopService()
        if self.listening is not None:
            return self.listening.stopListening()
        return None


def load_node_credentials(tls_dir: str, node_id: str) -> TLSCredentials:
    """Load ``ca.pem`` and ``node-<id>.pem``/``.key`` from ``tls_dir``.

    Raises OSError or ValueError when a file is missing or unusable, or when
    the certificate names another node (never start half-secured).
    """
    credentials = TLSCredentials.load(TLSFiles.for_node(tls_dir, node_id))
    if credentials.name != node_id:
        raise ValueError(
            f"node-{node_id}.pem in {tls_dir} is the certificate of {credentials.name!r}, "
            f"not of node {node_id!r}"
        )
    return credentials


def _peer_endpoint_maker(
    reactor: Any, credentials: TLSCredentials, timeout: float
) -> Callable[[str, int, NodeId], IStreamClientEndpoint]:
    """Return the peer transport's dialler: TLS, expecting the peer's own node id."""

    def make(host: str, port: int, peer_id: NodeId) -> IStreamClientEndpoint:
        return client_endpoint(
            reactor, host, port, credentials, node_dns_name(peer_id), timeout=timeout
        )

    return make


class _GuardCollector:
    """Prometheus collector of the listening ports' connection counters."""

    def __init__(self, guards: list[ConnectionGuard]) -> None:
        self.guards = guards

    def collect(self) -> Any:
        """Yield the connection metric families."""
        return guard_metrics(self.guards)


def connection_guards(opts: NodeOptions, reactor: Any) -> dict[str, ConnectionGuard]:
    """Raise the open-files limit, size the caps from it, and build one guard per port.

    The peer port has no idle timeout (a peer's Hello has its own, and a
    connected peer is never idle while there is a leader), and a cap of its
    own: client connections can never take a peer's place.
    """
    descriptors = raise_descriptor_limit()
    plan = plan_caps(descriptors, opts.max_client_connections, opts.max_connections_per_host)
    for warning in plan.warnings:
        log.warn("{warning}", warning=warning)
    log.info(
        "open-files limit {n}: at most {peer} peer connections, {client} per client port "
        "({host} from one address)",
        n=descriptors,
        peer=plan.peer.max_connections,
        client=plan.client.max_connections,
        host=plan.client.max_per_host,
    )

    # The unfinished requests of a client port hold DEFAULT_HELD_BYTES at most, and
    # always room for four of the largest (AMP: key, two values; HTTP: head, body).
    limits = RequestLimits(max_key_bytes=opts.max_key_bytes, max_value_bytes=opts.max_value_bytes)
    largest = max(
        limits.request_bytes, MAX_HEADER_BYTES + defaults.http_body_bytes(opts.max_value_bytes)
    )
    held_budget = max(DEFAULT_HELD_BYTES, 4 * largest)

    def guard(name: str, idle_timeout: float | None) -> ConnectionGuard:
        client = name != "peer"
        return ConnectionGuard(
            name,
            plan.client if client else plan.peer,
            reactor,
            idle_timeout=idle_timeout,
            handshake_timeout=opts.handshake_timeout,
            request_read_timeout=opts.request_read_timeout if client else None,
            max_held_bytes=held_budget if client else None,
        )

    return {
        "peer": guard("peer", None),
        "client": guard("client", opts.idle_timeout),
        "http": guard("http", opts.idle_timeout),
    }


class _NodeRunner(service.Service):
    """Starts the node's ticking after the listeners, stops it first."""

    def __init__(self, node: RaftNode, closers: list[Callable[[], Any]]) -> None:
        self.node = node
        self.closers = closers

    def startService(self) -> None:
        super().startService()
        self.node.start()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        yield self.node.stop()
        for close in self.closers:
            try:
                yield defer.maybeDeferred(close)
            except Exception:
                log.failure("error while closing")


GOSSIP_TICK = 0.1  #: seconds per gossip tick
LOG_SEGMENT_BYTES = 4 * 1024 * 1024  #: log segment file size


def _listen_address(host: str) -> str:
    """Return the IP address to listen on for ``host`` (a name is resolved once, at start)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return host
    except OSError:
        return socket.gethostbyname(host)


def _gossip(reactor: Any, opts: NodeOptions, book: AddressBook, own: PeerSpec) -> GossipService:
    """Build the gossip service and let it feed the node's address book."""
    assert opts.gossip_port is not None
    if opts.gossip_key is None:
        log.warn(
            "gossip is NOT authenticated (--insecure): anyone who can send UDP to "
            "{host}:{port} can join this cluster and, through the autopilot, become a voter",
            host=own.host,
            port=opts.gossip_port,
        )
    elif opts.gossip_key_created:
        log.info(
            "created the cluster key at {path} (mode 0600): give it to every node that "
            "joins, with --gossip-key-file",
            path=opts.gossip_key_path,
        )
    gossip = make_gossip_service(
        reactor,
        opts.node_id,
        (own.host, opts.gossip_port),
        opts.cluster_id,
        book.own(),
        interface=_listen_address(own.host),
        key=opts.gossip_key,
        tick_interval=GOSSIP_TICK,
        rng=random.Random(),
    )

    def on_member(member: Any) -> None:
        if member.node_id != opts.node_id and member.metadata:
            book.learn(member.node_id, member.metadata)

    gossip.core.subscribe(on_member)
    return gossip


class _Hooks(service.Service):
    """Run callables when the service tree starts and stops."""

    def __init__(self, start: list[Callable[[], Any]], stop: list[Callable[[], Any]]) -> None:
        self.start_hooks = start
        self.stop_hooks = stop

    def startService(self) -> None:
        super().startService()
        for hook in self.start_hooks:
            hook()

    def stopService(self) -> None:
        super().stopService()
        for hook in self.stop_hooks:
            hook()


class LeekyRaftService(service.MultiService):
    """The whole node: disk thread, listeners, the node itself."""

    def __init__(self, node: RaftNode) -> None:
        super().__init__()
        self.node = node
        self.autopilot: Autopilot | None = None  #: when the node runs gossip
        #: The HTTP port's twisted.web site (paths the lean server hands over).
        self.web: NodeWebSite | None = None
        #: Given to the application as its log observer (tap.py sets it): twistd
        #: logs through an application's ILogObserver component when it has one.
        self.log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        """Join ``parent``; give it ``log_observer`` unless it has a log observer already."""
        super().setServiceParent(parent)
        observer = self.log_observer
        if (
            observer is not None
            and isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver, None) is None
        ):
            parent.setComponent(ILogObserver, observer)


def _check_peer_authentication(opts: NodeOptions, own: PeerSpec) -> None:
    """Refuse (UnauthenticatedPeersError), or warn about, peers that cannot prove who they are."""
    keyed, tls = opts.gossip_key is not None, opts.tls_dir is not None
    addresses = [p.address for p in opts.peers] + [own.address]
    refusal = unauthenticated_peers_refusal(addresses, keyed=keyed, tls=tls, insecure=opts.insecure)
    if refusal is not None:
        raise UnauthenticatedPeersError(refusal)
    if keyed or tls:
        return
    if opts.insecure:
        log.warn(
            "the peer port is NOT authenticated (--insecure, no cluster key): anyone who can "
            "reach {address} can pose as a node of this cluster and send it Raft messages",
            address=own.address,
        )
    else:
        log.info(
            "no cluster key: peer Hellos are not authenticated, which is allowed because "
            "every peer address is loopback (only this machine can pose as a node)"
        )


def make_node_service(opts: NodeOptions, reactor: Any = None) -> LeekyRaftService:
    """Recover storage, bootstrap a new cluster if needed, and wire the service tree."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    # The disk thread hands each finished fsync back through the GIL; with the
    # default 5 ms switch interval a busy reactor thread would delay it that long.
    sys.setswitchinterval(0.0001)
    own = opts.own()
    _check_peer_authentication(opts, own)
    client_listen = _listen_address(opts.client_host or own.host)
    listen_host = _listen_address(own.host)
    # The address others use to reach our client ports: a wildcard listen
    # address is not one, so advertise the peer host then.
    client_host = own.host if client_listen in ("0.0.0.0", "::") else (opts.client_host or own.host)
    data = opts.data_dir
    os.makedirs(data, exist_ok=True)
    # Small segments let compaction give disk space back soon after each snapshot.
    log_store = FileLogStore(os.path.join(data, "log"), segment_size=LOG_SEGMENT_BYTES)
    stable_store = FileStableStore(os.path.join(data, "hardstate"))
    snapshot_store = FileSnapshotStore(os.path.join(data, "snapshots"))
    holder: dict[str, RaftNode] = {}
    folder_guard = DataFolderGuard(
        reactor,
        FolderIdentity(
            data,
            [os.path.join(data, "log"), os.path.join(data, "snapshots")],
            log_store.lock.path,
            log_store.lock.identity,
        ),
        lambda why: holder["node"].fail_stop(why),
        opts.data_dir_check,
    )
    if opts.force_new_cluster:
        from leeky_twisted.server.recovery import recover_as_new_cluster

        def warn(text: str) -> None:
            log.critical("{text}", text=text)

        recover_as_new_cluster(
            data, NodeId(opts.node_id), log_store, stable_store, snapshot_store, warn
        )
    voters = opts.initial_voters()

    addresses: dict[str, dict[str, str]] = {p.node_id: {"peer": p.address} for p in opts.peers}
    addresses.setdefault(opts.node_id, {"peer": own.address})
    addresses[opts.node_id].update(
        {
            "client": f"{client_host}:{opts.client_port}",
            "http": f"{client_host}:{opts.http_port}",
        }
    )
    # The node's own entry is what it listens on: the log and snapshots may
    # hold old news of it (a re-created container has a new host name).
    book = AddressBook(opts.node_id, addresses, keep_own=True)
    # The first entries of a new folder; every peer must state the same (or none).
    bootstrap = [(p.node_id, json.dumps({"peer": p.address}).encode()) for p in voters]
    bootstrap_config = BootstrapConfig.of(
        bootstrap, ",".join(f"{p.node_id}={p.address}" for p in voters)
    )
    settings = NodeSettings(
        tick_interval=opts.tick,
        snapshot_entries=opts.snapshot_entries,
        snapshot_bytes=opts.snapshot_bytes,
        snapshot_trailing=min(defaults.SNAPSHOT_TRAILING, opts.snapshot_entries // 4),
        addresses=addresses,
        unsafe_stale_reads=opts.unsafe_stale_reads,
        request_timeout=opts.request_timeout,
        inline_persist_seconds=opts.inline_write_budget,
        bootstrap=bootstrap,
    )
    core_config = CoreConfig(
        NodeId(opts.node_id),
        election_ticks=opts.election_ticks,
        heartbeat_ticks=opts.heartbeat_ticks,
        lease_read=opts.lease_read,
        follower_reads=opts.follower_reads,
    )
    disk = _DiskThread(reactor)
    # Every disk job that fails has the data folder checked at once.
    run_on_disk = folder_guard.checked(disk.run)
    credentials = load_node_credentials(opts.tls_dir, opts.node_id) if opts.tls_dir else None

    def peer_address(nid: NodeId) -> tuple[str, int] | None:
        addr = book.get(nid, {}).get("peer")
        if not addr:
            return None
        host, _, port = addr.rpartition(":")
        return host, int(port)

    def is_known(nid: str) -> bool:
        node = holder.get("node")
        if node is None:
            return False
        return nid in book or nid in node.core.configuration.members()

    # Snapshot files are read and written on the disk thread, never the reactor's.
    def read_snapshot(meta: SnapshotMeta) -> bytes | None:
        try:
            return snapshot_store.open(meta.index)
        except (KeyError, ValueError):
            return None

    def write_snapshot(meta: SnapshotMeta, payload: bytes) -> None:
        sink = snapshot_store.create(meta)
        sink.write(payload)
        sink.close()

    def snapshot_source(meta: SnapshotMeta) -> Deferred[bytes | None]:
        return run_on_disk(lambda: read_snapshot(meta))

    def snapshot_receiver(meta: SnapshotMeta, payload: bytes) -> Deferred[None]:
        return run_on_disk(lambda: write_snapshot(meta, payload))

    transport = AMPPeerTransport(
        reactor,
        cluster_id=opts.cluster_id,
        node_id=NodeId(opts.node_id),
        addresses=peer_address,
        is_known=is_known,
        snapshot_source=snapshot_source,
        snapshot_receiver=snapshot_receiver,
        rng=random.Random(),
        connect_endpoint=(
            _peer_endpoint_maker(reactor, credentials, 5.0) if credentials is not None else None
        ),
        authenticate=certificate_node_id if credentials is not None else None,
        # with a cluster key, only its holders get past the Hello
        hello_auth=HelloAuthenticator(opts.gossip_key, reactor) if opts.gossip_key else None,
        bootstrap=bootstrap_config,
    )
    # the leader's own evidence for the autopilot: when each peer last spoke to us
    contact = ContactTracker(reactor)
    # the dashboard's counts of Raft messages sent, by peer and kind (issue 17)
    message_counter = MessageCounter()
    executor = None
    if opts.executor_url:
        from leeky_twisted.statemachine.owner import node_executor_owner
        from leeky_twisted.statemachine.remote import RemoteStateMachineExecutor

        owner = node_executor_owner(data, opts.cluster_id, opts.node_id)
        executor = RemoteStateMachineExecutor(reactor, opts.executor_url, owner=owner)
    gossip = _gossip(reactor, opts, book, own) if opts.gossip_port is not None else None
    metrics = NodeMetrics()
    node = RaftNode(
        reactor,
        core_config,
        log_store,
        stable_store,
        snapshot_store,
        ContactTrackingTransport(CountingTransport(transport, message_counter), contact),
        KeyValueStateMachine(),
        settings,
        rng=random.Random(),
        run_blocking=run_on_disk,
        executor=executor,
        addresses=book,
        hooks=NodeHooks(
            on_persist=metrics.observe_persist,
            on_peer_rtt=metrics.observe_peer_rtt,
            storage_check=folder_guard.check,
            on_fail_stop=lambda _why: exit_1_after_shutdown(reactor),
        ),
        membership=gossip.core if gossip is not None else None,
        last_heard=contact.last_heard,
    )
    metrics.track(node)
    holder["node"] = node
    top = LeekyRaftService(node)
    disk.setServiceParent(top)
    folder_guard.setServiceParent(top)

    limits = RequestLimits(max_key_bytes=opts.max_key_bytes, max_value_bytes=opts.max_value_bytes)
    # Followers forward to the leader's client port with this node's own certificate.
    forward_connect: Connector | None = None
    if credentials is not None:
        forward_connect = tls_connector(reactor, credentials, timeout=opts.request_timeout)
    request_meter = RequestMeter(reactor)
    frontend = make_frontend(
        MeteredNode(node, request_meter),
        reactor,
        forward=opts.forward,
        limits=limits,
        timeout=opts.request_timeout,
        connect=forward_connect,
        watch_window=opts.watch_window,
        # a new leader keeps every lease at least an election timeout longer (api.leases)
        lease_extension=2 * opts.election_ticks * opts.tick,
    )
    if frontend.leases is not None:
        frontend.leases.start()

    guards = connection_guards(opts, reactor)

    def listener(
        what: str,
        host: str,
        port: int,
        factory: Any,
        roles: tuple[str, ...],
        guard: ConnectionGuard,
        on_port: Callable[[int], None] | None = None,
    ) -> service.Service:
        if credentials is None:
            return _Listener(
                reactor, host, port, GuardedFactory(factory, guard), on_port, what=what
            )
        endpoint = MutualTLSServerEndpoint(
            reactor,
            port,
            credentials,
            interface=host,
            backlog=LISTEN_BACKLOG,
            allowed_roles=roles,
            handshake_timeout=opts.handshake_timeout,
            guard=guard,
        )
        return _EndpointListener(endpoint, factory, on_port, what=what)

    listener(
        "the peer (Raft) port",
        listen_host,
        own.port,
        transport.server_factory(),
        (NODE_ROLE,),
        guards["peer"],
    ).setServiceParent(top)

    def set_port(kind: str) -> Callable[[int], None]:
        def record(port: int) -> None:
            book.set_own(kind, f"{client_host}:{port}")
            if gossip is not None:
                gossip.set_metadata(book.own())

        return record

    client_fac = Factory.forProtocol(lambda: ClientAPIProtocol(locator=ClientLocator(frontend)))
    client_listener = listener(
        "the AMP client port",
        client_listen,
        opts.client_port,
        client_fac,
        ALL_ROLES,
        guards["client"],
        set_port("client"),
    )
    client_listener.setServiceParent(top)
    rpc = KeyValueJSONRPC(frontend, defaults.http_body_bytes(opts.max_value_bytes))
    metrics.registry.register(_GuardCollector(list(guards.values())))
    routes = {b"/metrics": metrics.render}

    def status_json() -> dict[str, Any]:
        return node.status().to_json()

    top.web = make_node_site(rpc, status_json, routes)
    add_watch_resource(top.web.root, frontend)
    http_factory = JSONRPCHTTPFactory(rpc, status_json, routes, top.web)
    http_what = "the HTTPS port" if credentials is not None else "the HTTP port"
    listener(
        http_what,
        client_listen,  # like the AMP client port: --client-host, a wildcard too
        opts.http_port,
        http_factory,
        ALL_ROLES,
        guards["http"],
        set_port("http"),
    ).setServiceParent(top)
    make_dashboard(
        reactor,
        top.web.root,
        node,
        message_counter,
        request_meter,
        lambda node_id: contact.last_heard(NodeId(node_id)),
        data,
        admin_token=opts.dashboard_admin_token,
        credentials=credentials,  # with TLS, the other members are asked over HTTPS
    ).setServiceParent(top)
    if gossip is not None:
        gossip.setServiceParent(top)
    _NodeRunner(node, [frontend.close, transport.close]).setServiceParent(top)
    if gossip is not None:
        autopilot = Autopilot(
            reactor,
            node,
            gossip.core,
            GOSSIP_TICK,
            contact.last_heard,
            ReconcilerSettings(
                min_voters=opts.min_voters,
                max_voters=opts.max_voters,
                dead_grace=opts.dead_grace,
                stabilization_time=opts.stabilization,
            ),
        )
        top.autopilot = autopilot
        _Hooks(
            start=[autopilot.start] + ([lambda: gossip.join(opts.join)] if opts.join else []),
            stop=[autopilot.stop],
        ).setServiceParent(top)
    return top
