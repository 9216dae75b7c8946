# Two commands: `make run` (the app on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast install lock bench lint clean-var load load-smoke screenshots

# .venv gets the development lock: every package pinned, with the sha256 of each file, torch
# included (README, "Requirements"). Wheels only, since an sdist's build dependencies would be
# fetched without a hash check. The production image installs requirements/runtime.txt.
# Then the Python client (client/, issue 22), editable: its one dependency (requests) is in the
# lock, and nothing is fetched for it (--no-index; the lock's setuptools builds it).
$(VENV)/.installed: requirements/dev.txt client/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes --only-binary=:all: -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-index --no-build-isolation -e ./client
	$(PY) -m pip check
	touch $@

install: $(VENV)/.installed

# Rewrite the locks from requirements/*.in after editing a pin, then commit the .in and .txt
# files together. Other pins stay as they are; `make lock LOCK_ARGS=--upgrade` moves them all,
# `LOCK_ARGS="--upgrade-package NAME"` one. Resolved against PyPI for every platform.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS)
lock: install
	$(UV_COMPILE) requirements/runtime.in -o requirements/runtime.txt
	$(UV_COMPILE) requirements/dev.in -o requirements/dev.txt

run: install
	./scripts/run.sh

test: install
	./scripts/test.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean-var:
	rm -rf var/

# Everything but the slow (browser, multi-process) tests, for a quick local loop.
test-fast: install
	./scripts/test.sh -m "not slow"

# Benchmarks: outside the test suite; figures go to docs/benchmarks.md.
bench: install
	$(PY) bench/catalog_import.py
	$(PY) bench/train_step.py
	$(PY) bench/classifier_throughput.py
	$(PY) bench/generation.py

# Rating under load (locust against gunicorn on PostgreSQL): 30 dermatologists for 3 minutes,
# or 10 for 30 s as a smoke run. Not part of CI; figures go to docs/benchmarks.md.
load: install
	./scripts/load.sh

load-smoke: install
	LOAD_USERS=10 LOAD_DURATION=30s LOAD_ITEMS=60 ./scripts/load.sh

# The README's screenshots: the journey test in Chromium, then shrunk into docs/screenshots/.
screenshots: install
	./scripts/test.sh tests/journey
	$(PY) scripts/readme_screenshots.py
