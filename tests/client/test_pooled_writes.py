"""A pooled client connection writes each request at once (no wait for the next turn)."""

from __future__ import annotations

import io

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol import connection


def test_a_request_box_is_written_through_write_now(monkeypatch):
    """callRemote's box goes to write_now (a direct send when nothing is queued), whole."""
    written = []
    real = connection.write_now
    monkeypatch.setattr(
        connection, "write_now", lambda t, data: written.append(data) or real(t, data)
    )
    proto = connection._PooledAMP(lambda p: None, Clock())
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.callRemote(cc.Get, key="k")
    assert len(written) == 1 and transport.value() == written[0]
    box = amp.parse(io.BytesIO(written[0]))[0]
    assert box[b"_command"] == b"Get" and box[b"key"] == b"k"
