"""``python -m edgeguard``: the command line (see :mod:`edgeguard._cli`)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
