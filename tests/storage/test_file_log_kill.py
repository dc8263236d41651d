"""SIGKILL a process in the middle of appending; every acknowledged entry must survive."""

from __future__ import annotations

import os
import random
import select
import subprocess
import sys
import time
from pathlib import Path

from leeky_twisted.storage.files import FileLogStore

CHILD = Path(__file__).with_name("log_writer_child.py")
ROUNDS = 6
LINE_TIMEOUT = 20.0


def payload(index: int, term: int) -> bytes:
    return f"{index}:{term}:".encode().ljust(100, b".")


def read_until_acks(process: subprocess.Popen[bytes], wanted: int) -> tuple[list[str], bytes]:
    """Read whole stdout lines until ``wanted`` acks arrived; return them and any partial line."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + LINE_TIMEOUT
    for _ in range(100_000):
        if sum(line == "ack" for line in lines) >= wanted:
            break
        assert time.monotonic() < deadline, f"child too slow; output so far: {lines[-5:]}"
        ready, _, _ = select.select([fd], [], [], LINE_TIMEOUT)
        assert ready, "child printed nothing"
        chunk = os.read(fd, 65536)
        assert chunk, f"child exited early with {process.wait()}"
        *complete, pending = (pending + chunk).split(b"\n")
        lines.extend(line.decode() for line in complete)
    return lines, pending


def apply_lines(model: list[int], lines: list[str]) -> tuple[int, int, int] | None:
    """Apply acknowledged batches to ``model`` (terms by index - 1); return the batch in flight."""
    in_flight: tuple[int, int, int] | None = None
    for line in lines:
        words = line.split()
        if words[0] == "ready":
            assert (int(words[1]), int(words[2])) == (1, len(model))
        elif words[0] == "begin":
            in_flight = (int(words[1]), int(words[2]), int(words[3]))
        else:
            assert words == ["ack"] and in_flight is not None
            start, count, term = in_flight
            model[start - 1 :] = [term] * count
            in_flight = None
    return in_flight


def allowed(model: list[int], in_flight: tuple[int, int, int] | None, recovered: list[int]) -> bool:
    """Tell whether ``recovered`` terms are a state a crash at this point may leave."""
    if in_flight is None:
        return recovered == model
    start, count, term = in_flight
    kept = start - 1
    if len(recovered) >= kept and recovered == model[: len(recovered)]:
        return True  # the batch's suffix truncation had not (fully) happened yet
    written = recovered[kept:]
    in_batch = written == [term] * len(written) and len(written) <= count
    return recovered[:kept] == model[:kept] and in_batch


def test_sigkill_during_appends_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """Kill a writer at random points: the log reopens as a valid prefix holding every ack."""
    rng = random.Random(20240611)
    model: list[int] = []
    for round_number in range(ROUNDS):
        wanted = rng.randint(3, 60)
        argv = [sys.executable, str(CHILD), str(tmp_path), str(rng.getrandbits(32))]
        argv.append(str(round_number * 100_000))
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines, partial = read_until_acks(process, wanted)
            process.kill()
            process.wait(timeout=LINE_TIMEOUT)
            assert process.stdout is not None
            rest = partial + process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=LINE_TIMEOUT)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        *complete, _torn_line = rest.split(b"\n")
        lines.extend(line.decode() for line in complete)
        in_flight = apply_lines(model, lines)
        store = FileLogStore(tmp_path)
        try:
            assert store.first_index() == 1
            recovered = store.entries(1, store.last_index() + 1)
        finally:
            store.close()
        assert [e.index for e in recovered] == list(range(1, len(recovered) + 1))
        assert all(e.data == payload(e.index, e.term) for e in recovered)
        terms = [e.term for e in recovered]
        assert allowed(model, in_flight, terms), (round_number, in_flight, len(model), len(terms))
        model[:] = terms
