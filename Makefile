# make train : create .venv on first use, install from requirements.lock, train the default
# make test  : the same venv plus requirements-test.lock (torch CPU, transformers, wandb),
#              then the test suite (8 simulated CPU devices)
# ACCEL=cpu|cuda|tpu picks the JAX build (default: cuda where nvidia-smi exists, else cpu).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ACCEL  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
JAX_VERSION := $(shell sed -n 's/^jax==//p' requirements.lock)
STAMP  := $(VENV)/.installed-$(ACCEL)

.PHONY: install train test test-fast test-heavy bench bench-accel lock clean-venv

install: $(STAMP)

$(STAMP): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
ifeq ($(ACCEL),cuda)
	$(BIN)/python -m pip install --quiet "jax[cuda12]==$(JAX_VERSION)"
endif
ifeq ($(ACCEL),tpu)
	$(BIN)/python -m pip install --quiet "jax[tpu]==$(JAX_VERSION)"
endif
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python run.py

# The test extra (torch CPU, transformers, wandb) on top, once per lock file change.
TEST_STAMP := $(VENV)/.installed-test
$(TEST_STAMP): requirements-test.lock $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-test.lock
	touch $(TEST_STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not heavy" tests

# The edit-test loop: everything but the subprocess, whole-config and longest-compiling tests.
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow and not heavy" tests

# The full-size recipe networks (minutes of compilation each) and the gs:// workdir runs
# against the GCS emulator; CI runs it after `make test`.
test-heavy: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist load -m heavy tests

# Side-by-side benchmarks; installs the PyTorch reference (CPU build) into the venv.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m benchmarks.run

# On a GPU/TPU host (ACCEL=cuda|tpu): GPT-2 124M MFU and ResNet-50 images/s through the real
# train step; MFU_ARGS="--peak_tflops N" for a chip benchmarks/mfu.py does not know.
bench-accel: $(STAMP)
	$(BIN)/python -m benchmarks.mfu $(MFU_ARGS)

# Re-pin after changing pyproject.toml: resolves into a scratch venv and freezes it.
# requirements.lock: the runtime dependencies only (what `make train` installs);
# requirements-test.lock: what the test extra adds on top of them (`make test` installs it
# after requirements.lock), resolved with the runtime pins held fixed; its leading
# comment lines are kept.
LOCK_VENV := /tmp/strata-lock
FREEZE    := $(LOCK_VENV)/bin/pip freeze --exclude-editable | grep -v '^strata\b'
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet .
	$(FREEZE) > requirements.lock
	$(LOCK_VENV)/bin/pip install --quiet ".[test]" -c requirements.lock
	{ grep '^#' requirements-test.lock; $(FREEZE) | grep -vxFf requirements.lock; } > requirements-test.lock.new
	mv requirements-test.lock.new requirements-test.lock

clean-venv:
	rm -rf $(VENV)
