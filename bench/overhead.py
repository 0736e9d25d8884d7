"""`python -m bench.overhead`: the short name of bench/performance/overhead.py (what the proxy adds
to a direct call, against LiteLLM in the same run)."""

import sys

from bench.performance.overhead import main

if __name__ == "__main__":
    sys.exit(main())
