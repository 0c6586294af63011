"""``python -m etl_assets.cli``: the console script."""

import sys

from etl_assets.cli import main

sys.exit(main())
