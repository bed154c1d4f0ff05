# Set-up and checks. `make demo` and `make test` each create .venv when missing and install everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# PyTorch guesses CUDA_HOME from nvcc's location, which is wrong where nvcc is a wrapper script: prefer
# NVIDIA's conventional toolkit folder when it exists. Without a toolkit the extension is built CPU only.
ifeq ($(origin CUDA_HOME), undefined)
  ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
    export CUDA_HOME := /usr/local/cuda
  endif
endif
# Compile CUDA for Ampere and Hopper only (the GPUs this project targets): a full arch list triples CI build time.
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export MAX_JOBS ?= 2

SOURCES := pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h csrc/*.h)
STAMP := $(VENV)/.compressor-installed

.PHONY: demo test install bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel ninja

$(STAMP): $(PY) $(SOURCES)
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q --no-build-isolation -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/compressor run examples/quickstart.yaml --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(VENV)/bin/compressor bench kernels

lint: $(STAMP)
	$(VENV)/bin/ruff check compressor kernels export tests benchmarks

clean:
	rm -rf build compressor/_C*.so runs .pytest_cache
