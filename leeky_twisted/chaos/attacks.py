"""What the hostile nemeses send: forged gossip, huge-term peer boxes, floods, slow clients.

Two halves. The **encoders** build an attacker's bytes by hand, never through
the node's own encoders' checks where those would refuse them (a RequestVote
with term 2**64-1 is packed with ``struct``); they do no I/O. The **attacks**
send them with plain blocking sockets and run until SIGTERM, inside the rig's
attacker namespace (:meth:`~leeky_twisted.chaos.netns.NetnsNetwork.attacker`),
started as ``python -m leeky_twisted.chaos.attacks KIND JSON``; on SIGTERM
each prints one JSON line saying what it did and what the node answered.

=================  ==========================================================
``gossip``         forged JOIN / SYNC datagrams (a fake node joining; real
                   members LEFT, SUSPECT, DEAD at high incarnations), sent
                   unsigned or signed with a wrong key (and, given the key,
                   the claims about real members signed with it)
``peer``           a Hello on a peer port (with no proof, a forged proof, or
                   a real one for a key holder), then RequestVote, Heartbeat
                   and AppendEntries with terms 2**64-1 and 2**63
``flood``          many connections to some ports, each sending one byte
                   (past the first-bytes timeout), held open
``slow``           oversized AMP and HTTP requests dripped chunk by chunk,
                   half-sent headers, and pipelined reads answered into a
                   reader that takes a kilobyte at a time
=================  ==========================================================
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from leeky_twisted.core.messages import MAX_TERM, NodeId
from leeky_twisted.membership import codec as gossip_codec
from leeky_twisted.membership.codec import MemberState, Packet, PacketKind, Record
from leeky_twisted.transport.codec import TAGS
from leeky_twisted.transport.hello_auth import PROOF_BYTES, HelloAuthenticator

__all__ = [
    "HUGE_TERMS",
    "forged_gossip",
    "hello_box",
    "huge_term_boxes",
    "main",
    "oversized_amp_put",
    "oversized_http_post",
]

#: The terms a hostile peer sends: the largest u64, and the first past MAX_TERM.
HUGE_TERMS = (2**64 - 1, MAX_TERM + 1)
#: Incarnations of forged gossip records: plausible next ones, and the largest.
FORGED_INCARNATIONS = (1, 7, 1000, gossip_codec.MAX_INCARNATION)

# ------------------------------------------------------------------ encoders


def forged_gossip(
    cluster_id: str,
    members: dict[str, tuple[str, int]],
    fake: tuple[str, tuple[str, int]],
    key: bytes | None = None,
) -> list[bytes]:
    """Return forged datagrams about ``members`` (id -> gossip address) and a ``fake`` node.

    A JOIN and a SYNC announcing the fake node alive; for each real member,
    SYNCs claiming it LEFT (sent as that member itself, which is what a LEFT
    needs to count), SUSPECT and DEAD, at each of FORGED_INCARNATIONS.
    Unsigned when ``key`` is None, else signed with ``key`` (a wrong one, for
    an outsider).
    """
    fake_id, fake_address = NodeId(fake[0]), fake[1]
    alive = Record(fake_id, 0, MemberState.ALIVE, fake_address)
    out = [
        gossip_codec.encode(Packet(PacketKind.JOIN, fake_id, records=(alive,)), cluster_id, key),
        gossip_codec.encode(
            Packet(PacketKind.SYNC, fake_id, reply_wanted=True, records=(alive,)), cluster_id, key
        ),
    ]
    for member, address in sorted(members.items()):
        nid = NodeId(member)
        for incarnation in FORGED_INCARNATIONS:
            left = Record(nid, incarnation, MemberState.LEFT, address)
            suspect = Record(nid, incarnation, MemberState.SUSPECT, address, suspecter=fake_id)
            dead = Record(nid, incarnation, MemberState.DEAD, address)
            out.append(
                gossip_codec.encode(Packet(PacketKind.SYNC, nid, records=(left,)), cluster_id, key)
            )
            out.append(
                gossip_codec.encode(
                    Packet(PacketKind.SYNC, fake_id, records=(suspect, dead)), cluster_id, key
                )
            )
    return out


def _box(values: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Return an AMP box with ``values`` in this order (keys and values as given)."""
    out = []
    for key, value in values:
        out.append(struct.pack("!H", len(key)) + key + struct.pack("!H", len(value)) + value)
    return b"".join(out) + b"\x00\x00"


