"""``python -m criticgym`` runs the command line."""

import sys

from criticgym.cli import main

sys.exit(main())
