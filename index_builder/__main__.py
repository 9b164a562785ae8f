"""Entry point for `python -m index_builder`."""

import sys

from index_builder.cli import main

sys.exit(main())
