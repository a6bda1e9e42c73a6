# The two commands of the README:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench full-test chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Install, then start web, workers, beat and the SMTP sink on the embedded default.
run: install
	$(BIN)/mailer serve

## Install, then lint, type-check and run the whole test suite.
test: install chromium lint
	$(BIN)/pytest

## The admin UI's browser tests drive Debian's Chromium (never a downloaded browser).
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium for the browser tests"; \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; }

lint: install
	$(BIN)/ruff check mailer workers tests benchmarks
	$(BIN)/mypy mailer workers

## The issue-sized end-to-end runs (thousands of readers); slower than CI's.
full-test: install
	MAILER_TEST_FULL=1 $(BIN)/pytest tests/workers tests/faults tests/api/test_live.py

bench: install
	$(BIN)/python -m benchmarks
