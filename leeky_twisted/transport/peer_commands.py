"""AMP commands spoken between Raft peers: the schema both ends share.

Behaviour lives in :mod:`leeky_twisted.transport.peer_protocol`. Each Raft
message kind has its own one-way command (``requiresAnswer = False``) whose
single argument ``m`` is the message in :mod:`~leeky_twisted.transport.codec`
form; a reply is just another message. Only the handshake and snapshot chunks
are answered: ``Hello`` so the dialling side learns who it reached, and
``SnapshotChunk`` to pace a snapshot stream one chunk at a time.

``InstallSnapshot`` has no command of its own: it rides on every
``SnapshotChunk`` and is delivered with the last one, after the data is stored.

The answers to appends and heartbeats take one optional argument beside
``m``: ``eager`` (the message's ``eager`` field, sent only when true). It is
not inside ``m``, whose format refuses unknown flag bits: a node that does not
know it ignores it, as AMP ignores every key a command does not declare, and
a node that does reads its absence as false.
"""

from __future__ import annotations

from twisted.protocols import amp

from leeky_twisted.transport.codec import LargeBytes


class HelloRefused(Exception):
    """The accepting peer refused the handshake (wrong cluster or unknown node)."""


class Hello(amp.Command):
    """Introduce the dialling node; must be the first command on a connection.

    Answered with the accepting node's own cluster id and node id, so the
    dialler can check that the address it used still belongs to that peer.
    With a cluster key, ``proof`` shows the dialler holds it
    (:mod:`~leeky_twisted.transport.hello_auth`). A node that wrote bootstrap
    entries states their digest and a description
    (:mod:`~leeky_twisted.transport.bootstrap_config`).
    """

    arguments = [
        (b"cluster_id", amp.Unicode()),
        (b"node_id", amp.Unicode()),
        (b"proof", amp.String(optional=True)),
        (b"bootstrap", amp.Unicode(optional=True)),
        (b"bootstrap_peers", amp.Unicode(optional=True)),
    ]
    response = [(b"cluster_id", amp.Unicode()), (b"node_id", amp.Unicode())]
    fatalErrors = {HelloRefused: b"HELLO_REFUSED"}


class RequestVoteCmd(amp.Command):
    """Carry an encoded ``RequestVote``."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class RequestVoteResponseCmd(amp.Command):
    """Carry an encoded ``RequestVoteResponse``."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class AppendEntriesCmd(amp.Command):
    """Carry an encoded ``AppendEntries`` (split over several AMP values when large)."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


#: The optional argument saying the answering follower wants commits at once.
EAGER = b"eager"


class AppendEntriesResponseCmd(amp.Command):
    """Carry an encoded ``AppendEntriesResponse``, and whether it is ``eager``."""

    arguments = [(b"m", LargeBytes()), (EAGER, amp.Boolean(optional=True))]
    requiresAnswer = False


class HeartbeatCmd(amp.Command):
    """Carry an encoded ``Heartbeat``."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class HeartbeatResponseCmd(amp.Command):
    """Carry an encoded ``HeartbeatResponse``, and whether it is ``eager``."""

    arguments = [(b"m", LargeBytes()), (EAGER, amp.Boolean(optional=True))]
    requiresAnswer = False


class TimeoutNowCmd(amp.Command):
    """Carry an encoded ``TimeoutNow``."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class ReadIndexRequestCmd(amp.Command):
    """Carry an encoded ``ReadIndexRequest`` (a follower's batch of reads).

    A node of an earlier version does not know it and drops the connection:
    the follower's reads are then forwarded to the leader whole.
    """

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class ReadIndexResponseCmd(amp.Command):
    """Carry an encoded ``ReadIndexResponse``."""

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class RemovedNoticeCmd(amp.Command):
    """Carry an encoded ``RemovedNotice`` (:mod:`~leeky_twisted.transport.notices`).

    A node of an earlier version does not know it and drops the connection;
    the sender dials again for its next message.
    """

    arguments = [(b"m", LargeBytes())]
    requiresAnswer = False


class SnapshotChunk(amp.Command):
    """Carry ``data`` = snapshot bytes [offset, offset + len(data)) of ``total``.

    ``message`` is the encoded ``InstallSnapshot`` the data belongs to; it
    names the snapshot (its meta) and is delivered once the last chunk
    (``done``) completes the data. ``crc32`` is the checksum of the whole data.
    The answer ``received`` is how many bytes the receiver now holds for this
    snapshot: the sender continues from there, which also resumes a stream
    after a reconnect.
    """

    arguments = [
        (b"message", LargeBytes()),
        (b"offset", amp.Integer()),
        (b"total", amp.Integer()),
        (b"crc32", amp.Integer()),
        (b"data", LargeBytes()),
        (b"done", amp.Boolean()),
    ]
    response = [(b"received", amp.Integer())]
