# The two commands: `make run` and `make test`. Each installs what it needs into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PORT ?= 8080
# make run: the local PostgreSQL when one answers at DATABASE_URL, else an embedded one.
run: export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/commons_users
run: export JWT_SECRET ?= local-development-secret-not-for-production

.PHONY: run test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service.local --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .run
