"""`python -m scaimind.cli`: the same as the `scaimind` console script."""

import sys

from scaimind.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
