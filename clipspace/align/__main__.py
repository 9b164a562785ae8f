"""Entry script of `python -m clipspace.align`, not a library module: every verb is routed by clipspace.cli."""

import sys

from clipspace.cli import main

if __name__ == "__main__":
    sys.exit(main())
