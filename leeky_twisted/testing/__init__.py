"""Harnesses that run the shipped node runtime (``RaftNode``) under test.

Nothing here copies the node's Ready loop: :mod:`leeky_twisted.testing.hosts`
gives each :class:`~leeky_twisted.server.node.RaftNode` a deterministic reactor, an
in-memory disk behind the real storage interfaces, and a peer transport onto a
simulated network, and injects faults at those interfaces.
"""
