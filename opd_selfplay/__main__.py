"""`python -m opd_selfplay` is the `opd` command."""

import sys

from opd_selfplay.cli import main

sys.exit(main())
