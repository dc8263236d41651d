"""The removal notice on the wire: its encoding, and who may deliver one."""

from __future__ import annotations

import pytest
from test_peer_protocol import CLUSTER, N1, N2, N3, Server, dial, result_of

from leeky_twisted.core.messages import MAX_INDEX, NodeId
from leeky_twisted.transport.codec import OutOfBounds, decode, encode
from leeky_twisted.transport.notices import RemovedNotice
from leeky_twisted.transport.peer_protocol import PeerInbox, frame_message


def test_a_notice_round_trips():
    """decode(encode(n)) == n, for the smallest and largest index."""
    for index in (1, MAX_INDEX):
        notice = RemovedNotice(NodeId("a"), NodeId("nœud-b"), index)
        assert decode(encode(notice)) == notice


@pytest.mark.parametrize("index", [0, MAX_INDEX + 1])
def test_a_notice_with_an_impossible_index_is_refused(index):
    """No configuration change sits at index 0 or beyond MAX_INDEX."""
    data = encode(RemovedNotice(N1, N2, 1))
    data = data[:-8] + index.to_bytes(8, "big")
    with pytest.raises(OutOfBounds):
        decode(data)


def test_a_notice_is_delivered_when_the_hello_proved_the_sender(capture):
    """With TLS (or a cluster key) the Hello proves who speaks: the notice arrives."""
    server = Server(capture)
    server.inbox = PeerInbox(
        CLUSTER,
        N2,
        lambda node: node in {N1, N3},
        server.store,
        log=capture.log,
        authenticate=lambda transport: N1,  # the certificate names n1
    )
    server.inbox.receiver = server.deliver
    server.factory.inbox = server.inbox
    client, _, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    client.write_frames([frame_message(RemovedNotice(N1, N2, 7))])
    pump.flush()
    assert server.received == [RemovedNotice(N1, N2, 7)]


def test_a_notice_is_ignored_when_nothing_proves_the_sender(capture):
    """Without a key or TLS anyone may say Hello as n1: the notice is dropped and logged once."""
    server = Server(capture)
    client, server_protocol, pump, hello = dial(server, capture)
    assert result_of(hello) is True
    client.write_frames([frame_message(RemovedNotice(N1, N2, 7))] * 2)
    pump.flush()
    assert server.received == []
    assert server.inbox.unproven_notices == 2
    assert sum("ignored a notice" in line for line in capture.lines()) == 1
    assert server_protocol.peer_id == N1  # the connection stays