def hello_box(cluster_id: str, node_id: str, proof: bytes | None, ask: bytes = b"1") -> bytes:
    """Return a peer Hello box claiming ``node_id`` of ``cluster_id``."""
    values = [
        (b"_command", b"Hello"),
        (b"_ask", ask),
        (b"cluster_id", cluster_id.encode()),
        (b"node_id", node_id.encode()),
    ]
    if proof is not None:
        values.append((b"proof", proof))
    return _box(values)


def forged_proof() -> bytes:
    """Return a proof of the right length made without the key."""
    return secrets.token_bytes(PROOF_BYTES)


def real_proof(key: bytes, cluster_id: str, dialler: str, acceptor: str) -> bytes:
    """Return a valid Hello proof (what any holder of the cluster key can make)."""

    class _Clock:
        def seconds(self) -> float:
            return time.time()

    return HelloAuthenticator(key, _Clock()).proof(cluster_id, dialler, acceptor)  # type: ignore[arg-type]


def _prefix(kind: str, sender: str, recipient: str) -> bytes:
    from leeky_twisted.core import messages

    s, r = sender.encode(), recipient.encode()
    return struct.pack("!BHH", TAGS[getattr(messages, kind)], len(s), len(r)) + s + r


def huge_term_boxes(sender: str, recipient: str) -> list[bytes]:
    """Return RequestVote, Heartbeat and AppendEntries boxes at each of HUGE_TERMS.

    Packed by hand, as the node's encoder refuses such terms.
    """
    out = []
    for term in HUGE_TERMS:
        vote = _prefix("RequestVote", sender, recipient) + struct.pack("!QQQB", term, 0, 0, 0)
        beat = _prefix("Heartbeat", sender, recipient) + struct.pack("!QQQ", term, 0, 0)
        append = _prefix("AppendEntries", sender, recipient) + struct.pack(
            "!QQQQQI", term, 0, 0, 0, 0, 0
        )
        out.append(_box([(b"_command", b"RequestVoteCmd"), (b"m", vote)]))
        out.append(_box([(b"_command", b"HeartbeatCmd"), (b"m", beat)]))
        out.append(_box([(b"_command", b"AppendEntriesCmd"), (b"m", append)]))
    return out


def oversized_amp_put(total: int, key: str = "attacker") -> bytes:
    """Return the bytes of one AMP Put whose value spans ``total`` bytes (no box end).

    The value is split the way the client API splits long text (``value``,
    ``value.1``, ...), so every piece is a valid AMP value; the box is never
    finished, as a client that keeps sending would.
    """
    piece = 0xFFFF
    values = [(b"_command", b"Put"), (b"_ask", b"1"), (b"key", key.encode())]
    n = 0
    sent = 0
    while sent < total:
        name = b"value" if n == 0 else b"value.%d" % n
        values.append((name, b"v" * piece))
        sent += piece
        n += 1
    return _box(values)[:-2]


