"""The key proof in the peer Hello: only holders of the cluster key get past it."""

from __future__ import annotations

import pytest
from test_peer_protocol import CLUSTER, N1, N2, Server, dial, result_of
from twisted.internet.task import Clock

from leeky_twisted.core.messages import Heartbeat
from leeky_twisted.transport.hello_auth import PROOF_BYTES, HelloAuthenticator
from leeky_twisted.transport.peer_protocol import frame_message

KEY = b"the cluster key"


def auth(key: bytes = KEY, clock: Clock | None = None, **kw: object) -> HelloAuthenticator:
    """Return an authenticator on a Clock (at 1000 s unless given)."""
    if clock is None:
        clock = Clock()
        clock.advance(1000)
    return HelloAuthenticator(key, clock, **kw)  # type: ignore[arg-type]


def test_a_fresh_proof_is_accepted_once() -> None:
    """A proof made with the key, for this acceptor, passes; the same proof again is a replay."""
    a = auth()
    proof = a.proof(CLUSTER, "n1", "n2")
    assert len(proof) == PROOF_BYTES
    assert a.refusal(proof, CLUSTER, "n1", "n2") is None
    assert "replay" in (a.refusal(proof, CLUSTER, "n1", "n2") or "")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda p: None, "no proof"),
        (lambda p: p[:-1], "wrong length"),
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), "not made with our cluster key"),
    ],
)
def test_a_missing_short_or_altered_proof_is_refused(change, why) -> None:
    """No proof, a truncated one and a flipped bit are all refused, each with its reason."""
    a = auth()
    assert why in (a.refusal(change(a.proof(CLUSTER, "n1", "n2")), CLUSTER, "n1", "n2") or "")


def test_a_proof_binds_the_key_the_ids_and_the_cluster() -> None:
    """Another key, another claimed dialler, another acceptor or another cluster: refused."""
    a = auth()
    other_key = auth(b"a guessed key").proof(CLUSTER, "n1", "n2")
    assert a.refusal(other_key, CLUSTER, "n1", "n2") is not None
    proof = a.proof(CLUSTER, "n1", "n2")
    assert a.refusal(proof, CLUSTER, "n3", "n2") is not None
    assert a.refusal(proof, CLUSTER, "n1", "n3") is not None
    assert a.refusal(proof, "other", "n1", "n2") is not None


def test_a_proof_outside_the_clock_window_is_refused() -> None:
    """Proofs more than ``window`` seconds old (or ahead) are refused: clocks must agree."""
    clock = Clock()
    clock.advance(1000)
    a = auth(clock=clock, window=300.0)
    old = a.proof(CLUSTER, "n1", "n2")
    clock.advance(301)
    assert "off our clock" in (a.refusal(old, CLUSTER, "n1", "n2") or "")
    ahead_clock = Clock()
    ahead_clock.advance(1000 + 301 + 301)
    future = auth(clock=ahead_clock).proof(CLUSTER, "n1", "n2")
    assert "off our clock" in (a.refusal(future, CLUSTER, "n1", "n2") or "")


def test_remembered_nonces_are_bounded_and_forgotten() -> None:
    """At most ``max_remembered`` proofs per window; after two windows they are forgotten."""
    clock = Clock()
    clock.advance(1000)
    a = auth(clock=clock, window=10.0, max_remembered=2)
    for _ in range(2):
        assert a.refusal(a.proof(CLUSTER, "n1", "n2"), CLUSTER, "n1", "n2") is None
    assert "too many" in (a.refusal(a.proof(CLUSTER, "n1", "n2"), CLUSTER, "n1", "n2") or "")
    clock.advance(21)
    assert a.refusal(a.proof(CLUSTER, "n1", "n2"), CLUSTER, "n1", "n2") is None


def test_an_empty_key_is_refused() -> None:
    """An empty key would authenticate nothing."""
    with pytest.raises(ValueError):
        HelloAuthenticator(b"", Clock())


def keyed_server(capture) -> Server:
    """Return the test server (node n2) with the cluster key required in Hellos."""
    server = Server(capture)
    server.inbox.hello_auth = auth()
    return server


def test_a_hello_without_the_key_is_refused_and_its_messages_never_delivered(capture) -> None:
    """Issue 19 finding 4: knowing the cluster id and a node id is no longer enough."""
    server = keyed_server(capture)
    client, _, pump, hello = dial(server, capture)
    client.write_frames([frame_message(Heartbeat(N1, N2, 7, 0))])
    pump.flush()
    assert result_of(hello) is False
    assert server.received == []
    assert any("no proof of the cluster key" in e for e in capture.errors())


def test_a_hello_with_a_wrong_key_is_refused(capture) -> None:
    """A proof made with another key is refused."""
    server = keyed_server(capture)
    proof = auth(b"a guessed key").proof(CLUSTER, N1, N2)
    _, _, _, hello = dial(server, capture, proof=proof)
    assert result_of(hello) is False


def test_a_hello_with_the_key_is_accepted_and_its_messages_delivered(capture) -> None:
    """A key holder's Hello passes, and the messages written right behind it arrive."""
    server = keyed_server(capture)
    message = Heartbeat(N1, N2, 7, 0)
    client, _, pump, hello = dial(server, capture, proof=auth().proof(CLUSTER, N1, N2))
    client.write_frames([frame_message(message)])
    pump.flush()
    assert result_of(hello) is True
    assert server.received == [message]
