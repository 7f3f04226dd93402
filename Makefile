# wslb: every target sets up what it needs and can be run again.
PYTHON ?= python3
VENV ?= .venv
NPM ?= npm
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test unit demo demo-basic bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml examples/chat/package-lock.json
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wslb needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	cd examples/chat && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: venv
	$(BIN)/pytest -q tests/unit

demo: venv
	$(BIN)/python examples/chat/demo.py

demo-basic: venv
	$(BIN)/python examples/basic/demo.py

bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
