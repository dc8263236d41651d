"""The lean HTTP/1.1 server in front of the JSON-RPC API, over in-memory transports."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from leeky_twisted.api.amp_api import make_frontend
from leeky_twisted.api.http_server import JSONRPCHTTPFactory, _encode
from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode


def make(max_body: int = 4096):
    net = FakeNetwork()
    node = FakeRaftNode("1", "10.0.0.1:7001")
    frontend = make_frontend(node, net.clock, forward=False)
    rpc = KeyValueJSONRPC(frontend, max_body)
    proto = JSONRPCHTTPFactory(rpc, lambda: {"id": "1"}).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)
        + body
    )


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        out.append((code, rest[:length]))
        raw = rest[length:]
    return out


def call(method: str, *params: object, rid: int = 1) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "method": method, "params": list(params), "id": rid}
    ).encode()


def test_put_then_get_over_one_keep_alive_connection():
    """Two requests on one connection get two answers, and the connection stays open."""
    proto, t = make()
    proto.dataReceived(post(call("put", "k", "v")) + post(call("get", "k", rid=2)))
    answers = responses(t.value())
    assert [code for code, _ in answers] == [200, 200]
    assert json.loads(answers[0][1])["result"] is True
    assert json.loads(answers[1][1]) == {"jsonrpc": "2.0", "result": "v", "id": 2}
    assert not t.disconnecting


def test_request_split_across_many_packets_is_reassembled():
    """A request arriving a byte at a time is parsed once complete."""
    proto, t = make()
    for byte in post(call("put", "a", "b")):
        proto.dataReceived(bytes([byte]))
    assert json.loads(responses(t.value())[0][1])["result"] is True


def test_connection_close_is_honoured():
    """`Connection: close` gets an answer and then the connection is closed."""
    proto, t = make()
    proto.dataReceived(post(call("status"), b"Connection: close\r\n"))
    assert responses(t.value())[0][0] == 200
    assert t.disconnecting


def test_expect_100_continue_is_answered_before_the_body():
    """curl's Expect: 100-continue gets an interim answer so it sends the body at once."""
    proto, t = make()
    body = call("put", "k", "v")
    head = b"POST /jsonrpc HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(
        body
    )
    proto.dataReceived(head)
    assert t.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    t.clear()
    proto.dataReceived(body)
    assert json.loads(responses(t.value())[0][1])["result"] is True


def test_oversized_body_is_refused_with_413_before_it_is_read_then_closed():
    """A Content-Length over the limit is answered 413 at once; the body is dropped, then close."""
    proto, t = make(max_body=100)
    body = call("put", "k", "x" * 500)
    head = post(body)[: -len(body)]
    proto.dataReceived(head)
    ((code, answer),) = responses(t.value())
    assert code == 413 and json.loads(answer)["error"]["code"] == -32600
    assert not t.disconnecting  # still reading: a client that sends the body reads the answer
    proto.dataReceived(body[:200])
    proto.dataReceived(body[200:] + post(call("get", "k", rid=2)))
    assert proto._buf == b""  # nothing of the body was kept
    assert len(responses(t.value())) == 1  # the pipelined request is not served
    assert t.disconnecting


def test_a_huge_content_length_is_refused_and_closed_without_reading():
    """A body past the drain limit is not read at all: 413 and the connection closes."""
    proto, t = make(max_body=100)
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nContent-Length: 100000000000\r\n\r\nxxxx")
    assert responses(t.value())[0][0] == 413
    assert t.disconnecting
    assert proto._buf == b""


def test_two_content_length_headers_get_400():
    """Two Content-Length headers (a request-smuggling shape) are refused, not guessed."""
    proto, t = make()
    body = call("put", "k", "v")
    proto.dataReceived(
        b"POST /jsonrpc HTTP/1.1\r\nContent-Length: %d\r\ncontent-length: 2\r\n\r\n" % len(body)
        + body
    )
    assert [code for code, _ in responses(t.value())] == [400]
    assert t.disconnecting


