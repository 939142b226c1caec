# The two commands: `make run` and `make test`. Each installs what it needs into .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PORT ?= 8080
# make run: the local PostgreSQL when one answers at DATABASE_URL, else an embedded one; its database
# is created afresh at each run (devtools/database.py), and make reset drops it.
run reset: export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/commons_users
run: export JWT_SECRET ?= local-development-secret-not-for-production

.PHONY: run reset test test-long lint install bench bench-tools edge-tools pooler-tools browser-tools clean

# The benchmarks' peers (bench/peers/README.md) live in a virtualenv of their own.
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

$(PEERS_STAMP): bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -r bench/peers/requirements.txt
	touch $@

# The load generators, from Debian's packages, when they are missing.
bench-tools:
	@command -v wrk >/dev/null && command -v pgbench >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq wrk postgresql-client >/dev/null)

# nginx, the TLS proxy in front of the API in tests/deploy/test_as_deployed.py, from Debian's
# packages when it is missing.
edge-tools:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null)

# PgBouncer, in front of the test cluster's primary in tests/cluster.py, from Debian's packages when
# it is missing. The package would start a system pgbouncer on port 6432: a policy-rc.d that denies
# it (unless one is already there) during the install, and the service stopped after.
pooler-tools:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || ( \
		policy=/usr/sbin/policy-rc.d; ours=; \
		test -e $$policy || { printf '#!/bin/sh\nexit 101\n' >$$policy && chmod +x $$policy && ours=1; }; \
		apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; status=$$?; \
		test -z "$$ours" || rm -f $$policy; \
		test ! -x /etc/init.d/pgbouncer || /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true; \
		exit $$status)

# Chromium, the browser of tests/api/test_docs_in_a_browser.py (driven by Playwright, which downloads
# no browser of its own), from Debian's packages when it is missing.
browser-tools:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

run: $(STAMP)
	$(BIN)/python -m devtools.run --port $(PORT)

# The database of make run (only when make run created it, or it is the default one) and the
# embedded server's .run/: the next make run starts from scratch.
reset: $(STAMP)
	$(BIN)/python -m devtools.database
	rm -rf .run

# Lint, format, types and import rules (pyproject.toml configures each), then the tests.
lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check
	$(BIN)/mypy
	$(BIN)/lint-imports

# The tests in parallel (pytest-xdist): TEST_WORKERS processes, each with databases, a broker and a
# replication cluster of its own (tests/conftest.py, which also puts the longest tests first). A
# worker takes one test at a time (--maxschedchunk 1): by default each takes a long run of
# consecutive tests, and one of them would get every long test.
TEST_WORKERS ?= 3
test: lint bench-tools edge-tools pooler-tools browser-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxschedchunk 1

# The longer forms of the fault tests (docs/reliability.md); not part of `make test`.
test-long: $(STAMP) edge-tools pooler-tools browser-tools
	$(BIN)/python -m pytest -m long

# Every benchmark beside its baselines; writes bench/RESULTS.md (bench/README.md).
bench: $(STAMP) $(PEERS_STAMP) bench-tools
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(PEERS) .run .bench
