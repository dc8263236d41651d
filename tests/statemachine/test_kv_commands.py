"""Tests for the log encoding of key-value commands."""

from __future__ import annotations

import pytest

from leeky_twisted.statemachine.commands import (
    Append,
    Cas,
    CommandDecodeError,
    Delete,
    Get,
    Put,
    RegisterSession,
    Session,
    decode_command,
    encode_command,
)

S = Session("client-1", 7, 5)

COMMANDS = [
    Put("k", "v"),
    Put("k", "", S),
    Put("ключ", "значение ☃", S),
    Delete("k"),
    Delete("k", S),
    Cas("k", None, "new"),
    Cas("k", "old", "new", S),
    Append("k", "tail", S),
    Append("k", "tail", Session("old", 1, 1, registered=False)),
    Get("k"),
    RegisterSession("0123456789abcdef"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_encode_then_decode_returns_the_same_command(command):
    """Every command survives an encode/decode round trip unchanged."""
    assert decode_command(encode_command(command)) == command


def test_encoding_is_compact_json():
    """A put is a short JSON array with the session as an object."""
    assert (
        encode_command(Put("a", "b", Session("c", 2, 1)))
        == b'["put","a","b",{"id":"c","seq":2,"ack":1}]'
    )
    assert encode_command(RegisterSession("n")) == b'["register","n"]'


def test_legacy_sessions_of_old_logs_decode_as_unregistered_and_round_trip():
    """The old form [client_id, seq, ack] decodes as registered=False and encodes back."""
    old = b'["put","a","b",["c",2,1]]'
    command = decode_command(old)
    assert command == Put("a", "b", Session("c", 2, 1, registered=False))
    assert encode_command(command) == old
    assert encode_command(Delete("a")) == b'["del","a",null]'


def test_large_value_round_trips():
    """A 1 MiB value encodes and decodes intact."""
    value = "x" * (1 << 20)
    assert decode_command(encode_command(Put("k", value))) == Put("k", value)


def test_original_put_joins_the_remaining_words_with_spaces():
    """`PUT key value...` puts the rest of the words joined by single spaces."""
    command = decode_command(b"PUT pizzatoppings peporoni peppr  cheddar anchoves onn it")
    assert command == Put("pizzatoppings", "peporoni peppr cheddar anchoves onn it")


@pytest.mark.parametrize(
    ("text", "command"),
    [(b"GET k", Get("k")), (b"DELETE k", Delete("k")), (b"put k v", Put("k", "v"))],
)
def test_original_get_and_delete_decode(text, command):
    """The original GET and DELETE strings decode, verbs in any case."""
    assert decode_command(text) == command


def test_encoding_a_lone_surrogate_is_a_value_error():
    """Text that cannot be UTF-8 is refused when encoding."""
    with pytest.raises(ValueError):
        encode_command(Put("k", "\ud800"))


def test_session_rejects_ack_above_seq():
    """A session's ack can never pass its seq."""
    with pytest.raises(ValueError):
        Session("c", 1, 2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"PUT",
        b"PUT k",
        b"GET",
        b"GET a b",
        b"DELETE",
        b"FROB k",
        b"\xff\xfe",
        b"[",
        b"[]",
        b"{}",
        b"[1]",
        b'["nope","k"]',
        b'["put","k"]',
        b'["put","k","v",null,0]',  # a lease must be positive
        b'["put","k","v",null,1,2]',
        b'["put",1,"v",null]',
        b'["put","k",null,null]',
        b'["put","k","v",["c",1]]',
        b'["put","k","v",["c","1",1]]',
        b'["put","k","v",["c",true,0]]',
        b'["put","k","v",["",1,1]]',
        b'["put","k","v",["c",1,2]]',
        b'["put","k","v",["c",1.5,1]]',
        b'["put","\\ud800","v",null]',
        b'["cas","k",1,"n",null]',
        b'["put","k","v",{"id":"c","seq":1}]',
        b'["put","k","v",{"id":"c","seq":1,"ack":1,"x":0}]',
        b'["put","k","v",{"id":1,"seq":1,"ack":1}]',
        b'["put","k","v",{"id":"c","seq":1,"ack":2}]',
        b'["register"]',
        b'["register",""]',
        b'["register",7]',
        b'["register","' + b"n" * 33 + b'"]',
        b"[" * 100000,
    ],
)
def test_malformed_bytes_raise_only_command_decode_error(data):
    """Untrusted bytes either decode or raise CommandDecodeError, nothing else."""
    with pytest.raises(CommandDecodeError):
        decode_command(data)


def test_decode_rejects_non_bytes():
    """Only bytes are commands."""
    with pytest.raises(CommandDecodeError):
        decode_command("PUT k v")  # type: ignore[arg-type]
