# The two commands: `make run` serves chunkd on an embedded PostgreSQL, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WEB := service/web

.PHONY: run test lint install clean

run: install
	$(BIN)/chunkd serve

# The suite on XDIST workers (tests mostly wait on sockets and subprocesses); XDIST=0 runs it in one process.
XDIST ?= 4
test: install
	$(BIN)/pytest -q -n $(XDIST) $(PYTEST_ARGS)

# ruff and mypy as configured in pyproject.toml; the format check last, so the others always report.
lint: $(VENV)/.installed
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/ruff format --check

install: $(VENV)/.installed $(WEB)/node_modules/.package-lock.json

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

# The web UI's browser code from npm, pinned by service/web/package-lock.json, into the git-ignored
# service/web/node_modules (chunkd serves it from there). Without npm chunkd still serves the pages,
# which say in one line how to get it.
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	@if command -v npm >/dev/null; then cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the web UI's upload client is not installed (install nodejs and npm, then make install)"; fi

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
