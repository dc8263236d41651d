"""Moved to :mod:`leeky_twisted.security.tls`: the old name still imports."""

from leeky_twisted.security.tls import (  # noqa: F401
    ALL_ROLES,
    MutualTLSServerEndpoint,
    RefusalLoggingFactory,
    TLSCredentials,
    TLSFiles,
    client_endpoint,
    peer_identity,
    warn_tls_disabled,
)
