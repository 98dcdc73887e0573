# Everything a fresh machine needs: a venv with the project and its dev tools, the Node
# SMSC used by the SMPP tests, the zipapp. Targets are idempotent (stamp files).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The gateway alone (`make run`): the same venv, without the dev tools.
RUN_STAMP := $(VENV)/.installed-runtime
SMSC := tests/smsc
SMSC_STAMP := $(SMSC)/node_modules/.installed

.PHONY: run test lint typecheck pytest zipapp zipapp-test bench clean

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

$(SMSC_STAMP): $(SMSC)/package.json $(SMSC)/package-lock.json
	cd $(SMSC) && npm ci --no-audit --no-fund --loglevel=error
	touch $(SMSC_STAMP)

run: $(RUN_STAMP)
	$(BIN)/smsgw serve

lint: $(STAMP)
	$(BIN)/ruff check smsgw tests bench tools
	$(BIN)/ruff format --check smsgw tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(SMSC_STAMP)
	$(BIN)/pytest -m "not zipapp" -p no:cacheprovider

test: lint typecheck pytest

dist/smsgw.pyz: $(STAMP) tools/build_zipapp.py pyproject.toml README.md $(shell find smsgw -name '*.py')
	$(BIN)/python tools/build_zipapp.py

zipapp: dist/smsgw.pyz

zipapp-test: dist/smsgw.pyz $(SMSC_STAMP)
	SMSGW_TEST_PYZ=$(CURDIR)/dist/smsgw.pyz $(BIN)/pytest -m zipapp -p no:cacheprovider

bench: $(STAMP) $(SMSC_STAMP)
	$(BIN)/python bench/accept.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/smpp.py

clean:
	rm -rf $(VENV) dist build *.egg-info $(SMSC)/node_modules
