"""``leekyraft bench --plot``: latency over time and a latency histogram in one file."""

from __future__ import annotations

from pathlib import Path

import pytest
from figure_checks import assert_png, assert_svg, one

from leeky_twisted.cli import EXIT_USAGE, main
from leeky_twisted.ops.bench import BenchResult
from leeky_twisted.plots.bench import bench_figure, write_bench_plot

pytest.importorskip("matplotlib")  # the plots extra (CI installs it with test)


def _result() -> BenchResult:
    """100 ok puts, 1 to 10 ms, over 2 s, and two failures of 1 s."""
    latencies = [0.001 + 0.009 * (i % 10) / 9 for i in range(100)]
    starts = [i * 0.02 for i in range(100)]
    return BenchResult("put", 4, 100, 2, 2.0, latencies, starts, [(0.5, 1.0), (1.5, 1.0)])


def test_bench_figure_shows_each_operation_and_the_histogram():
    """Top: ok and failed series at (start, ms) with p50/p99 lines; bottom: the histogram."""
    result = _result()
    fig = bench_figure(result)
    top, bottom = fig.axes
    ok = one(fig, "ok").get_offsets()
    assert [float(x) for x, _ in ok] == result.starts
    assert [float(y) for _, y in ok] == pytest.approx([lat * 1000 for lat in result.latencies])
    failed = [(float(x), float(y)) for x, y in one(fig, "failed").get_offsets()]
    assert failed == [(0.5, 1000.0), (1.5, 1000.0)]
    lines = {line.get_label(): line.get_ydata()[0] for line in top.get_lines()}
    assert lines == {
        f"p50 {result.percentile(50) * 1000:.2f} ms": pytest.approx(result.percentile(50) * 1000),
        f"p99 {result.percentile(99) * 1000:.2f} ms": pytest.approx(result.percentile(99) * 1000),
    }
    assert sum(p.get_height() for p in bottom.patches) == 100
    assert (top.get_xlabel(), top.get_ylabel()) == ("time since the start (s)", "latency (ms)")
    assert (bottom.get_xlabel(), bottom.get_ylabel()) == ("latency (ms)", "operations")
    assert "100 ops (2 errors)" in fig.get_suptitle()


def test_bench_plot_is_a_png_or_an_svg_by_its_suffix(tmp_path: Path):
    """The file is a valid PNG or SVG of non-trivial size; other suffixes are refused."""
    assert_png(write_bench_plot(_result(), tmp_path / "b.png"))
    root = assert_svg(write_bench_plot(_result(), tmp_path / "b.svg"))
    assert len(root.findall(".//{http://www.w3.org/2000/svg}g")) > 10
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        write_bench_plot(_result(), tmp_path / "b.jpg")


def test_cli_refuses_a_plot_file_of_another_kind(capsys: pytest.CaptureFixture[str]):
    """`leekyraft bench --plot x.pdf` is a usage error before anything runs."""
    with pytest.raises(SystemExit) as exit:
        main(["--cluster", "127.0.0.1:1", "bench", "--plot", "x.pdf"])
    assert exit.value.code == EXIT_USAGE
    assert "must end in .png or .svg" in capsys.readouterr().err


def test_a_run_where_every_operation_failed_still_draws(tmp_path: Path):
    """With no successful operation the failures are drawn and the histogram is empty."""
    result = BenchResult("get", 2, 0, 2, 1.0, [], [], [(0.1, 1.0), (0.5, 1.0)])
    fig = bench_figure(result)
    assert len(one(fig, "failed").get_offsets()) == 2
    assert len(one(fig, "ok").get_offsets()) == 0
    assert_png(write_bench_plot(result, tmp_path / "b.png"), min_bytes=5_000)
