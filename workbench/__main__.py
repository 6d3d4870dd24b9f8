"""`python -m workbench ...`: the console script (`workbench.cli.console.main`)."""

import sys

from .cli.console import main

if __name__ == "__main__":
    sys.exit(main())
