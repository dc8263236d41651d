"""Watches: a node's window of recent events and the watchers it feeds.

The key-value state machine reports every applied modification (see
``KeyValueStateMachine.observe``); :class:`WatchHub` keeps the last
``window`` events and hands each watcher the events of its key or prefix, in
revision order, each once. Every node does this from its own applied state,
so a watch can be served by any node: events are committed before any node
applies them.

A watch from revision R gets every matching event with revision ≥ R. R must
lie above the hub's *floor* (the newest revision it no longer holds events
for: where it started, where a snapshot restore put it, or the last event it
dropped from its window); else :class:`~leeky_twisted.protocol.errors.Compacted`
says "compacted, oldest is F+1". The events of one revision (a transaction)
always travel together, so a client that resumes from its last revision + 1
misses nothing and sees nothing twice.

Flow control: a watcher's sink (an AMP connection, an SSE stream) reports
how many delivered events it has not yet passed on (``backlog``). A watcher
whose backlog would pass ``max_backlog`` is cancelled with a reason naming
the revision to resume from; nothing else waits for it. Watchers that had no
event for ``progress_interval`` seconds get a progress note (the revision
they are up to), which keeps quiet connections from looking idle and lets a
client resume from a recent revision.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from leeky_twisted import defaults
from leeky_twisted.protocol.errors import Compacted
from leeky_twisted.statemachine.kv import Event

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_WINDOW",
    "WatchHub",
    "WatchSink",
    "Watcher",
    "batches",
]

#: Events a node keeps for watchers that resume (``--watch-window``).
DEFAULT_WINDOW = defaults.WATCH_WINDOW
#: ... and at most this many characters of their keys and values (64 per event more).
DEFAULT_WINDOW_BYTES = 64 << 20
#: Events a watcher may have delivered but not passed on before it is cancelled.
DEFAULT_MAX_BACKLOG = 10_000
#: Seconds between progress notes to a watcher that had no events.
DEFAULT_PROGRESS_INTERVAL = 10.0
#: Most watchers one node serves at once.
DEFAULT_MAX_WATCHERS = 10_000


class WatchSink(Protocol):
    """Where a watcher's events go (an AMP connection, an SSE response, a long poll)."""

    def events(self, watcher: Watcher, events: list[Event]) -> None:
        """Pass on ``events`` (all of one or more whole revisions); never block."""

    def progress(self, watcher: Watcher, revision: int) -> None:
        """Note that the watcher has every matching event below ``revision``."""

    def cancelled(self, watcher: Watcher, reason: str) -> None:
        """The hub dropped the watcher for ``reason``; no more calls follow."""


class Watcher:
    """One watch: the keys in [start, end) (end None: every key from start), from a revision."""

    __slots__ = ("backlog", "end", "id", "next_revision", "noted", "origin", "sink", "start")

    def __init__(
        self, watch_id: int, start: str, end: str | None, next_revision: int, sink: WatchSink
    ) -> None:
        self.id = watch_id
        self.start = start
        self.end = end
        #: the revision the watch started from
        self.origin = next_revision
        #: every matching event below this revision has been handed to the sink
        self.next_revision = next_revision
        #: the revision last sent as events or progress
        self.noted = next_revision
        self.backlog = 0
        self.sink = sink

    def matches(self, key: str) -> bool:
        """Return whether ``key`` is one this watcher watches."""
        return self.start <= key and (self.end is None or key < self.end)


