"""AddressBook: the one place a node's address book is written."""

from __future__ import annotations

from leeky_twisted.server.addresses import REMOVED_KEY, AddressBook


def test_writers_merge_and_a_snapshot_replaces_entries():
    """learn() merges what was learned; restore() takes each entry from a snapshot."""
    book = AddressBook("1", {"2": {"peer": "h2:7000"}})
    book.learn("2", {"client": "h2:7500"})
    assert book.address_of("2") == {"peer": "h2:7000", "client": "h2:7500"}
    book.restore({"2": {"peer": "new2:7000"}, "3": {"peer": "h3:7000"}})
    assert dict(book["2"]) == {"peer": "new2:7000"} and "3" in book
    assert book.address_of("9") == {}


def test_without_keep_own_the_log_may_update_this_node():
    """A book that does not keep its own entry (tests, the simulation) learns it like others."""
    book = AddressBook("1", {"1": {"peer": "a:1"}})
    book.learn("1", {"client": "a:2"})
    assert book.own() == {"peer": "a:1", "client": "a:2"}


def test_a_leader_announces_its_addresses_for_followers_to_learn():
    """announcement() is the entry a leader proposes; followers learn it, never about themselves."""
    leader = AddressBook("1", {"1": {"peer": "a:1", "client": "a:2"}})
    follower = AddressBook("2", {"2": {"peer": "b:1"}})
    data = leader.announcement()
    assert data is not None
    follower.apply_announcement(data)
    assert follower.address_of("1") == {"peer": "a:1", "client": "a:2"}
    follower.apply_announcement(b'{"announce": "2", "addresses": {"peer": "wrong"}}')
    follower.apply_announcement(b"{malformed")
    assert follower.own() == {"peer": "b:1"}
    assert AddressBook("3").announcement() is None  # nothing to tell


def test_a_configuration_entry_context_names_the_new_member_address():
    """apply_config_context() learns a JSON object context; anything else is ignored."""
    book = AddressBook("1")
    book.apply_config_context("4", b'{"peer": "h4:7000"}')
    book.apply_config_context("5", b"\xff not json")
    book.apply_config_context("6", b"[1, 2]")
    book.apply_config_context("7", b"")
    assert book.address_of("4") == {"peer": "h4:7000"}
    assert all(n not in book for n in ("5", "6", "7"))


def test_removal_marks_travel_in_the_snapshot_book_and_nowhere_else():
    """A mark survives as_dict/restore, is not a node, and no gossip or entry can forge one."""
    book = AddressBook("1")
    book.learn("3", {"peer": "h:3"})
    book.apply_removal("3", 17, removed=True)
    snapshot = book.as_dict()
    again = AddressBook("1")
    again.restore(snapshot)
    assert again.removed_at("3") == 17
    assert set(again) == {"3"}  # the marks are not a node
    again.learn(REMOVED_KEY, {"4": "5"})
    again.apply_announcement(b'{"announce": " removed", "addresses": {"4": "5"}}')
    assert again.removed_at("4") is None and set(again) == {"3"}
    again.apply_removal("3", 20, removed=False)  # added back
    assert again.removed_at("3") is None
    again.restore({})  # a snapshot of an earlier version: no marks
    assert again.removed_at("3") is None
