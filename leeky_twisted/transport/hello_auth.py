"""Prove, in the peer Hello, that the dialling node holds the cluster key.

Without TLS, anyone who can reach a peer port and knows a node id and the
cluster id could say Hello as that node and then send Raft messages (issue
19, finding 4). With a cluster key, the Hello carries a proof::

    proof = nonce (16 bytes) | time (u64, milliseconds) | HMAC-SHA256(key, label
            | cluster id | dialler id | acceptor id | nonce | time)

The accepting node refuses a Hello whose proof is missing, wrong, for another
acceptor, older or newer than ``window`` seconds by its own clock, or seen
before (nonces are remembered for the window). It is one message, so the
dialler still writes its Raft messages right behind the Hello.

What it assumes: the nodes' clocks agree within ``window`` (5 minutes by
default, as Kerberos). What it does not do: authenticate the boxes after the
Hello (an attacker on the network path can still take over an established
TCP connection) or tell key holders apart (any holder may say Hello as any
node id). Both need TLS (``--tls-dir``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

NONCE_BYTES = 16
PROOF_BYTES = NONCE_BYTES + 8 + 32
_LABEL = b"leeky-raft peer hello v1"
_TIME = struct.Struct("!Q")


class HelloAuthenticator:
    """Make and check Hello proofs with one cluster key."""

    def __init__(
        self,
        key: bytes,
        clock: IReactorTime,
        window: float = 300.0,
        max_remembered: int = 65536,
    ) -> None:
        if not key:
            raise ValueError("an empty key would authenticate nothing")
        if window <= 0 or max_remembered < 1:
            raise ValueError("need window > 0 and max_remembered >= 1")
        self._key = key
        self.clock = clock
        self.window = window
        self.max_remembered = max_remembered
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it expires

    def _mac(self, cluster_id: str, dialler: str, acceptor: str, nonce: bytes, ms: bytes) -> bytes:
        fields = [_LABEL, *(s.encode("utf-8") for s in (cluster_id, dialler, acceptor))]
        message = b"\0".join(fields) + b"\0" + nonce + ms
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def proof(self, cluster_id: str, dialler: str, acceptor: str) -> bytes:
        """Return a fresh proof that ``dialler`` holds the key, for ``acceptor`` only."""
        nonce = os.urandom(NONCE_BYTES)
        ms = _TIME.pack(max(0, int(self.clock.seconds() * 1000)))
        return nonce + ms + self._mac(cluster_id, dialler, acceptor, nonce, ms)

    def refusal(
        self, proof: bytes | None, cluster_id: str, dialler: str, acceptor: str
    ) -> str | None:
        """Return why ``proof`` does not admit ``dialler``'s Hello to ``acceptor``, or None.

        A proof admitted once is remembered, and refused if it comes again.
        """
        if proof is None:
            return "Hello carries no proof of the cluster key"
        if len(proof) != PROOF_BYTES:
            return "Hello proof has the wrong length"
        nonce, ms = proof[:NONCE_BYTES], proof[NONCE_BYTES : NONCE_BYTES + 8]
        mac = proof[NONCE_BYTES + 8 :]
        if not hmac.compare_digest(mac, self._mac(cluster_id, dialler, acceptor, nonce, ms)):
            return "Hello proof is not made with our cluster key"
        now = self.clock.seconds()
        sent = _TIME.unpack(ms)[0] / 1000.0
        if abs(now - sent) > self.window:
            return f"Hello proof is {now - sent:+.0f} s off our clock (limit {self.window:g} s)"
        self._forget(now)
        if nonce in self._seen:
            return "Hello proof was used before (a replay)"
        if len(self._seen) >= self.max_remembered:
            return "too many Hellos within the window; try again later"
        self._seen[nonce] = now + 2 * self.window
        return None

    def _forget(self, now: float) -> None:
        while self._seen:
            nonce, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[nonce]
