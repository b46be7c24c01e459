# Veriscope: build, demo and test entry points.
#
#   make demo     set up .venv, start a simulated unit, scan a genuine and a counterfeit item
#   make test     set up .venv and run every check: lint, types, API lint, the test suite
#   make install  only set up .venv (from requirements.lock; no TensorFlow)
#   make install-train  add TensorFlow and the plotting library (requirements-train.lock), for training and its tests
#   make protos   regenerate the Python bindings of protos/veriscope/v1
#   make lock     re-resolve requirements.lock from requirements.in (and requirements-pi.lock from requirements-pi.in)
#   make train    train the demo model bundle on TRAIN_DATA, simulating specimens there first if it has none
#                 (installs TensorFlow into .venv); make train TRAIN_DATA=DIR trains on a `veriscope export`
#   make firmware build the controller firmware and its emulator into build/firmware/
#   make bench    run the benchmark suite: writes bench/results.json and docs/benchmarks.md
#                 (VERISCOPE_BENCH_QUICK=1 make bench for short runs; the serial figure needs make firmware)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
PKGS   := protos/python device host_sdk firmware_tools models
BUF    := protos/node_modules/.bin/buf
PYTEST_ARGS ?=

.PHONY: install install-train demo test lint typecheck buflint pytest protos lock clean firmware train bench

install: $(STAMP)

$(STAMP): requirements.lock protos/python/pyproject.toml device/pyproject.toml host_sdk/pyproject.toml firmware_tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Veriscope needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV); on Debian run: apt-get install python3-venv" >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		--config-settings editable_mode=compat $(foreach p,$(PKGS),-e $(p))
	@touch $(STAMP)

# TensorFlow is for training only: the device and the SDK never import it. The test suite needs it for
# the training smoke run, so `make test` installs it too.
install-train: $(TRAIN_STAMP)

$(TRAIN_STAMP): $(STAMP) requirements-train.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-train.lock
	@touch $(TRAIN_STAMP)

demo: install
	$(PY) host_sdk/examples/demo.py

protos: install
	$(PY) protos/generate.py protos/python/src

# requirements-pi.lock is the Raspberry Pi OS runtime (numpy < 2, tflite-runtime) that tests/test_tflite_runtime_fallback.py runs.
lock:
	$(PYTHON) -m pip install --quiet uv && $(PYTHON) -m uv pip compile requirements.in --universal --python-version 3.11 --generate-hashes -o requirements.lock
	$(PYTHON) -m uv pip compile requirements-pi.in --python-version 3.11 --python-platform linux --generate-hashes -o requirements-pi.lock

$(BUF): protos/package.json protos/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm is needed for buf lint; on Debian run: apt-get install nodejs npm" >&2; exit 1; }
	cd protos && npm ci --no-audit --no-fund --loglevel=error
	@touch $(BUF)

buflint: $(BUF)
	cd protos && node_modules/.bin/buf lint

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install install-train
	$(PY) -m pytest $(PYTEST_ARGS)

TRAIN_DATA ?= build/specimens
TRAIN_BUNDLE ?= models/bundles/veriscope-demo
TRAIN_EPOCHS ?= 20
TRAIN_ARGS ?=

# TRAIN_DATA holds a data set once it has images in the layout ROOT/<material>/<source>/<item_id>/*.png, whether
# simulated before or written by `veriscope export`: it is trained on as it is. Only a missing or image-less folder
# is filled with simulated specimens first (delete build/specimens to simulate afresh after changing the simulator).
train: install-train
	@if [ -n "$$(find '$(TRAIN_DATA)' -mindepth 4 -maxdepth 4 -name '*.png' -print -quit 2>/dev/null)" ]; then \
		echo "training on the data set in $(TRAIN_DATA)"; \
	else \
		echo "$(TRAIN_DATA) holds no data set: simulating specimens into it"; \
		$(PY) -m veriscope.training generate --data '$(TRAIN_DATA)' --genuine-items 80 --counterfeit-items 30 \
			--images-per-item 4 --seed 1; \
	fi
	$(PY) -m veriscope.training train --data '$(TRAIN_DATA)' --bundle '$(TRAIN_BUNDLE)' --epochs $(TRAIN_EPOCHS) $(TRAIN_ARGS)

firmware:
	$(MAKE) -C device/firmware OUT=$(CURDIR)/build/firmware

test: lint typecheck buflint firmware pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) protos/node_modules build .mypy_cache .pytest_cache .ruff_cache
