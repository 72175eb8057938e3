# The two commands of the README: `make run` and `make test`. Each builds the virtual
# environment from nothing when it is missing or out of date.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/pex serve

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not postgres and not gunicorn and not browser and not slow"

# The linter and the type checker over the whole tree (`make test` runs them too, in
# tests/test_code_quality.py). `$(BIN)/ruff check --fix PATH` applies ruff's safe fixes.
lint: $(STAMP)
	$(BIN)/ruff check pex bench tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .mypy_cache .ruff_cache test-artifacts
