"""`python -m bench.live_loop`: the live loop benchmark (bench/learning/live_loop.py)."""

from bench.learning.live_loop import main

if __name__ == "__main__":
    raise SystemExit(main())
