"""receive_boxes: the hand-split box loop of the node's client port and the client's connections."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from leeky_twisted.protocol.ampframes import receive_boxes


class _Receiver:
    """Where AMP's own parser hands the boxes it finished."""

    def __init__(self) -> None:
        self.boxes: list[dict[bytes, bytes]] = []

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.boxes.append(dict(box))

    def startReceivingBoxes(self, sender: object) -> None:
        pass

    def stopReceivingBoxes(self, reason: object) -> None:
        pass


class Recorder(amp.BinaryBoxProtocol):
    """A box protocol that records the boxes it gets and what reaches AMP's parser."""

    def __init__(self) -> None:
        receiver = _Receiver()
        super().__init__(receiver)
        self.boxes = receiver.boxes
        self.parsed: list[bytes] = []
        self.on_box = lambda box: None

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.boxes.append(dict(box))
        self.on_box(box)

    def parse(self, data: bytes) -> None:
        self.parsed.append(data)
        self.dataReceived(data)


def connected() -> Recorder:
    proto = Recorder()
    proto.makeConnection(StringTransport())
    return proto


def wire(*boxes: dict[bytes, bytes]) -> bytes:
    return b"".join(amp.AmpBox(b).serialize() for b in boxes)


def test_whole_boxes_are_dispatched_and_the_rest_parsed():
    """Every whole box goes to ampBoxReceived; a partial box goes to AMP's parser."""
    proto = connected()
    second = wire({b"b": b"2"})
    receive_boxes(proto, wire({b"a": b"1"}, {b"k": b"v" * 300}) + second[:3], proto.parse)
    assert proto.boxes == [{b"a": b"1"}, {b"k": b"v" * 300}]
    assert proto.parsed == [second[:3]]
    receive_boxes(proto, second[3:], proto.parse)  # AMP's parser holds part: all to it
    assert proto.parsed == [second[:3], second[3:]]
    assert proto.boxes[-1] == {b"b": b"2"}


def test_loop_stops_when_the_connection_is_gone():
    """Once a box closed the connection, nothing after it is read."""
    proto = connected()

    def close(box: amp.AmpBox) -> None:
        proto.transport = None

    proto.on_box = close
    receive_boxes(proto, wire({b"a": b"1"}, {b"b": b"2"}), proto.parse)
    assert proto.boxes == [{b"a": b"1"}] and proto.parsed == []


def test_loop_hands_the_rest_to_the_parser_when_paused():
    """A box that pauses the protocol leaves the boxes after it to AMP's parser."""
    proto = connected()

    def pause(box: amp.AmpBox) -> None:
        proto.paused = True

    proto.on_box = pause
    rest = wire({b"b": b"2"})
    receive_boxes(proto, wire({b"a": b"1"}) + rest, proto.parse)
    assert proto.boxes[0] == {b"a": b"1"} and proto.parsed == [rest]
