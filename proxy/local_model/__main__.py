"""`python -m proxy.local_model ...`: the model server child the supervisor starts."""

import sys

from .server import _main

if __name__ == "__main__":
    sys.exit(_main())
