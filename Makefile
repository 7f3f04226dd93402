# wslb: every target sets up what it needs and can be run again.
PYTHON ?= python3
VENV ?= .venv
NPM ?= npm
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test unit demo demo-basic bench image manifests clean

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

# The container image localhost/wslb:dev (Containerfile) with buildah, on a Debian base made
# with mmdebstrap and wheels built here: no registry needed (deploy/image/build.sh). As root.
image: venv
	WHEEL_PYTHON=$(BIN)/python deploy/image/build.sh

# deploy/manifests/wslb.yaml: the Helm chart rendered as `helm template` renders it
# (tools/helm-template: Go's text/template and sprig, from Debian's golang-go and
# golang-github-masterminds-sprig-dev; no helm binary exists in Debian)
manifests:
	{ echo "# Rendered from deploy/helm/wslb by make manifests: edit the chart, not this file."; \
	  "$$(sh tools/helm-template/build.sh)" --namespace wslb -f deploy/manifests/values.yaml \
	  wslb deploy/helm/wslb; } > deploy/manifests/wslb.yaml.tmp
	mv deploy/manifests/wslb.yaml.tmp deploy/manifests/wslb.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