def oversized_http_post(length: int, host: str) -> bytes:
    """Return the head of a JSON-RPC POST announcing a ``length``-byte body."""
    return (
        f"POST /jsonrpc HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def jsonrpc_post(host: str, method: str, *params: Any, request_id: int = 1) -> bytes:
    """Return one keep-alive JSON-RPC POST."""
    body = json.dumps(
        {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}
    )
    head = (
        f"POST /jsonrpc HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    return head.encode() + body.encode()


def answered(data: bytes) -> str:
    """Return what a peer answered a Hello with: ``refused``, ``accepted`` or ``nothing``."""
    if b"HELLO_REFUSED" in data or b"_error" in data:
        return "refused"
    if b"_answer" in data:
        return "accepted"
    return "nothing"


# ------------------------------------------------------------------- attacks


def _connect(host: str, port: int, timeout: float = 2.0) -> socket.socket | None:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None


def _read_for(sock: socket.socket, seconds: float) -> bytes:
    """Read what arrives within ``seconds`` (or until the other end closes)."""
    sock.settimeout(0.1)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not data:
            break
        got += data
    return got


def attack_gossip(args: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Send the forged datagrams to every target, over and over, until ``stop``."""
    members = {k: (v[0], int(v[1])) for k, v in args["members"].items()}
    fake = (args["fake_id"], (args["fake_host"], int(args["fake_port"])))
    wrong_key = secrets.token_hex(32).encode()
    packets = forged_gossip(args["cluster_id"], members, fake, None)
    packets += forged_gossip(args["cluster_id"], members, fake, wrong_key)
    if args.get("key"):  # a key holder: the claims about the victims, validly signed
        victims = {k: v for k, v in members.items() if k in args.get("victims", members)}
        packets += forged_gossip(args["cluster_id"], victims, fake, args["key"].encode())[2:]
    targets = [(h, int(p)) for h, p in args["targets"]]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.get("bind", "0.0.0.0"), int(args["fake_port"])))
    sent = 0
    while not stop.is_set():
        for data in packets:
            for target in targets:
                try:
                    sock.sendto(data, target)
                    sent += 1
                except OSError:
                    pass
        stop.wait(float(args.get("interval", 0.1)))
    sock.close()
    return {"datagrams": sent, "kinds": len(packets)}


def attack_peer(args: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Dial each target's peer port as an outsider and (with a key) as a key holder.

    Each round: one connection per Hello kind, the Hello and then every
    huge-term box written at once, the answer read for a moment.
    """
    key = args["key"].encode() if args.get("key") else None
    outcomes: dict[str, dict[str, int]] = {}
    rounds = 0
    while not stop.is_set():
        for target in args["targets"]:
            host, port, acceptor, dialler = (
                target["host"],
                target["port"],
                target["id"],
                target["as"],
            )
            kinds: list[tuple[str, bytes | None]] = [
                ("no proof", None),
                ("forged proof", forged_proof()),
            ]
            if key is not None:
                kinds.append(("key holder", real_proof(key, args["cluster_id"], dialler, acceptor)))
            for kind, proof in kinds:
                sock = _connect(host, int(port))
                if sock is None:
                    outcomes.setdefault(kind, {}).setdefault("no connection", 0)
                    outcomes[kind]["no connection"] += 1
                    continue
                try:
                    data = hello_box(args["cluster_id"], dialler, proof)
                    data += b"".join(huge_term_boxes(dialler, acceptor))
                    sock.sendall(data)
                    answer = answered(_read_for(sock, 0.3))
                except OSError:
                    answer = "reset"
                finally:
                    sock.close()
                counts = outcomes.setdefault(kind, {})
                counts[answer] = counts.get(answer, 0) + 1
        rounds += 1
        stop.wait(float(args.get("interval", 0.2)))
    return {"rounds": rounds, "hello": outcomes}


def _open_many(
    host: str, port: int, count: int, stop: threading.Event, held: list[socket.socket]
) -> None:
    """Open up to ``count`` connections, send one byte on each, append them to ``held``."""
    for _ in range(count):
        if stop.is_set():
            return
        sock = _connect(host, port)
        if sock is None:
            continue
        try:
            sock.sendall(b"\x00")
        except OSError:
            sock.close()
            continue
        held.append(sock)


def _still_open(sock: socket.socket) -> bool:
    """Return whether the other end has not closed ``sock`` (without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack_flood(args: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Open ``count`` connections to each target (all targets at once), send one byte
    on each, and hold them until ``stop``."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held: dict[str, list[socket.socket]] = {}
    threads = []
    for host, port in args["targets"]:
        socks = held.setdefault(f"{host}:{port}", [])
        t = threading.Thread(
            target=_open_many, args=(host, int(port), int(args["count"]), stop, socks)
        )
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps({"ready": {k: len(v) for k, v in held.items()}}), flush=True)
    stop.wait()
    still_open = {name: sum(_still_open(s) for s in socks) for name, socks in held.items()}
    for socks in held.values():
        for sock in socks:
            sock.close()
    return {"opened": {k: len(v) for k, v in held.items()}, "still_open": still_open}


def _drip_amp(host: str, port: int, bound: int, stop: threading.Event, out: dict[str, Any]) -> None:
    """Drip oversized Puts 64 KiB at a time; record how much each took before it was closed."""
    data = oversized_amp_put(4 * bound)
    closed_after: list[int] = out.setdefault("amp_closed_after", [])
    while not stop.is_set():
        sock = _connect(host, port)
        if sock is None:
            stop.wait(0.2)
            continue
        sent = 0
        try:
            while sent < len(data) and not stop.is_set():
                sock.sendall(data[sent : sent + 65536])
                sent += min(65536, len(data) - sent)
                stop.wait(0.01)
            out["amp_never_closed"] = out.get("amp_never_closed", 0) + int(sent >= len(data))
            if sent >= len(data):
                stop.wait(1.0)
        except OSError:
            closed_after.append(sent)
        finally:
            sock.close()


def _drip_headers(host: str, port: int, stop: threading.Event, out: dict[str, Any]) -> None:
    """Hold connections that send an HTTP head one byte every 200 ms (never finished)."""
    socks = [s for s in (_connect(host, port) for _ in range(16)) if s is not None]
    head = b"POST /jsonrpc HTTP/1.1\r\nX-Slow: " + b"a" * 100000
    pos = 0
    while not stop.is_set() and socks:
        for sock in list(socks):
            try:
                sock.sendall(head[pos : pos + 1])
            except OSError:
                socks.remove(sock)
                out["headers_closed"] = out.get("headers_closed", 0) + 1
        pos += 1
        stop.wait(0.2)
    out["headers_held"] = len(socks)
    for sock in socks:
        sock.close()


def _oversized_http(host: str, port: int, stop: threading.Event, out: dict[str, Any]) -> None:
    """Announce a 100 MiB body; the answer must come before any of it is sent (413)."""
    codes: dict[str, int] = out.setdefault("http_oversized_answers", {})
    while not stop.is_set():
        sock = _connect(host, port)
        if sock is None:
            stop.wait(0.2)
            continue
        try:
            sock.sendall(oversized_http_post(100 << 20, host))
            got = _read_for(sock, 3.0)
        except OSError:
            got = b""
        finally:
            sock.close()
        if not got and stop.is_set():
            break  # cut short by the end of the attack, not by the node
        code = got[9:12].decode(errors="replace") if got.startswith(b"HTTP/1.1 ") else "none"
        codes[code] = codes.get(code, 0) + 1
        stop.wait(0.2)


def _slow_reader(host: str, port: int, stop: threading.Event, out: dict[str, Any]) -> None:
    """Write a large value, pipeline reads of it, then take the answers 1 KiB per 50 ms."""
    key = f"attacker-slow-{secrets.token_hex(4)}"
    sock = _connect(host, port, timeout=5.0)
    if sock is None:
        out["slow_reader"] = "no connection"
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(jsonrpc_post(host, "put", key, "v" * (256 << 10)))
        _read_for(sock, 1.0)
        reads = b"".join(jsonrpc_post(host, "get", key, request_id=i) for i in range(64))
        sock.sendall(reads)
        taken = 0
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                data = sock.recv(1024)
            except TimeoutError:
                continue
            if not data:
                break
            taken += len(data)
            stop.wait(0.05)
        out["slow_reader_took"] = taken
    except OSError as e:
        out["slow_reader"] = f"error: {e}"
    finally:
        sock.close()


def attack_slow(args: dict[str, Any], stop: threading.Event) -> dict[str, Any]:
    """Run every slow client at once against one node until ``stop``."""
    host = args["host"]
    out: dict[str, Any] = {}
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
        (_drip_amp, (host, int(args["client_port"]), int(args["amp_bound"]), stop, out)),
        (_drip_headers, (host, int(args["http_port"]), stop, out)),
        (_oversized_http, (host, int(args["http_port"]), stop, out)),
        (_slow_reader, (host, int(args["http_port"]), stop, out)),
    ]
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in jobs]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(timeout=5)
    return out


ATTACKS: dict[str, Callable[[dict[str, Any], threading.Event], dict[str, Any]]] = {
    "gossip": attack_gossip,
    "peer": attack_peer,
    "flood": attack_flood,
    "slow": attack_slow,
}


#: With this last argument, an attack also stops when its standard input ends: a
#: stop request that cannot arrive before the process is ready for it (a SIGTERM
#: sent while Python still imports would end it with no report).
STOP_ON_EOF = "--stop-on-eof"


#: With STOP_ON_EOF, an attack runs at least this long once started, however early the
#: stop comes: a fault window shorter than Python's start-up must still see it act.
MIN_ATTACK_SECONDS = 2.0


def _stop_at_eof(stop: threading.Event, started: float) -> None:
    """Set ``stop`` once standard input is closed and the attack ran its minimum."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        # a separate process with no reactor: sleeping blocks nothing
        time.sleep(max(0.0, started + MIN_ATTACK_SECONDS - time.monotonic()))  # noqa: TID251
        stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m leeky_twisted.chaos.attacks KIND JSON [--stop-on-eof]``: run until
    SIGTERM (or the end of standard input, with :data:`STOP_ON_EOF`), print a result."""
    args = list(sys.argv[1:] if argv is None else argv)
    stop_on_eof = args[-1:] == [STOP_ON_EOF]
    if stop_on_eof:
        args.pop()
    if len(args) != 2 or args[0] not in ATTACKS:
        kinds = ",".join(ATTACKS)
        print(f"usage: attacks {{{kinds}}} JSON-ARGUMENTS [{STOP_ON_EOF}]", file=sys.stderr)
        return 2
    try:
        params = json.loads(args[1])
    except ValueError as e:
        print(f"bad arguments: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    if stop_on_eof:
        started = time.monotonic()
        threading.Thread(target=_stop_at_eof, args=(stop, started), daemon=True).start()
    result = ATTACKS[args[0]](params, stop)
    print(json.dumps({"result": result}), flush=True)
    os._exit(0)  # threads still blocked in a socket call must not keep the process


if __name__ == "__main__":
    sys.exit(main())
