"""Plot tests need matplotlib (the ``plots`` extra; CI installs it with ``test``)."""

import pytest

pytest.importorskip("matplotlib")
