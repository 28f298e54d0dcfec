"""``python -m funcgan``: the command line."""

import sys

from funcgan.cli import main

sys.exit(main())
