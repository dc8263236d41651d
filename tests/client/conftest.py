"""Make the API test fakes (tests/api/kvfakes.py) importable from the client tests."""

import sys
from pathlib import Path

_API_TESTS = str(Path(__file__).resolve().parent.parent / "api")
if _API_TESTS not in sys.path:
    sys.path.insert(0, _API_TESTS)
