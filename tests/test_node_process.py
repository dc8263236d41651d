"""What the twistd plugin sets up in the node's own process."""

from __future__ import annotations

import subprocess
import sys


def test_the_node_process_collects_garbage_less_often():
    """makeService tunes the collector of the node's process: young collections every
    GC_YOUNG_THRESHOLD allocations, the start-up heap frozen (run in a child process)."""
    code = (
        "import gc, tempfile\n"
        "from leeky_twisted.server import tap\n"
        "o = tap.Options()\n"
        "d = tempfile.mkdtemp()\n"
        "o.parseOptions(['--id', '1', '--peers', '1=127.0.0.1:1', '--data-dir', d,"
        " '--client-port', '0', '--http-port', '0'])\n"
        "tap.makeService(o)\n"
        "print(gc.get_threshold()[0] == tap.GC_YOUNG_THRESHOLD, gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr
