"""Moved to :mod:`leeky_twisted.testing.simulation`: the old name still imports."""

import sys

from leeky_twisted.testing.simulation import (  # noqa: F401
    SUBSTEP,
    TICK,
    FaultSettings,
    SafetyViolation,
    SimResult,
    Simulation,
    main,
)

if __name__ == "__main__":
    sys.exit(main())
