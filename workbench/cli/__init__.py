"""The command line (`workbench ...`): the one wing that may reach `analyses`, and
only inside the commands that draw.

`workbench.cli:main` is the console script's entry point.
"""

from .console import main

__all__ = ["main"]
