"""`python -m hyphal` runs the CLI."""

import sys

from hyphal.cli import main

sys.exit(main())
