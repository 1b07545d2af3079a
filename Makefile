# Two commands do all set-up on a fresh machine:
#   make quickstart   install everything, then run plans/quickstart.toml (reports/<run_id>/)
#   make test         install everything (+ Debian chromium for browser tests), then run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup quickstart test test-fast browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/workbench run plans/quickstart.toml

browser:
	bash scripts/install_browser.sh

test: setup browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser" -p no:cacheprovider

clean:
	rm -rf .workbench reports/*/ test-artifacts
