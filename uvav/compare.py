"""``python -m uvav.compare``, moved to :mod:`uvav.reporting.compare`: this module keeps the command and old imports."""

from uvav.reporting.compare import *  # noqa: F403
from uvav.reporting.compare import main

if __name__ == "__main__":
    import sys

    from uvav.errors import exit_code_of

    sys.exit(exit_code_of(main))
