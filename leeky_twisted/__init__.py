"""Leeky Raft on Twisted: a Raft consensus key-value service."""

__version__ = "0.1.0"
