"""A request whose arguments do not parse gets an error in a user's words, not AMP's."""

from __future__ import annotations

import pytest
from twisted.protocols import amp

from leeky_twisted.protocol import commands as cc
from leeky_twisted.testing.apifakes import failure_of


def refused(name: bytes, error: Exception) -> str:
    """Return the description refuse_malformed answers a responder raising ``error`` with."""

    def responder(box: amp.AmpBox):
        raise error

    f = failure_of(cc.refuse_malformed(name, responder)(amp.AmpBox({b"_ask": b"1"})))
    assert f.value.errorCode == b"INVALID_REQUEST"
    return f.value.description


@pytest.mark.parametrize(
    ("name", "error", "said"),
    [
        (
            b"LeaseGrant",
            KeyError(b"ttl"),
            "invalid lease grant request: the ttl argument is missing",
        ),
        (
            b"Put",
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            "invalid put request: an argument is not valid UTF-8 text",
        ),
        (
            b"RegisterSession",
            ValueError("seq must be an integer from 0 to 9"),
            "invalid register session request: seq must be an integer from 0 to 9",
        ),
    ],
)
def test_bad_arguments_are_described_without_amp_names(name, error, said):
    """No "malformed LeaseGrant arguments": the request in words, and what was wrong."""
    assert refused(name, error) == said


def test_an_integer_out_of_bounds_names_its_argument():
    """BoundedInteger says which argument is out of which bounds."""
    objects: dict = {}
    with pytest.raises(ValueError, match=r"^ttl must be an integer from 1 to 1000000$"):
        cc.BoundedInteger(1, cc.MAX_LEASE_TTL).fromBox(b"ttl", {b"ttl": b"0"}, objects, None)


def test_the_client_side_bounds_match_the_state_machine():
    """The lease ttl bound the wire (and the CLI) checks is the state machine's own."""
    from leeky_twisted.statemachine.commands import MAX_LEASE_TTL

    assert cc.MAX_LEASE_TTL == MAX_LEASE_TTL
