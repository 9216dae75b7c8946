# Two commands: `make run` (the app on this machine) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast install lock bench lint clean-var load load-smoke screenshots gpu-wheels

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

# The wheels an air-gapped GPU host lacks (issue 21), for bench/gpu.py there: CPython 3.12,
# manylinux x86_64, at the pins of requirements/runtime.txt and checked against its hashes, one
# version each, no dependencies. The host has torch, transformers, peft, accelerate, timm (and
# with them torchvision, huggingface-hub, regex, tqdm, requests, filelock, numpy, Pillow),
# scipy, scikit-learn, opencv and safetensors. What the six packages need beyond that list and
# the stdlib: importlib-metadata imports zipp and (Python < 3.15) lazy-importer when it is
# imported, and `pip install diffusers` asks for importlib-metadata, so both come along (45 kB);
# nothing else does. Risk, not checkable here: diffusers 0.42.1 needs huggingface-hub >= 1.32,
# which the host's transformers 5.17 may pin lower. wcwidth's C extension is optional (it falls
# back to Python). The wheels are not importable from the zip files (open_clip and lpips read
# data files next to their modules), so the host installs them: see docs/benchmarks.md,
# "GPU runbook". The folder also gets the requirements file that command uses.
GPU_WHEELS_DIR := wheels-gpu
GPU_WHEELS := diffusers open-clip-torch lpips ftfy wcwidth importlib-metadata zipp lazy-importer
gpu-wheels: install
	rm -rf $(GPU_WHEELS_DIR) && mkdir -p $(GPU_WHEELS_DIR)
	for name in $(GPU_WHEELS); do \
		awk -v name="$$name" 'index($$0, name "==") == 1 { on = 1; print; next } \
			on && /^ +--hash=/ { print; next } { on = 0 }' requirements/runtime.txt; \
	done > $(GPU_WHEELS_DIR)/requirements.txt
	test "$$(grep -c '==' $(GPU_WHEELS_DIR)/requirements.txt)" -eq $(words $(GPU_WHEELS))
	$(PY) -m pip download -q --no-deps --require-hashes --only-binary=:all: \
		--python-version 3.12 --platform manylinux2014_x86_64 --implementation cp \
		-r $(GPU_WHEELS_DIR)/requirements.txt -d $(GPU_WHEELS_DIR)
	test "$$(ls $(GPU_WHEELS_DIR)/*.whl | wc -l)" -eq $(words $(GPU_WHEELS))
	du -ch $(GPU_WHEELS_DIR)/*.whl | tail -1
