"""Kept: users type ``python -m leeky_twisted.simulation --seed S``; see testing/simulation.py."""

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
