"""Tests for `leekyraft bench`'s progress output (no reactor)."""

from __future__ import annotations

import io

from leeky_twisted.ops.bench import Progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_into_a_file_is_plain_lines():
    """Written to a file or pipe, progress is one plain line per update, no carriage returns."""
    out = io.StringIO()
    shown = Progress(out, ops=100)
    shown.update(10, 1.0)
    shown.update(100, 2.0)
    shown.finish()
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == ["1.0 s: 10/100 ops, 10/s", "2.0 s: 100/100 ops, 50/s"]


def test_progress_on_a_terminal_redraws_one_bar():
    """On a terminal the bar is redrawn in place and ends with one newline."""
    out = Terminal()
    shown = Progress(out, ops=100)
    shown.update(50, 1.0)
    shown.finish()
    text = out.getvalue()
    assert text.startswith("\r[###############...............] 50/100 50/s")
    assert text.endswith("\n") and text.count("\n") == 1


def test_no_progress_without_an_output():
    """With out=None nothing is written and nothing fails."""
    shown = Progress(None, ops=10)
    shown.update(5, 1.0)
    shown.finish()


def test_bench_with_a_silent_node_first_loses_about_one_attempt_timeout():
    """`leekyraft bench --cluster paused,live`: every client moves on; no operation fails."""
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Factory, Protocol

    from leeky_twisted.ops.bench import run_bench
    from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, result_of

    net = FakeNetwork()
    hung, live = ("10.0.0.9", 7009), ("10.0.0.1", 7001)
    net.listen(hung, Factory.forProtocol(Protocol))  # accepts, never answers (paused)
    node = FakeRaftNode("1", "10.0.0.1:7001")
    net.serve(live, node, forward=False)
    d = Deferred.fromCoroutine(
        run_bench(
            net.clock, [hung, live], "put", clients=4, ops=40, keys=5, out=None, connect=net.connect
        )
    )
    net.run(d, step=0.01, limit=30)
    result = result_of(d)
    assert (result.ops, result.errors) == (40, 0)
    assert net.clock.seconds() < 1.5


def test_bench_records_each_operations_start_and_latency():
    """Every operation leaves (start, latency): ok ones in starts/latencies, failed ones apart."""
    from twisted.internet.defer import Deferred, fail

    from leeky_twisted.ops.bench import run_bench
    from leeky_twisted.protocol.errors import InvalidRequest
    from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, result_of

    net = FakeNetwork()
    live = ("10.0.0.1", 7001)
    node = FakeRaftNode("1", "10.0.0.1:7001")
    net.serve(live, node, forward=False)
    d = Deferred.fromCoroutine(
        run_bench(
            net.clock, [live], "put", clients=3, ops=30, keys=5, out=None, connect=net.connect
        )
    )
    net.run(d, step=0.01, limit=30)
    ok = result_of(d)
    assert len(ok.starts) == len(ok.latencies) == 30 and ok.failures == []
    assert all(0 <= s <= ok.seconds for s in ok.starts)
    assert all(s + lat <= ok.seconds for s, lat in zip(ok.starts, ok.latencies, strict=True))

    def refuse(*args: object, **kwargs: object) -> Deferred[object]:
        return fail(InvalidRequest("no reads today"))

    node.read = refuse  # type: ignore[method-assign]
    d = Deferred.fromCoroutine(
        run_bench(net.clock, [live], "get", clients=2, ops=4, out=None, connect=net.connect)
    )
    net.run(d, step=0.01, limit=30)
    failed = result_of(d)
    assert (failed.ops, failed.errors, failed.starts, failed.latencies) == (0, 4, [], [])
    assert len(failed.failures) == 4
    assert all(0 <= s <= s + lat <= failed.seconds for s, lat in failed.failures)
