"""Mutual TLS for peer AMP, client AMP and HTTP: Twisted endpoints with certificate options.

Every connection is authenticated both ways against the cluster's CA (see
:mod:`leeky_twisted.security.certs` for the names inside the certificates):

- a server (any listening port) presents its node certificate and requires
  the connecting side to present one signed by the same CA; a connection
  without one, or with one from another CA, fails in the TLS handshake. On
  top of that, a port may accept only some roles: the peer (Raft) port takes
  only ``node`` certificates, so a client certificate cannot speak Raft.
  Every refusal is logged with the remote address and the reason.
- a client checks the server's certificate chain *and* its name: a node
  dialing peer ``3`` expects ``3.node.leeky`` (the node id, not the address,
  which may change), a client dialing any node expects ``leeky-node``.

Build the credentials once per process::

    creds = TLSCredentials.load(TLSFiles.for_node(cert_dir, node_id))
    server = MutualTLSServerEndpoint(reactor, port, creds, interface=host,
                                     allowed_roles=(NODE_ROLE,))
    client = client_endpoint(reactor, host, port, creds, node_dns_name(peer_id))

Without TLS, call :func:`warn_tls_disabled` so the log says what is exposed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted.security.certs import CLIENT_ROLE, NODE_ROLE, NODES_NAME
from leeky_twisted.security.connlimits import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    ConnectionGuard,
    GuardedFactory,
    RateLimitedLog,
)

__all__ = [
    "ALL_ROLES",
    "MutualTLSServerEndpoint",
    "RefusalLoggingFactory",
    "TLSCredentials",
    "TLSFiles",
    "client_endpoint",
    "peer_identity",
    "warn_tls_disabled",
]

log = Logger()

#: Roles accepted by client-facing ports (a node forwarding to the leader is a node).
ALL_ROLES = (NODE_ROLE, CLIENT_ROLE)


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the CA certificate and of one certificate with its key."""

    ca: str
    cert: str
    key: str

    @classmethod
    def for_node(cls, directory: str, node_id: str) -> TLSFiles:
        """Return the files :func:`~leeky_twisted.security.certs.make_node_cert` wrote."""
        return cls(
            os.path.join(directory, "ca.pem"),
            os.path.join(directory, f"node-{node_id}.pem"),
            os.path.join(directory, f"node-{node_id}.key"),
        )

    @classmethod
    def for_client(cls, directory: str, name: str) -> TLSFiles:
        """Return the files :func:`~leeky_twisted.security.certs.make_client_cert` wrote."""
        return cls(
            os.path.join(directory, "ca.pem"),
            os.path.join(directory, f"client-{name}.pem"),
            os.path.join(directory, f"client-{name}.key"),
        )


class TLSCredentials:
    """A CA to trust and this side's own certificate, loaded for Twisted."""

    def __init__(self, ca: ssl.Certificate, own: ssl.PrivateCertificate) -> None:
        self.ca = ca
        self.own = own

    @classmethod
    def load(cls, files: TLSFiles) -> TLSCredentials:
        """Read the PEM files; raise OSError or ValueError (never start half-secured)."""
        with open(files.ca, "rb") as f:
            ca = ssl.Certificate.loadPEM(f.read())
        with open(files.cert, "rb") as f:
            cert_pem = f.read()
        with open(files.key, "rb") as f:
            key_pem = f.read()
        try:
            own = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
        except Exception as e:
            raise ValueError(f"cannot load {files.cert} with {files.key}: {e}") from None
        return cls(ca, own)

    @property
    def name(self) -> str:
        """Return this side's common name (node id or client name)."""
        names = self.own.original.to_cryptography().subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        return str(names[0].value) if names else ""

    def server_options(self) -> ssl.CertificateOptions:
        """Return server options that present our certificate and require a CA-signed peer.

        A client offering ALPN (curl, browsers, Prometheus) gets the first of
        the listening factory's protocols it offered (``IProtocolNegotiationFactory``;
        ``http/1.1`` on the HTTP port), or no protocol at all: never the
        ``internal error`` alert Twisted's own callback causes by answering
        an empty protocol name when nothing overlaps.
        """
        options = ssl.CertificateOptions(trustRoot=self.ca, **self._own_options())
        options.getContext().set_alpn_select_callback(select_alpn)
        return options

    def client_options(self, server_name: str) -> Any:
        """Return client options: present our certificate; verify ``server_name`` and the CA."""
        return ssl.optionsForClientTLS(
            server_name, trustRoot=self.ca, extraCertificateOptions=self._own_options()
        )

    def _own_options(self) -> dict[str, Any]:
        # cryptography objects: pyOpenSSL deprecates passing its own X509/PKey.
        return {
            "privateKey": self.own.privateKey.original.to_cryptography_key(),
            "certificate": self.own.original.to_cryptography(),
            "raiseMinimumTo": ssl.TLSVersion.TLSv1_2,
        }

    def cluster_options(self) -> Any:
        """Return client options for dialing any node of the cluster."""
        return self.client_options(NODES_NAME)


