"""The file-metadata state machine: ADD, READ, DELETE, queries and snapshots."""

from __future__ import annotations

import pytest

from leeky_twisted.executor.filemeta import CommandRejected, FileMetadataMachine


def test_add_read_delete_lifecycle() -> None:
    """ADD records a file, READ counts reads, DELETE forgets it and answers its record."""
    m = FileMetadataMachine()
    assert m.apply(1, b"ADD notes.txt 120") == {
        "name": "notes.txt",
        "size": 120,
        "added_index": 1,
        "reads": 0,
    }
    assert m.apply(2, b"READ notes.txt")["reads"] == 1
    assert m.apply(3, b"read notes.txt")["reads"] == 2
    assert m.query("READ notes.txt")["reads"] == 2  # queries count nothing
    assert m.apply(4, b"DELETE notes.txt")["reads"] == 2
    assert m.query("READ notes.txt") is None
    assert len(m) == 0


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (b"", "empty"),
        (b"ADD", "needs a file name"),
        (b"READ missing", "no such file"),
        (b"DELETE missing", "no such file"),
        (b"ADD f x", "bad size"),
        (b"ADD f 1 2", "usage"),
        (b"READ f extra", "usage"),
        (b"MOVE f g", "unknown command"),
        (b"\xff\xfe", "not UTF-8"),
        (b"ADD " + b"n" * 300, "longer than"),
    ],
)
def test_refused_commands_change_nothing(command: bytes, why: str) -> None:
    """A command that cannot take effect raises CommandRejected and leaves the state alone."""
    m = FileMetadataMachine()
    m.apply(1, b"ADD f")
    before = m.to_json()
    with pytest.raises(CommandRejected, match=why):
        m.apply(2, command)
    assert m.to_json() == before


def test_adding_a_known_name_is_refused() -> None:
    """ADD of a name already present is refused."""
    m = FileMetadataMachine()
    m.apply(1, b"ADD f")
    with pytest.raises(CommandRejected, match="exists"):
        m.apply(2, b"ADD f 10")


def test_list_and_bad_queries() -> None:
    """LIST answers sorted names; other queries are refused."""
    m = FileMetadataMachine()
    for i, name in enumerate(["b", "a", "c"], start=1):
        m.apply(i, f"ADD {name}".encode())
    assert m.query("LIST") == ["a", "b", "c"]
    with pytest.raises(CommandRejected):
        m.query("DELETE a")


def test_snapshot_round_trip_and_malformed_documents() -> None:
    """to_json/from_json round-trip; malformed documents raise ValueError."""
    m = FileMetadataMachine()
    m.apply(1, b"ADD a 5")
    m.apply(2, b"READ a")
    copy = FileMetadataMachine.from_json(m.to_json())
    assert copy.to_json() == m.to_json()
    for bad in (
        None,
        {"format": "other"},
        {"format": "leeky-filemeta/1", "files": {}},
        {"format": "leeky-filemeta/1", "files": [{"name": "a"}]},
        {"format": "leeky-filemeta/1", "files": [{"name": 1, "size": 0, "added_index": 1}]},
        {"format": "leeky-filemeta/1", "files": [{"name": "a", "size": -1, "added_index": 1}]},
    ):
        with pytest.raises(ValueError):
            FileMetadataMachine.from_json(bad)


def test_an_unknown_query_is_named_with_the_known_ones() -> None:
    """`FROB x`: the refusal names the unknown query and lists READ and LIST."""
    m = FileMetadataMachine()
    with pytest.raises(CommandRejected) as refused:
        m.query("FROB x")
    assert str(refused.value) == "unknown query 'FROB': queries are READ <name> or LIST"
