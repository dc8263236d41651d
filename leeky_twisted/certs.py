"""Moved to :mod:`leeky_twisted.security.certs`: the old name still imports."""

from leeky_twisted.security.certs import (  # noqa: F401
    CA_NAME,
    CLIENT_ROLE,
    NODE_ROLE,
    NODES_NAME,
    CertFiles,
    client_dns_name,
    make_client_cert,
    make_dev_ca,
    make_node_cert,
    node_dns_name,
)
