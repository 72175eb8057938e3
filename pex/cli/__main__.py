"""`python -m pex.cli`: the `pex` command."""

import sys

from pex.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
