"""``python -m leeky_twisted.chaos``: see :func:`leeky_twisted.chaos.runner.main`."""

import sys

from leeky_twisted.chaos.runner import main

sys.exit(main())