class WatchHub:
    """The window of recent events of one node, and its watchers.

    :param revision: the state machine's revision now (the first floor).
    :param on_watching: told True when the first watcher starts and False when
        the last one ends (the node then asks its leader for each commit at once).
    """

    def __init__(
        self,
        clock: IReactorTime,
        revision: int,
        *,
        window: int = DEFAULT_WINDOW,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        max_watchers: int = DEFAULT_MAX_WATCHERS,
        on_watching: Callable[[bool], None] | None = None,
    ) -> None:
        if window < 1 or max_backlog < 1 or max_watchers < 1 or progress_interval <= 0:
            raise ValueError("watch window, backlog, watcher count and interval must be positive")
        self.clock = clock
        self._window = self._trim_at = 0
        self.window = window
        self.window_bytes = window_bytes
        self._bytes = 0
        self.max_backlog = max_backlog
        self.max_watchers = max_watchers
        self.progress_interval = progress_interval
        self.revision = revision
        self.floor = revision
        self._events: deque[Event] = deque()
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._timer: IDelayedCall | None = None
        #: watchers cancelled for falling behind (a metric)
        self.cancelled_slow = 0
        self._encoded: tuple[list[Event], bytes] = ([], b"[]")
        self._on_watching = on_watching

    @property
    def window(self) -> int:
        """Return how many events, at least, the hub keeps."""
        return self._window

    @window.setter
    def window(self, events: int) -> None:
        self._window = events
        self._trim_at = events + (events >> 4)

    @property
    def oldest(self) -> int:
        """Return the oldest revision a watch may start from."""
        return self.floor + 1

    def watchers(self) -> list[Watcher]:
        """Return the live watchers."""
        return list(self._watchers.values())

    # ------------------------------------------------- from the state machine

    def on_events(self, events: list[Event]) -> None:
        """Record one applied entry's events and hand them to the watchers."""
        # On every node's apply path: kept lean (tuple indexes, no calls when unwatched).
        window = self._events
        window.extend(events)
        size = self._bytes
        for e in events:
            value = e[3]
            size += len(e[2]) + (len(value) if value is not None else 0) + 64
        self._bytes = size
        # Trimmed in steps (to ``window``, once it is 1/16 over): one loop per
        # many entries instead of one per entry.
        if len(window) > self._trim_at or size > self.window_bytes:
            self._trim()
        self.revision = events[-1][0]
        if self._watchers:
            self._fan_out(events)

    def _trim(self) -> None:
        window = self._events
        size = self._bytes
        while len(window) > self.window or (size > self.window_bytes and len(window) > 1):
            gone = window.popleft()
            size -= _size(gone)
            self.floor = gone.revision
        self._bytes = size

    def _fan_out(self, events: list[Event]) -> None:
        if len(events) == 1:
            self._fan_out_one(events)
            return
        for watcher in list(self._watchers.values()):
            start = watcher.next_revision
            matched = [e for e in events if e.revision >= start and watcher.matches(e.key)]
            if matched:
                self._deliver(watcher, matched)
            watcher.next_revision = max(watcher.next_revision, self.revision + 1)

    def _fan_out_one(self, events: list[Event]) -> None:
        """One event (a put, a delete): every watcher of its key gets this very list.

        No list per watcher: the sink's encoding and box are then found by identity
        (:meth:`encoded`), and a fan-out to many watchers leaves little garbage.
        """
        event = events[0]
        revision, key = event[0], event[2]
        after = self.revision + 1
        for watcher in list(self._watchers.values()):
            if revision >= watcher.next_revision and watcher.matches(key):
                self._deliver(watcher, events)
            if watcher.next_revision < after:
                watcher.next_revision = after

    def on_restore(self, revision: int) -> None:
        """The state jumped to ``revision`` (a snapshot): the events before it are gone.

        Watchers that had not reached it are cancelled (they would miss events).
        """
        self._events.clear()
        self._bytes = 0
        self.floor = max(self.floor, revision)
        self.revision = max(self.revision, revision)
        for watcher in list(self._watchers.values()):
            if watcher.next_revision <= revision:
                self.cancel(
                    watcher,
                    f"compacted: this node installed a snapshot at revision {revision};"
                    f" events from {watcher.next_revision} are gone, oldest is {self.oldest}",
                )

    # ------------------------------------------------------------- watchers

    def history(
        self, start: str, end: str | None, from_revision: int, max_events: int | None = None
    ) -> list[Event]:
        """Return the held events for [start, end) at or after ``from_revision``.

        At most ``max_events``, cut at a revision boundary (always whole
        revisions; at least one). Raises Compacted when ``from_revision`` is
        at or below the floor.
        """
        if from_revision <= self.floor:
            raise Compacted(
                f"compacted: revision {from_revision} is no longer held, oldest is {self.oldest}"
            )
        out: list[Event] = []
        for e in self._events:
            if e.revision < from_revision or not (start <= e.key and (end is None or e.key < end)):
                continue
            if max_events is not None and len(out) >= max_events and out[-1].revision != e.revision:
                break
            out.append(e)
        return out

    def watch(
        self, start: str, end: str | None, start_revision: int | None, sink: WatchSink
    ) -> Watcher:
        """Start a watch from ``start_revision`` (None or 0: the next revision).

        The held events at or after it are handed to ``sink`` at once, then
        each new one as it is applied. Raises Compacted (see :meth:`history`),
        or Unavailable when the node serves ``max_watchers`` already.
        """
        from leeky_twisted.protocol.errors import Unavailable

        if len(self._watchers) >= self.max_watchers:
            raise Unavailable(f"this node serves {self.max_watchers} watches already")
        from_revision = start_revision or self.revision + 1
        past = self.history(start, end, from_revision)
        self._next_id += 1
        watcher = Watcher(self._next_id, start, end, from_revision, sink)
        self._watchers[watcher.id] = watcher
        if len(self._watchers) == 1 and self._on_watching is not None:
            self._on_watching(True)
        if past:
            self._deliver(watcher, past)
        watcher.next_revision = max(watcher.next_revision, self.revision + 1)
        self._arm()
        return watcher

    def encoded(self, events: list[Event]) -> bytes:
        """Return the UTF-8 JSON list of ``events``.

        The last answer is kept: a fan-out hands every watcher of one key the
        same events, which are then encoded once, not once per watcher. (Event
        lists handed to sinks are never changed afterwards: the same list is
        the same events.)
        """
        last, data = self._encoded
        if last is events:
            return data
        if len(last) == len(events) and all(a is b for a, b in zip(last, events, strict=True)):
            return data
        data = json.dumps([e.to_json() for e in events], ensure_ascii=False).encode("utf-8")
        self._encoded = (events, data)
        return data

    def acked(self, watcher: Watcher, count: int) -> None:
        """The sink passed on ``count`` more of the watcher's events."""
        watcher.backlog = max(0, watcher.backlog - count)

    def cancel(self, watcher: Watcher, reason: str | None = None) -> None:
        """Drop ``watcher``; with a ``reason``, tell its sink."""
        if self._watchers.pop(watcher.id, None) is None:
            return
        if not self._watchers and self._on_watching is not None:
            self._on_watching(False)
        if reason is not None:
            watcher.sink.cancelled(watcher, reason)

    def end_all(self, reason: str) -> None:
        """Cancel every watcher, telling each sink ``reason``."""
        for watcher in list(self._watchers.values()):
            self.cancel(watcher, reason)

    def close(self) -> None:
        """Cancel every watcher (the node is stopping) and the progress timer."""
        for watcher in list(self._watchers.values()):
            self.cancel(
                watcher, f"the node is stopping; resume from revision {watcher.next_revision}"
            )
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # ------------------------------------------------------------ internals

    def _deliver(self, watcher: Watcher, events: list[Event]) -> None:
        if watcher.backlog + len(events) > self.max_backlog:
            self.cancelled_slow += 1
            self.cancel(
                watcher,
                f"watcher fell behind: {watcher.backlog} events not yet taken (limit"
                f" {self.max_backlog}); resume from revision {watcher.next_revision}",
            )
            return
        watcher.backlog += len(events)
        watcher.next_revision = events[-1].revision + 1
        watcher.noted = watcher.next_revision
        watcher.sink.events(watcher, events)

    def _arm(self) -> None:
        if self._timer is None and self._watchers:
            self._timer = self.clock.callLater(self.progress_interval, self._progress)

    def _progress(self) -> None:
        self._timer = None
        for watcher in list(self._watchers.values()):
            if watcher.backlog == 0:
                watcher.noted = watcher.next_revision
                watcher.sink.progress(watcher, watcher.next_revision)
        self._arm()


def _size(e: Event) -> int:
    return len(e.key) + (len(e.value) if e.value is not None else 0) + 64


def batches(events: list[Event], max_chars: int) -> list[list[Event]]:
    """Split ``events`` into runs of whole revisions of at most ``max_chars`` (but one
    revision at least), for messages of a bounded size."""
    out: list[list[Event]] = []
    current: list[Event] = []
    size = 0
    for i, e in enumerate(events):
        if current and size + _size(e) > max_chars and e.revision != events[i - 1].revision:
            out.append(current)
            current, size = [], 0
        current.append(e)
        size += _size(e)
    if current:
        out.append(current)
    return out


def attach(state_machine: Any, hub: WatchHub) -> Callable[[], None]:
    """Feed ``hub`` from ``state_machine`` (a KeyValueStateMachine); return a detach function."""
    state_machine.observe(hub.on_events, hub.on_restore)
    return lambda: state_machine.observe(None)
