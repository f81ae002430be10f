# The two commands: `make run` serves chunkd on an embedded PostgreSQL, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint install clean

run: $(VENV)/.installed
	$(BIN)/chunkd serve

# The suite on XDIST workers (tests mostly wait on sockets and subprocesses); XDIST=0 runs it in one process.
XDIST ?= 4
test: $(VENV)/.installed
	$(BIN)/pytest -q -n $(XDIST) $(PYTEST_ARGS)

# ruff and mypy as configured in pyproject.toml; the format check last, so the others always report.
lint: $(VENV)/.installed
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/ruff format --check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
