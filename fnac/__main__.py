"""`python -m fnac` is the `fnac` command."""

import sys

from fnac.cli import main

sys.exit(main())
