"""``python -m subquad`` runs the command line."""

import sys

from subquad.cli import main

sys.exit(main())
