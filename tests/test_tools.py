"""The repository's own tools say what they need when a clone lacks it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the environment of a tool run from this checkout
TOOL_ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


def run_tool(
    script: str, *args: str, env: dict[str, str] | None = TOOL_ENV, cwd: Path | None = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run ``tools/SCRIPT ARGS`` with this Python; return it with its output as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.fixture
def cpu_per_op() -> ModuleType:
    """tools/cpu_per_op.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("cpu_per_op", ROOT / "tools" / "cpu_per_op.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_run_benchmarks_without_the_shared_yardstick_says_what_is_missing(tmp_path):
    """A clone has no ../shared/bench: the script stops with one clear message, exit 2."""
    project = tmp_path / "project"
    (project / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "run_benchmarks.sh", project / "tools")
    done = subprocess.run(
        ["bash", str(project / "tools" / "run_benchmarks.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "shared yardstick" in done.stderr and "leekyraft bench" in done.stderr


def test_cpu_per_op_without_the_shared_yardstick_says_what_is_missing(tmp_path):
    """tools/cpu_per_op.py stops with one line naming the missing yardstick, exit 2."""
    env = {"PATH": "/usr/bin:/bin", "LEEKY_BENCH_DIR": str(tmp_path / "nowhere")}
    done = run_tool("cpu_per_op.py", "--variant", f"a={ROOT}", env=env, cwd=None)
    assert done.returncode == 2
    assert "yardstick is not at" in done.stderr and "Traceback" not in done.stderr


def test_cpu_per_op_rejects_a_variant_that_is_not_a_directory(tmp_path):
    done = run_tool("cpu_per_op.py", "--variant", "nodir", env=None, cwd=None)
    assert done.returncode == 2
    assert "NAME=DIRECTORY" in done.stderr and "Traceback" not in done.stderr


def test_cpu_per_op_reads_this_process_cpu_seconds(cpu_per_op):
    """CPU per op is utime + stime from /proc/PID/stat: it never goes backwards."""
    mod = cpu_per_op
    first = mod.proc_cpu_s(os.getpid())
    sum(i * i for i in range(200_000))  # some CPU work
    second = mod.proc_cpu_s(os.getpid())
    assert 0 <= first <= second
    assert abs(second - sum(os.times()[:2])) < 0.5
    assert 0 <= mod.proc_cpu_s(os.getpid(), os.getpid()) <= mod.proc_cpu_s(os.getpid())


def test_jsonrpc_parse_bench_prints_one_line_per_round():
    done = run_tool("jsonrpc_parse_bench.py", "--n", "5", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("shared decoder" in line for line in lines)


def test_cpu_per_op_splits_kernel_time_from_user_time(cpu_per_op):
    """The kernel share it reports is stime alone: never more than the total."""
    mod = cpu_per_op
    user, system = mod.proc_user_sys_s(os.getpid())
    assert user >= 0 and system >= 0
    assert abs(user - os.times()[0]) < 0.5 and abs(system - os.times()[1]) < 0.5
    assert system <= mod.proc_cpu_s(os.getpid())


@pytest.mark.parametrize("guarded", [False, True])
def test_get_path_bench_serves_every_get_and_prints_the_cpu_per_get(guarded):
    """It checks each answer it produced (one 200 with the value per request) and prints µs."""
    done = run_tool(
        "get_path_bench.py", "--batches", "3", "--clients", "4", *(["--guarded"] if guarded else [])
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(" us per get (best of 5)\n")
    assert float(done.stdout.split()[0]) > 0


def test_watch_fanout_bench_prints_the_cpu_per_event():
    done = run_tool("watch_fanout_bench.py", "--watchers", "3", "--events", "5", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 watchers: ") and "us per event" in done.stdout


def test_lock_steps_without_the_shared_yardstick_says_what_is_missing(tmp_path):
    """tools/lock_steps.py stops with one line naming the missing yardstick."""
    done = run_tool("lock_steps.py", "--bench-dir", str(tmp_path / "nowhere"))
    assert done.returncode != 0
    assert "the shared yardstick" in done.stderr and "Traceback" not in done.stderr


def test_watch_fanout_bench_measures_the_client_side_too():
    done = run_tool(
        "watch_fanout_bench.py",
        *("--side", "client", "--watchers", "3", "--events", "5", "--rounds", "2"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 watchers: ") and "us per event" in done.stdout


def test_txn_steps_bench_prints_each_steps_cpu_per_txn():
    done = run_tool("txn_steps_bench.py", "--count", "5", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert "parse and check" in done.stdout and "apply with events" in done.stdout


@pytest.mark.parametrize("side", ["node", "client"])
def test_watch_fanout_bench_measures_batched_acks(side):
    """--batched-acks: boxes that ask no answer, WatchAck every ack_every events."""
    done = run_tool(
        "watch_fanout_bench.py",
        *("--batched-acks", "--side", side, "--watchers", "3", "--events", "70", "--rounds", "1"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 watchers: ") and "us per event" in done.stdout


def test_txn_frontend_bench_prints_each_ends_cpu_per_txn():
    """The node's and the client's front ends answer every txn; one line of figures."""
    done = run_tool("txn_frontend_bench.py", "--count", "5", "--rounds", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("node ") and " client " in done.stdout
    assert done.stdout.endswith("us per txn (best)\n")
