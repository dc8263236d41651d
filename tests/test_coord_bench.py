"""The pure parts of tools/coord_bench.py (no cluster, no etcd)."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _load():
    spec = importlib.util.spec_from_file_location("coord_bench", TOOLS / "coord_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("coord_bench", module)
    spec.loader.exec_module(module)
    return module


cb = _load()


def test_defaults_alternate_etcd_then_leekyraft_twice():
    a = cb.parse_args([])
    assert a.systems == ["etcd", "leekyraft"]
    assert (a.rounds, a.lock_contenders, a.txn_clients) == (2, 8, 64)
    assert a.worker is None


def test_quick_shrinks_every_count():
    a = cb.parse_args(["--quick", "--rounds", "5"])
    assert a.rounds == 1 and a.watch_puts == 20 and a.txn_seconds == 2.0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--systems", "zookeeper"], "unknown zookeeper"),
        (["--systems", ","], "unknown (none)"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--txn-seconds", "-1"], "must be positive"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        cb.parse_args(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert cb.percentile(values, 50) == 50
    assert cb.percentile(values, 99) == 99
    assert cb.percentile([3.0], 99) == 3.0
    assert cb.percentile([5, 1, 3], 0) == 1
    assert math.isnan(cb.percentile([], 50))


def test_latency_summary_in_milliseconds():
    s = cb.latency_summary([0.001, 0.002, 0.003])
    assert s == {"n": 3, "p50_ms": 2.0, "p99_ms": 3.0}


def test_median_odd_even_and_empty():
    assert cb.median([3, 1, 2]) == 2
    assert cb.median([4, 1, 2, 3]) == 2.5
    assert math.isnan(cb.median([]))


def test_increasing_tokens():
    assert cb.increasing([3, 5, 9])
    assert cb.increasing([])
    assert not cb.increasing([3, 3])
    assert not cb.increasing([5, 4])


def _run(system, per_s, p50):
    return {"system": system, "lock": {"per_s": per_s, "p50_ms": p50}, "txn": {}}


def test_summary_takes_median_and_spread_per_system():
    runs = [_run("etcd", 80, 10), _run("leekyraft", 40, 20), _run("etcd", 100, 12)]
    rows = {r["metric"]: r for r in cb.summarize(runs, ["etcd", "leekyraft"])}
    lock = rows["lock, 8 contenders: cycles/s"]
    assert lock["etcd"] == {"median": 90.0, "min": 80, "max": 100, "runs": 2}
    assert lock["leekyraft"]["median"] == 40
    assert rows["txn p50 ms"]["etcd"]["runs"] == 0


def test_table_shows_median_spread_and_direction():
    runs = [_run("etcd", 80, 10), _run("leekyraft", 40, 5)]
    table = cb.format_table(cb.summarize(runs, ["etcd", "leekyraft"]), ["etcd", "leekyraft"])
    lines = table.splitlines()
    assert lines[0].startswith("| metric | etcd median (min-max) | leekyraft median")
    cycles = next(line for line in lines if line.startswith("| lock, 8 contenders"))
    assert "| 80.0 (80.0-80.0) | 40.0 (40.0-40.0) | 2.00x worse |" in cycles
    p50 = next(line for line in lines if line.startswith("| lock cycle p50"))
    assert p50.endswith("| 2.00x better |")
    missing = next(line for line in lines if line.startswith("| txn p99"))
    assert missing.endswith("| - | - | - |")


def test_factor_with_zero_latencies():
    assert cb._factor(0.0, 0.0, "lower") == "same"
    assert cb._factor(0.0, 0.4, "lower") == "better"
    assert cb._factor(0.4, 0.0, "lower") == "worse"


def test_values_are_100_bytes_and_carry_their_sequence():
    v = cb._value(42)
    assert len(v.encode()) == cb.VALUE_BYTES == 100
    assert int(v[:10]) == 42


def test_missing_shared_bench_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        cb._bench_dir(str(tmp_path))
    assert "shared yardstick" in str(e.value) and "--bench-dir" in str(e.value)


def test_cpu_seconds_of_this_process_and_of_no_process():
    assert cb.cpu_seconds(os.getpid()) >= 0
    assert math.isnan(cb.cpu_seconds(-1))


def test_cpu_meter_reports_percent_per_process():
    meter = cb.CpuMeter({"me": os.getpid()})
    sum(i * i for i in range(200_000))  # a little CPU
    reading = meter.read()
    assert list(reading) == ["me_cpu_pct"] and reading["me_cpu_pct"] >= 0


def test_workloads_default_to_all_and_pick_a_subset():
    assert cb.parse_args([]).workloads == list(cb.WORKLOADS)
    a = cb.parse_args(["--workloads", "txn, watch100"])
    assert a.workloads == ["txn", "watch100"]
    assert [name for name, *_ in cb.watch_runs(a)] == ["watch100"]


def test_unknown_workload_exits_2_naming_it(capsys):
    with pytest.raises(SystemExit) as e:
        cb.parse_args(["--workloads", "txn,locks"])
    assert e.value.code == 2
    assert "unknown locks" in capsys.readouterr().err


def test_cpu_meter_reports_microseconds_per_operation():
    meter = cb.CpuMeter({"me": os.getpid()})
    sum(i * i for i in range(200_000))
    reading = meter.read(ops=10)
    assert set(reading) == {"me_cpu_pct", "me_cpu_us_per_op"}
    assert reading["me_cpu_us_per_op"] >= 0
