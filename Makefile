# The chat platform. Two commands: `make run` and `make test`. See README.md.
# The inner loop: `make test-fast` (unit and all-in-one tests, under 2 minutes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
GATEWAYS ?= 3
CLUSTER_PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: run cluster cluster-down migrate test test-fast screenshots check fmt setup-system bench \
	bench-smoke chaos clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## all-in-one: one process, SQLite under var/, in-process bus, on http://$(HOST):$(PORT)
run: venv
	mkdir -p var
	CHAT_HOST=$(HOST) CHAT_PORT=$(PORT) $(PY) -m services all

migrate: venv
	$(PY) -m services migrate

## the scaled mode on this machine: gunicorn auth, $(GATEWAYS) uvicorn gateways, history, nginx
cluster: venv
	@test -x /usr/sbin/nginx || { echo "nginx missing: run 'make setup-system' (as root)"; exit 1; }
	GATEWAYS=$(GATEWAYS) PORT=$(CLUSTER_PORT) $(PY) -m tools.cluster up

cluster-down:
	$(PY) -m tools.cluster down

## system packages from Debian (idempotent): nginx for the load balancer, chromium for browser tests
setup-system:
	@missing=""; \
	for p in nginx-light chromium; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "system packages present"; fi

## the complete suite, what CI runs (.ci/run: CI=true make test): unit, all-in-one, scaled,
## fault-injection, browser and benchmark-smoke tests (~14 min on 2 cores), in two pytest-xdist
## workers that take whole files (a file's tests share its fixtures and run in order)
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## the inner loop (under 2 min): unit and all-in-one tests. Leaves out every test marked
## `scaled` (the scaled half of a both-modes test, the MariaDB half of a both-databases test,
## real RabbitMQ/MariaDB, clusters, private nodes, the fault suite, the bench smoke run) and
## the `browser` tests (Chromium)
test-fast: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not scaled and not browser" $(PYTEST_ARGS)

## refresh the committed screenshots in docs/screenshots/ (the browser tests on the scaled
## mode; a plain test run writes its screenshots to a temporary directory)
screenshots: venv
	CHAT_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest -q \
	  tests/browser/test_chat_browser.py $(PYTEST_ARGS)

check: venv
	$(VENV)/bin/ruff format --check services tests tools bench
	$(VENV)/bin/ruff check services tests tools bench
	$(VENV)/bin/mypy services

fmt: venv
	$(VENV)/bin/ruff format services tests tools bench
	$(VENV)/bin/ruff check --fix services tests tools bench

clean:
	rm -rf var $(VENV)

## benchmarks (issue 8): the scaled mode on this machine vs its ceilings and a peer, ~17 min on 2 cores;
## writes docs/benchmarks/results.{json,md} and PNG plots. Needs the local RabbitMQ and MariaDB.
bench: venv
	$(PY) -m bench.run --out docs/benchmarks

## the same harness with tiny sizes, into a temp dir (runs in `make test` via tests/bench)
bench-smoke: venv
	out=$${BENCH_OUT:-$$(mktemp -d /tmp/chat-bench-smoke.XXXXXX)} && \
	  $(PY) -m bench.run --smoke --out $$out && echo "results in $$out"

## the long fault-injection soak: tests marked `chaos` in tests/faults (private RabbitMQ and
## MariaDB nodes started by the tests; ~10 min). CHAT_SOAK_SECONDS / CHAT_SOAK_CLIENTS tune it.
chaos: venv
	CHAT_CHAOS=1 CHAT_RELIABILITY_DIR=$(CURDIR)/var/reliability \
	  $(PY) -m pytest -q -rA -m chaos tests/faults $(PYTEST_ARGS)