def select_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """Choose the ALPN protocol for a server connection, or none when nothing overlaps.

    The server's protocols are those of the application factory inside the
    TLS layer, when it provides ``IProtocolNegotiationFactory``.
    """
    tls_protocol = connection.get_app_data()
    factory = getattr(getattr(tls_protocol, "factory", None), "wrappedFactory", None)
    negotiating = IProtocolNegotiationFactory(factory, None)
    ours = list(negotiating.acceptableProtocols()) if negotiating is not None else []
    for protocol in ours:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def peer_identity(transport: Any) -> tuple[str, str] | None:
    """Return the peer certificate's ``(common name, role)``, or None without one."""
    get = getattr(transport, "getPeerCertificate", None)
    cert = get() if get is not None else None
    if cert is None:
        return None
    subject = cert.to_cryptography().subject

    def first(oid: x509.ObjectIdentifier) -> str:
        values = subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME)


def _describe(failure: Failure) -> str:
    value = failure.value
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        reasons = [str(r[2]) for r in value.args[0] if len(r) >= 3 and r[2]]
        if reasons:
            return "; ".join(reasons)
    return failure.getErrorMessage() or failure.type.__name__


@implementer(IHandshakeListener)
class _CheckingProtocol(ProtocolWrapper):
    """Log refused handshakes; refuse peers whose certificate has the wrong role."""

    factory: RefusalLoggingFactory

    def __init__(self, factory: RefusalLoggingFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._handshake_done = False
        self._refused = False
        self._timed_out = False
        self._timer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        """Start the handshake deadline, then connect as usual."""
        factory = self.factory
        if factory.clock is not None and factory.handshake_timeout is not None:
            self._timer = factory.clock.callLater(
                factory.handshake_timeout, self._handshake_timed_out
            )
        super().makeConnection(transport)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._handshake_done or self.transport is None:
            return
        self._timed_out = True
        factory = self.factory
        if factory.events is not None:
            factory.events.warn(
                "handshake",
                "closed a connection from {peer}: no TLS handshake within {seconds} s",
                peer=_address(self.transport),
                seconds=factory.handshake_timeout,
            )
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def handshakeCompleted(self) -> None:
        """Check the role in the peer's (already CA-verified) certificate."""
        self._handshake_done = True
        self._cancel_timer()
        identity = peer_identity(self.transport)
        allowed = self.factory.allowed_roles
        if identity is None or identity[1] not in allowed:
            self._refused = True
            name, role = identity or ("?", "none")
            log.warn(
                "refused TLS connection from {peer}: certificate {name!r} has role "
                "{role!r}, this port accepts {allowed}",
                peer=_address(self.transport),
                name=name,
                role=role,
                allowed=", ".join(allowed),
            )
            self.transport.abortConnection()
            return
        log.debug(
            "TLS connection from {peer} authenticated as {name} ({role})",
            peer=_address(self.transport),
            name=identity[0],
            role=identity[1],
        )
        listener = self.wrappedProtocol
        if IHandshakeListener.providedBy(listener):
            listener.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        """Pass data on, unless the peer was refused."""
        if not self._refused:
            super().dataReceived(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Log a handshake that failed (no certificate, another CA, not TLS)."""
        self._cancel_timer()
        if not self._handshake_done and not self._timed_out:
            if reason is not None and reason.check(SSL.Error):
                log.warn(
                    "refused TLS connection from {peer}: {why}",
                    peer=_address(self.transport),
                    why=_describe(reason),
                )
            else:
                log.info(
                    "connection from {peer} closed before the TLS handshake",
                    peer=_address(self.transport),
                )
        super().connectionLost(reason)


def _address(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "unknown"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


@implementer(IProtocolNegotiationFactory)
class RefusalLoggingFactory(WrappingFactory):
    """Wrap an application factory: log refusals, accept only ``allowed_roles``.

    The ALPN protocols it accepts are the wrapped factory's (none if it
    does not provide ``IProtocolNegotiationFactory``).

    Must sit *inside* the TLS layer (as :class:`MutualTLSServerEndpoint` puts it).
    With a ``clock``, a connection whose handshake has not completed within
    ``handshake_timeout`` seconds is aborted (logged at most once a minute).
    """

    protocol = _CheckingProtocol  # type: ignore[assignment]

    def __init__(
        self,
        wrapped: IProtocolFactory,
        allowed_roles: Iterable[str] = ALL_ROLES,
        *,
        clock: IReactorTime | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(wrapped)
        self.allowed_roles = tuple(allowed_roles)
        if not self.allowed_roles:
            raise ValueError("allowed_roles must name at least one role")
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.events = RateLimitedLog(clock.seconds) if clock is not None else None

    def acceptableProtocols(self) -> list[bytes]:
        """Return the ALPN protocols of the wrapped factory, if it names any."""
        negotiating = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(negotiating.acceptableProtocols()) if negotiating is not None else []


@implementer(IStreamServerEndpoint)
class MutualTLSServerEndpoint:
    """A TCP server endpoint that speaks TLS and requires a CA-signed client certificate.

    :param allowed_roles: certificate roles accepted here: ``(NODE_ROLE,)``
        for the peer port, :data:`ALL_ROLES` for client ports.
    :param handshake_timeout: seconds a connection has to complete the TLS
        handshake before it is aborted; None: no limit.
    :param guard: when given, admits each connection (caps, idle timeout)
        before any TLS work is done for it.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        credentials: TLSCredentials,
        interface: str = "",
        allowed_roles: Iterable[str] = ALL_ROLES,
        backlog: int = 50,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        guard: ConnectionGuard | None = None,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.credentials = credentials
        self.interface = interface
        self.allowed_roles = tuple(allowed_roles)
        self.backlog = backlog
        self.handshake_timeout = handshake_timeout
        self.guard = guard

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen with TLS; every connection's refusal is logged.

        The layers, outermost first: the guard (if any), TLS, the role check
        and handshake deadline, the application's factory.
        """
        checking = RefusalLoggingFactory(
            protocolFactory,
            self.allowed_roles,
            clock=self.reactor,
            handshake_timeout=self.handshake_timeout,
        )
        factory: IProtocolFactory = TLSMemoryBIOFactory(
            self.credentials.server_options(), False, checking
        )
        if self.guard is not None:
            factory = GuardedFactory(factory, self.guard)
        endpoint = TCP4ServerEndpoint(
            self.reactor, self.port, backlog=self.backlog, interface=self.interface
        )
        d: Deferred[IListeningPort] = endpoint.listen(factory)
        return d


def client_endpoint(
    reactor: Any,
    host: str,
    port: int,
    credentials: TLSCredentials,
    server_name: str,
    timeout: float = 30,
) -> IStreamClientEndpoint:
    """Return an endpoint dialing ``host:port`` with TLS, expecting ``server_name``.

    Use ``node_dns_name(peer_id)`` for a peer, ``NODES_NAME`` for any node.
    """
    return wrapClientTLS(
        credentials.client_options(server_name),
        TCP4ClientEndpoint(reactor, host, port, timeout=timeout),
    )


def warn_tls_disabled(what: str) -> None:
    """Log, once per listener, that ``what`` runs without TLS and what that exposes."""
    log.warn(
        "TLS is OFF for {what}: anyone who can reach this port can read and forge its "
        "traffic (for local development only; see docs/security.md)",
        what=what,
    )
