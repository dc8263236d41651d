"""Development certificates: a cluster CA, node certificates, client certificates.

What ``leekyraft certs`` does (``make_dev_ca`` once, then one
``make_node_cert`` per node and one ``make_client_cert`` per operator or
program). Everything is written to one directory::

    ca.pem  ca.key                      the cluster's CA (keep ca.key offline)
    node-<id>.pem  node-<id>.key        one per node
    client-<name>.pem  client-<name>.key

Names inside the certificates (checked by :mod:`leeky_twisted.security.tls`):

- a node's certificate has subject ``CN=<id>, OU=node`` and the DNS names
  ``<id>.node.leeky`` (what a peer checks when it dials that node) and
  ``leeky-node`` (what a client checks when it dials any node), plus any
  extra hosts given. Key usage: server and client authentication.
- a client's certificate has ``CN=<name>, OU=client`` and the DNS name
  ``<name>.client.leeky``; client authentication only, so it cannot serve
  as a node.

Keys are ECDSA P-256, written with mode 0600. This is for development and
small deployments: a production CA should live elsewhere (and rotate).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_NAME",
    "CLIENT_ROLE",
    "NODES_NAME",
    "NODE_ROLE",
    "CertFiles",
    "client_dns_name",
    "make_client_cert",
    "make_dev_ca",
    "make_node_cert",
    "node_dns_name",
]

CA_NAME = "Leeky Raft development CA"
NODE_ROLE = "node"
CLIENT_ROLE = "client"
#: The DNS name every node certificate carries: what a client checks.
NODES_NAME = "leeky-node"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class CertFiles:
    """Where one certificate and its key were written."""

    cert: str
    key: str


def node_dns_name(node_id: str) -> str:
    """Return the DNS name a node's certificate carries for its id."""
    return f"{_dns_label(node_id)}.node.leeky"


def client_dns_name(name: str) -> str:
    """Return the DNS name a client's certificate carries for its name."""
    return f"{_dns_label(name)}.client.leeky"


def _dns_label(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def _check_name(name: str) -> None:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"unsuitable name for a certificate file: {name!r}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: str, data: bytes, private: bool) -> None:
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_dev_ca(directory: str, name: str = CA_NAME, days: int = 3650) -> CertFiles:
    """Create a new CA in ``directory`` (``ca.pem``, ``ca.key``); refuse to overwrite one.

    Raises FileExistsError when ``directory`` already holds a CA.
    """
    os.makedirs(directory, exist_ok=True)
    files = CertFiles(os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key"))
    if os.path.exists(files.cert) or os.path.exists(files.key):
        raise FileExistsError(f"{directory} already holds a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def _load_ca(directory: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    with open(os.path.join(directory, "ca.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(directory, "ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key is not an EC key made by make_dev_ca")
    return cert, key


def _issue(
    directory: str,
    stem: str,
    common_name: str,
    role: str,
    dns_names: Sequence[str],
    ips: Sequence[str],
    usages: Sequence[x509.ObjectIdentifier],
    days: int,
) -> CertFiles:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(
        os.path.join(directory, f"{stem}.pem"), os.path.join(directory, f"{stem}.key")
    )
    _write(files.key, _key_pem(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return files


def _split_hosts(hosts: Sequence[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            dns.append(h)
        else:
            ips.append(h)
    return dns, ips


def make_node_cert(
    directory: str,
    node_id: str,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    days: int = 825,
) -> CertFiles:
    """Issue ``node-<id>.pem``/``.key`` signed by the CA in ``directory``.

    ``hosts`` (names or IP addresses) are added to the certificate so tools
    that check addresses (curl, browsers) accept it too.
    """
    _check_name(node_id)
    dns, ips = _split_hosts(hosts)
    return _issue(
        directory,
        f"node-{node_id}",
        node_id,
        NODE_ROLE,
        [node_dns_name(node_id), NODES_NAME, *dns],
        ips,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days,
    )


def make_client_cert(directory: str, name: str, days: int = 825) -> CertFiles:
    """Issue ``client-<name>.pem``/``.key`` (client authentication only)."""
    _check_name(name)
    return _issue(
        directory,
        f"client-{name}",
        name,
        CLIENT_ROLE,
        [client_dns_name(name)],
        [],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        days,
    )
