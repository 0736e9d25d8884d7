"""speclearn's benchmarks: `performance/` (what the proxy adds to a request) and `learning/`
(whether compiling feedback gives users what they want).

Why a package of the checkout and not a test: each benchmark runs as
``python -m bench.<folder>.<name>`` from the repository root against the proxy and the compiler
as they are in the checkout, takes minutes to hours, and reports figures people read (their
current values and commands: ``bench/README.md``). ``stats`` is shared by both folders.
"""
