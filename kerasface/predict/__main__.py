"""`python -m kerasface.predict ...`: see kerasface.predict.cli."""

import sys

from kerasface.predict.cli import main

if __name__ == "__main__":
    sys.exit(main())
