# Two commands: `make run` (the app on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast install bench lint clean-var load load-smoke screenshots

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: install
	./scripts/run.sh

test: install
	./scripts/test.sh

lint: install
	$(VENV)/bin/ruff check .
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