def test_content_length_with_transfer_encoding_gets_400():
    """Content-Length and Transfer-Encoding together are refused with 400."""
    proto, t = make()
    proto.dataReceived(
        b"POST /jsonrpc HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert [code for code, _ in responses(t.value())] == [400]
    assert t.disconnecting


def test_a_post_without_content_length_gets_411_and_its_body_is_not_buffered():
    """A POST without Content-Length is refused at once; what follows is not read as requests."""
    proto, t = make()
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\n\r\n" + b"y" * 100_000)
    assert [code for code, _ in responses(t.value())] == [411]
    assert t.disconnecting
    proto.dataReceived(b"y" * 100_000)
    assert proto._buf == b""


def test_malformed_request_line_gets_400_and_close():
    """Garbage instead of HTTP gets 400 and the connection is closed."""
    proto, t = make()
    proto.dataReceived(b"\x00\x01garbage\r\n\r\n")
    assert responses(t.value())[0][0] == 400
    assert t.disconnecting


def test_chunked_body_is_refused_with_501():
    """Chunked uploads are not supported and say so."""
    proto, t = make()
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert responses(t.value())[0][0] == 501


def test_unknown_path_is_404_and_get_on_jsonrpc_is_405():
    """Only /jsonrpc (POST) and /status (GET) exist."""
    proto, t = make()
    proto.dataReceived(b"GET /nope HTTP/1.1\r\n\r\nGET /jsonrpc HTTP/1.1\r\n\r\n")
    assert [code for code, _ in responses(t.value())] == [404, 405]


def test_status_route_returns_json():
    """GET /status answers the node's status as JSON."""
    proto, t = make()
    proto.dataReceived(b"GET /status HTTP/1.1\r\n\r\n")
    assert json.loads(responses(t.value())[0][1]) == {"id": "1"}


def test_oversized_headers_get_431():
    """Headers past the limit are refused instead of buffered without end."""
    proto, t = make()
    proto.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nX: " + b"a" * 20000)
    assert responses(t.value())[0][0] == 431
    assert t.disconnecting


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.one_of(st.integers(), st.text(max_size=5), st.none()),
    result=st.one_of(
        st.booleans(), st.none(), st.text(), st.integers(), st.lists(st.text(max_size=3))
    ),
    error=st.booleans(),
)
def test_answers_are_encoded_as_json_dumps_would(request_id, result, error):
    """The shortcut for the usual answers gives json.dumps's bytes, for every answer shape."""
    if error:
        answer = {"jsonrpc": "2.0", "error": {"code": -32000, "message": result}, "id": request_id}
    else:
        answer = {"jsonrpc": "2.0", "result": result, "id": request_id}
    try:
        expected = json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped instead
        expected = json.dumps(answer, default=str).encode("ascii")
    assert _encode(answer) == expected
    assert json.loads(_encode(answer)) == json.loads(expected)


# ------------------------------------------------- hand-over to twisted.web


def make_with_site():
    from twisted.web.resource import Resource

    from leeky_twisted.api.web import make_node_site

    net = FakeNetwork()
    node = FakeRaftNode("1", "10.0.0.1:7001")
    frontend = make_frontend(node, net.clock, forward=False)
    rpc = KeyValueJSONRPC(frontend, 4096)
    site = make_node_site(rpc, lambda: {"id": "1"}, {b"/metrics": lambda: (b"text/plain", b"m 1")})

    class Page(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", b"text/html")
            return b"<p>page " + request.uri + b"</p>"

    site.root.putChild(b"page", Page())
    proto = JSONRPCHTTPFactory(rpc, lambda: {"id": "1"}, {}, site).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"


def body_of(raw: bytes) -> bytes:
    """The body of the one (fixed-length) answer in ``raw``."""
    return responses(raw)[0][1]


def test_a_path_the_lean_server_lacks_is_served_by_the_site():
    """GET /page goes to the twisted.web site, query string and all."""
    proto, t = make_with_site()
    proto.dataReceived(get(b"/page?x=1"))
    assert b"200 OK" in t.value().split(b"\r\n", 1)[0]
    assert body_of(t.value()) == b"<p>page /page?x=1</p>"
    assert proto.web_channel is not None


def test_after_the_hand_over_the_site_answers_the_api_on_the_same_connection():
    """A browser's connection that asked for a page still gets JSON-RPC, status and routes."""
    proto, t = make_with_site()
    proto.dataReceived(get(b"/page"))
    t.clear()
    proto.dataReceived(post(call("put", "k", "v")))
    assert json.loads(body_of(t.value()))["result"] is True
    t.clear()
    proto.dataReceived(get(b"/status"))
    assert json.loads(body_of(t.value())) == {"id": "1"}
    t.clear()
    proto.dataReceived(get(b"/metrics"))
    assert body_of(t.value()) == b"m 1"


def test_the_hand_over_waits_for_earlier_answers_and_keeps_bytes_split_anywhere():
    """Pipelined: a put, then a page request split mid-header; both answered in order."""
    proto, t = make_with_site()
    stream = post(call("put", "k", "v")) + get(b"/page")
    for cut in range(len(stream) + 1):
        proto, t = make_with_site()
        proto.dataReceived(stream[:cut])
        proto.dataReceived(stream[cut:])
        answers = responses(t.value())
        assert [code for code, _ in answers] == [200, 200], cut
        assert json.loads(answers[0][1])["result"] is True
        assert answers[1][1] == b"<p>page /page</p>"


def test_without_a_site_other_paths_are_404():
    """The lean server alone answers an unknown path 404 and keeps its own paths."""
    proto, t = make()
    proto.dataReceived(get(b"/page"))
    assert responses(t.value())[0][0] == 404
    assert proto.web_channel is None
