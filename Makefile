# Penguin Classification API — every task a developer or CI runs, in one place.
# `make run` and `make test` work from a clean clone with only Python 3.11 and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PORT   ?= 8080

.DEFAULT_GOAL := help
.PHONY: help install install-dev run test lint format train evaluate

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

# --- environments -------------------------------------------------------------
# Stamp files make re-runs instant until pyproject.toml changes.
$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[dev,train]'
	@touch $@ $(VENV)/.run-installed

install: $(VENV)/.run-installed ## create .venv with what the service needs

install-dev: $(VENV)/.dev-installed ## create .venv with the service, training and test tools

# --- the two commands ---------------------------------------------------------
run: install ## serve the shipped model on :$(PORT)
	PORT=$(PORT) $(BIN)/penguin-api serve

test: install-dev browser-deps ## install everything the tests need and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/pytest

# --- development --------------------------------------------------------------
lint: install-dev ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# --- the model ----------------------------------------------------------------
DATA ?= ../shared/data
train: install-dev ## rebuild model/ from the photos in $(DATA)
	$(BIN)/penguin-api train --data $(DATA) --out model

EVAL_DATA ?= $(DATA)/penguins/val
EVAL_NEG  ?= $(DATA)/not_penguin/val
EVAL_OUT  ?= reports/evaluate
evaluate: install-dev ## evaluate the shipped model on $(EVAL_DATA), report in $(EVAL_OUT)
	$(BIN)/penguin-api evaluate --data $(EVAL_DATA) --negatives $(EVAL_NEG) --out $(EVAL_OUT)

# --- upload page: browser tests -------------------------------------------------
# tests/test_web*.py drive the page in Debian's Chromium through Playwright (Playwright's
# own browser download is never used). Installed with apt when missing; needs root.
CHROMIUM ?= /usr/bin/chromium
.PHONY: browser-deps
browser-deps: ## install Debian's chromium for the browser tests when it is missing (apt, root)
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "browser-deps: $(CHROMIUM) missing and not root; the browser tests will skip." \
	       "Install it with: sudo apt-get install chromium chromium-driver" >&2; exit 0; fi; \
	apt-get -o DPkg::Lock::Timeout=600 update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
	  --no-install-recommends chromium chromium-driver

# --- reliability: fuzzing and dependency audit ----------------------------------
# `make test` runs both too, bounded (a few hundred fuzz inputs per test); these run
# them alone, the fuzz at length.
FUZZ_EXAMPLES ?= 20000
.PHONY: fuzz audit
fuzz: install-dev ## fuzz the image decoder with $(FUZZ_EXAMPLES) mutated images per test
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider -q tests/test_fuzz_imaging.py

audit: install-dev ## pip-audit the locked dependencies (requirements.lock)
	$(BIN)/pytest -p no:cacheprovider -q tests/test_supply_chain.py
