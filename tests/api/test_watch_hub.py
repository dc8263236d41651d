"""The watch hub: window, catch-up, order, compaction, slow watchers, progress (task.Clock)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from leeky_twisted.api.watch import WatchHub, attach
from leeky_twisted.protocol.errors import Compacted
from leeky_twisted.statemachine.commands import Delete, Put, Txn, encode_command
from leeky_twisted.statemachine.kv import KeyValueStateMachine


class Sink:
    def __init__(self, ack=True):
        self.got = []
        self.progress_notes = []
        self.reasons = []
        self.ack = ack
        self.hub = None

    def events(self, watcher, events):
        self.got.extend(events)
        if self.ack:
            self.hub.acked(watcher, len(events))

    def progress(self, watcher, revision):
        self.progress_notes.append(revision)

    def cancelled(self, watcher, reason):
        self.reasons.append(reason)


class World:
    def __init__(self, window=100, max_backlog=100):
        self.clock = Clock()
        self.sm = KeyValueStateMachine()
        self.hub = WatchHub(self.clock, 0, window=window, max_backlog=max_backlog)
        attach(self.sm, self.hub)
        self.index = 0

    def apply(self, command):
        self.index += 1
        return self.sm.apply(self.index, encode_command(command))

    def sink(self, **kw):
        s = Sink(**kw)
        s.hub = self.hub
        return s


def keys(sink):
    return [(e.revision, e.kind, e.key) for e in sink.got]


def test_prefix_watch_gets_each_matching_event_once_in_order():
    """Live events of the prefix only; a txn's events arrive together."""
    w = World()
    s = w.sink()
    w.hub.watch("a/", "a0", None, s)
    w.apply(Put("a/1", "x"))
    w.apply(Put("b", "y"))
    w.apply(Txn((), (Put("a/2", "z"), Delete("a/1"))))
    assert keys(s) == [(1, "put", "a/1"), (3, "put", "a/2"), (3, "delete", "a/1")]


def test_watch_from_a_past_revision_catches_up_then_follows():
    """From revision 2: the held events from 2 on, then the live ones, no gap, no repeat."""
    w = World()
    for i in range(4):
        w.apply(Put(f"k{i}", "v"))
    s = w.sink()
    watcher = w.hub.watch("", None, 2, s)
    w.apply(Put("k9", "v"))
    assert [r for r, _, _ in keys(s)] == [2, 3, 4, 5]
    assert watcher.origin == 2 and watcher.next_revision == 6


def test_revision_older_than_the_window_is_compacted_naming_the_oldest():
    """A window of 3 events: asking for revision 1 after 5 puts says "oldest is 3"."""
    w = World(window=3)
    for i in range(5):
        w.apply(Put(f"k{i}", "v"))
    with pytest.raises(Compacted, match="compacted: revision 1 is no longer held, oldest is 3"):
        w.hub.watch("", None, 1, w.sink())
    assert len(keys_of_history := w.hub.history("", None, 3)) == 3
    assert keys_of_history[0].revision == 3


def test_a_snapshot_restore_compacts_and_cancels_watchers_behind_it():
    """After a restore to revision R, older revisions are compacted; behind watchers end."""
    w = World()
    s = w.sink()
    w.hub.watch("", None, None, s)
    other = KeyValueStateMachine()
    for i in range(1, 6):
        other.apply(i, encode_command(Put(f"k{i}", "v")))
    w.sm.restore(other.snapshot())
    assert s.reasons and "installed a snapshot at revision 5" in s.reasons[0]
    with pytest.raises(Compacted, match="oldest is 6"):
        w.hub.watch("", None, 5, w.sink())


def test_a_slow_watcher_is_cancelled_and_never_holds_up_the_others():
    """A sink that never takes its events is cancelled past max_backlog; others go on."""
    w = World(max_backlog=3)
    slow, fast = w.sink(ack=False), w.sink()
    w.hub.watch("", None, None, slow)
    w.hub.watch("", None, None, fast)
    for i in range(5):
        w.apply(Put(f"k{i}", "v"))
    assert len(keys(slow)) == 3
    assert (
        "fell behind: 3 events not yet taken (limit 3); resume from revision 4" in slow.reasons[0]
    )
    assert len(keys(fast)) == 5 and not fast.reasons
    assert w.hub.cancelled_slow == 1 and len(w.hub.watchers()) == 1


