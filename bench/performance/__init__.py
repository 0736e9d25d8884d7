"""Overhead benchmark for speclearn: mock upstream, open-loop load generator, comparison harness.

Why a package of its own: the benchmark must run the same way on a developer box and in CI,
against three targets (the mock directly, speclearn, LiteLLM) in one process tree it controls,
so numbers taken in one run can be compared as ratios. See ``bench/performance/README.md``.
"""
