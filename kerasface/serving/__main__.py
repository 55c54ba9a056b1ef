"""python -m kerasface.serving [tensorflow_model_server flags] (see kerasface.serving.server)."""

import sys

from kerasface.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
