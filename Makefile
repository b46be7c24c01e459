# Veriscope: build, demo and test entry points.
#
#   make demo     set up .venv, start a simulated unit, scan a genuine and a counterfeit item
#   make test     set up .venv and run every check: lint, types, API lint, the test suite (first installs the
#                 Debian packages it needs, see system-deps)
#   make system-deps  install the Debian packages make test needs (apt-get, as root or through sudo)
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

.PHONY: install install-train demo test lint typecheck buflint pytest protos lock clean firmware train bench system-deps

# Debian packages make test needs beyond python3, make and git:
#   nodejs npm                 buf lint of the API contract
#   gcc-avr avr-libc           the controller firmware
#   simavr libsimavr-dev       the emulated ATmega328P the firmware tests run on
#   avrdude arduino-core-avr   Optiboot and the independent read-back of flashed images
APT_PKGS := gcc-avr avr-libc simavr libsimavr-dev avrdude arduino-core-avr

# Debian's python3 lacks ensurepip unless python3-venv is installed. Then .venv is made without pip and this
# pinned pip wheel, checked against its SHA-256, installs pip into it: no root needed.
PIP_WHEEL_URL := https://files.pythonhosted.org/packages/07/25/ee8c38ae72d66b844ce8eb9711ba905dba21ca1a8a0c960057c41cd23337/pip-26.3-py3-none-any.whl
PIP_WHEEL_SHA256 := f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13
define BOOTSTRAP_PIP
import hashlib, os, subprocess, sys, tempfile, urllib.request
url, digest = sys.argv[1], sys.argv[2]
data = urllib.request.urlopen(url, timeout=180).read()
if hashlib.sha256(data).hexdigest() != digest:
    sys.exit(f"error: {url} does not match its pinned SHA-256; not installing it")
wheel = os.path.join(tempfile.mkdtemp(), url.rsplit("/", 1)[1])
with open(wheel, "wb") as f:
    f.write(data)
subprocess.check_call([sys.executable, os.path.join(wheel, "pip"), "install", "--quiet", "--no-index", wheel])
endef
export BOOTSTRAP_PIP

install: $(STAMP)

$(STAMP): requirements.lock protos/python/pyproject.toml device/pyproject.toml host_sdk/pyproject.toml firmware_tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Veriscope needs Python >= 3.11, found " + sys.version.split()[0])'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		echo "$(PYTHON) has no ensurepip (on Debian: python3-venv is not installed); bootstrapping pip from PyPI"; \
		rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) \
		&& $(PY) -c "$$BOOTSTRAP_PIP" '$(PIP_WHEEL_URL)' '$(PIP_WHEEL_SHA256)'; } \
		|| { rm -rf $(VENV); echo "error: could not create $(VENV) with $(PYTHON)" >&2; exit 1; }
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
		$(PY) -m veriscope.training generate --data '$(TRAIN_DATA)' --genuine-items 200 --counterfeit-items 30 \
			--images-per-item 4 --seed 1; \
	fi
	$(PY) -m veriscope.training train --data '$(TRAIN_DATA)' --bundle '$(TRAIN_BUNDLE)' --epochs $(TRAIN_EPOCHS) $(TRAIN_ARGS)

firmware:
	$(MAKE) -C device/firmware OUT=$(CURDIR)/build/firmware

# Installs what is missing with apt-get: directly as root, else through sudo if it needs no password;
# otherwise it stops and prints the command to run.
system-deps:
	@missing=""; \
	command -v npm >/dev/null || missing="nodejs npm"; \
	if command -v dpkg >/dev/null; then \
		for pkg in $(APT_PKGS); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	fi; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then sudo=""; \
		elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; \
		else echo "error: make test needs these Debian packages:$$missing. Install them with:" >&2; \
			echo "  sudo apt-get install --no-install-recommends$$missing" >&2; exit 1; fi; \
		echo "installing Debian packages:$$missing"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
		&& $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: system-deps lint typecheck buflint firmware pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) protos/node_modules build .mypy_cache .pytest_cache .ruff_cache
