"""Learning benchmarks: does compiling feedback give users what they want?

They drive the real proxy and compiler the way a team would (simulated users asking, rating and
commenting; preference-data files; the sidecar's promotion rule), so a figure here measures the
product and not a copy of it. See ``bench/learning/README.md``.
"""
