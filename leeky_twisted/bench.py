"""Moved to :mod:`leeky_twisted.ops.bench`: the old name still imports."""

from leeky_twisted.ops.bench import (  # noqa: F401
    BenchResult,
    Progress,
    run_bench,
)
