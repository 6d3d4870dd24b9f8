import sys

from .cli.console import main

if __name__ == "__main__":
    sys.exit(main())
