# The two commands: `make run` and `make test`. Each installs what it needs into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PORT ?= 8080
# make run: the local PostgreSQL when one answers at DATABASE_URL, else an embedded one.
run: export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/commons_users
run: export JWT_SECRET ?= local-development-secret-not-for-production

.PHONY: run test test-long lint install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m devtools.run --port $(PORT)

# Lint, format, types and import rules (pyproject.toml configures each), then the tests.
lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

# The longer forms of the fault tests (docs/reliability.md); not part of `make test`.
test-long: $(STAMP)
	$(BIN)/python -m pytest -m long

clean:
	rm -rf $(VENV) .run
