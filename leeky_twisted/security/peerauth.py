"""Who can say Hello on the peer port of a node that has no cluster key.

A node proves itself in the peer Hello with the cluster key
(:mod:`~leeky_twisted.transport.hello_auth`) or its TLS certificate. A static
``--peers`` cluster started by hand may have neither: then anyone who reaches
a peer port can pose as a node and send it Raft messages (issue 19, finding
4). That is allowed only where nobody but this machine can reach the port,
so a node without key and TLS starts only when every ``--peers`` address (its
own, where it listens, included) is a loopback address, or with an explicit
``--insecure``. Everywhere else it refuses to start with one line naming the
way out (:func:`unauthenticated_peers_refusal`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable


class UnauthenticatedPeersError(ValueError):
    """A node without key or TLS was asked to listen for, or dial, peers beyond loopback."""


#: How to make a key for a static cluster (``leekyraft keygen``, in leeky_twisted.cli).
KEYGEN_HINT = "`leekyraft keygen cluster.key`, then --gossip-key-file cluster.key"


def is_loopback_host(host: str) -> bool:
    """Return whether every address ``host`` names is a loopback address.

    An IP address is checked as it is; a name is resolved (``localhost``
    is loopback by definition). A name that does not resolve is not loopback.
    """
    host = host.strip("[]")
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return _loopback_ip(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(_loopback_ip(a.partition("%")[0]) for a in addresses)


def _loopback_ip(text: str) -> bool:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def unauthenticated_peers_refusal(
    addresses: Iterable[str], *, keyed: bool, tls: bool, insecure: bool
) -> str | None:
    """Return why a node may not start with these peer addresses, or None.

    ``addresses`` are ``HOST:PORT`` of every peer, this node's own (where it
    listens) included. A node with a cluster key or TLS proves its peers;
    one with neither starts only on loopback, or with ``insecure``.
    """
    if keyed or tls or insecure:
        return None
    exposed = [a for a in addresses if not is_loopback_host(a.rpartition(":")[0])]
    if not exposed:
        return None
    return (
        f"refusing to start: peer address {exposed[0]} is not loopback and this node has "
        "no cluster key, so anyone who reaches a peer port could pose as a node; give "
        f"every node the same cluster key ({KEYGEN_HINT}), or --tls-dir, or pass "
        "--insecure to run unauthenticated"
    )
