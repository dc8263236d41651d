"""``python -m leeky_twisted.executor --data-dir DIR --port PORT``."""

from leeky_twisted.executor.tap import main

if __name__ == "__main__":
    main()
