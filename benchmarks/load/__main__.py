"""``python -m benchmarks.load``: the parent, or with ``--only <path>`` one child."""

import sys

from benchmarks.load.cli import main

sys.exit(main())
