"""``python -m uvav.aggregate``, moved to :mod:`uvav.reporting.aggregate`: it keeps the command and old imports."""

from uvav.reporting.aggregate import *  # noqa: F403
from uvav.reporting.aggregate import main

if __name__ == "__main__":
    import sys

    from uvav.errors import exit_code_of

    sys.exit(exit_code_of(main))