def test_quiet_watchers_get_progress_notes():
    """A watcher with nothing to receive is told the revision it is up to."""
    w = World()
    s = w.sink()
    w.hub.watch("a", "a\0", None, s)
    w.apply(Put("b", "v"))
    w.clock.advance(w.hub.progress_interval)
    assert s.progress_notes == [2]


def test_close_ends_every_watcher_with_the_revision_to_resume_from():
    """Stopping the node tells each watcher where to resume."""
    w = World()
    s = w.sink()
    w.hub.watch("", None, None, s)
    w.apply(Put("k", "v"))
    w.hub.close()
    assert s.reasons == ["the node is stopping; resume from revision 2"]
    assert not w.clock.getDelayedCalls()


def test_window_is_bounded_in_bytes_too():
    """Large values push old events out of the window before the event count does."""
    w = World(window=1000)
    w.hub.window_bytes = 3000
    for i in range(5):
        w.apply(Put(f"k{i}", "x" * 1000))
    assert w.hub.oldest == 4  # only the last two (about 2 KB) fit
    assert [e.revision for e in w.hub.history("", None, 4)] == [4, 5]


def test_batches_cut_at_revision_boundaries_within_a_size():
    """Messages hold whole revisions, about max_chars each, one revision at least."""
    from leeky_twisted.api.watch import batches
    from leeky_twisted.statemachine.kv import Event

    events = [Event(r, "put", "k", "x" * 100, r, 1) for r in (1, 1, 2, 3, 3, 3)]
    cut = batches(events, 600)  # 165 characters an event
    assert [[e.revision for e in b] for b in cut] == [[1, 1, 2], [3, 3, 3]]
    assert batches(events, 1) == [events[:2], events[2:3], events[3:]]


def test_the_hub_says_when_its_first_watcher_starts_and_its_last_one_ends():
    """on_watching hears True at the first watcher and False once none is left, by
    cancel, a slow watcher's end or close; nothing in between."""
    said: list[bool] = []
    clock = Clock()
    hub = WatchHub(clock, 0, max_backlog=1, on_watching=said.append)
    sm = KeyValueStateMachine()
    attach(sm, hub)
    s1, s2 = Sink(), Sink()
    s1.hub = s2.hub = hub
    first = hub.watch("", None, None, s1)
    second = hub.watch("a", None, None, s2)
    assert said == [True]
    hub.cancel(first)
    assert said == [True]
    hub.cancel(second, "done")
    hub.cancel(second, "twice")
    assert said == [True, False]
    slow = Sink(ack=False)
    slow.hub = hub
    hub.watch("", None, None, slow)
    sm.apply(1, encode_command(Put("k", "v")))
    sm.apply(2, encode_command(Put("k", "w")))  # over max_backlog: cancelled
    assert slow.reasons and said == [True, False, True, False]
    hub.watch("", None, None, s1)
    hub.close()
    assert said == [True, False, True, False, True, False]


def test_a_one_event_fan_out_hands_every_watcher_the_same_list_once():
    """One event to many watchers: each watcher of its key gets the very same list (no
    copy per watcher, encoded once by identity); others, and a watch that starts after
    it, get nothing; the next event still reaches each watcher once, in order."""
    w = World()
    lists = []

    class Keeping(Sink):
        def events(self, watcher, events):
            lists.append(events)
            super().events(watcher, events)

    sinks = [Keeping() for _ in range(3)]
    other = Keeping()
    for s in [*sinks, other]:
        s.hub = w.hub
    for s in sinks:
        w.hub.watch("k", "k\0", None, s)
    w.hub.watch("x", "x\0", None, other)
    w.apply(Put("k", "v1"))
    assert len(lists) == 3 and lists[0] is lists[1] is lists[2]
    assert w.hub.encoded(lists[0]) is w.hub.encoded(lists[1])
    late = w.sink()
    w.hub.watch("k", "k\0", 5, late)
    w.apply(Put("k", "v2"))
    assert [keys(s) for s in sinks] == [[(1, "put", "k"), (2, "put", "k")]] * 3
    assert other.got == [] and late.got == []
