# LLM Internals, From Scratch — every command a learner, an instructor or CI needs.
# `make lab` and `make test` set everything up first (a .venv here), and are safe to run again.
SHELL := /bin/bash
PYTHON ?=
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

# The course kernel (labkit/course/kernel.py): its kernel spec carries the variables above, so JupyterLab,
# VS Code, nbval and `make execute` all run the notebooks with them, with or without make.
KERNEL := llm-internals
# The Chinese edition notebooks/zh/ is generated from the English notebooks (code and outputs identical) and
# is never executed on its own: tests/test_zh.py proves the parity, so nbval skips it.
NBVAL := --nbval --nbval-kernel-name $(KERNEL) --nbval-sanitize-with tests/nbval_sanitize.cfg \
         --nbval-cell-timeout=300 --nbval-kernel-startup-timeout=120 --ignore=notebooks/zh
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
# `make lab`: the printed URL opens chapter 00; new notebooks start in the course kernel.
LAB_ARGS := --ip=127.0.0.1 --no-browser --LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb \
            --MappingKernelManager.default_kernel_name=$(KERNEL)
# A .venv whose Python no longer runs, or is not 3.11 (made by another Python), is rebuilt by scripts/setup.sh.
VENV_PY := $(shell $(PY) -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)

.PHONY: help setup lab test lint unit nbval execute profile student grade data manifest doctor site browser \
        clean distclean FORCE zh zh-check lab-zh

help:
	@echo "make lab      set up (first time) and open the course in JupyterLab (make lab-zh: 中文版)"
	@echo "make test     set up (first time) and run every test: unit tests + strict nbval on all notebooks"
	@echo "make unit     unit tests only            make nbval    notebooks only"
	@echo "make lint     check labkit's layers (import-linter contract in pyproject.toml)"
	@echo "make execute  re-run notebooks in place in fresh kernels (NB=notebooks/03_attention.ipynb for one)"
	@echo "make profile  run the whole course headless: wall time and peak memory per notebook"
	@echo "make student  learner copies of every notebook in student/ and student/zh/ (solutions and lab tasks stubbed)"
	@echo "make grade    SUBMISSIONS=dir OUT=dir: run each learner's notebooks, score the lab tasks (docs/teaching.md)"
	@echo "make data     regenerate the shipped data and data/MANIFEST      make doctor  check this machine"
	@echo "make site     the course website from the stored outputs: build/site/html/index.html"
	@echo "make zh       the Chinese edition notebooks/zh/ from notebooks/zh/translations/ (make zh-check: all current?)"
	@echo "make clean    remove generated files      make distclean  also remove .venv (start over)"

setup: $(STAMP)

# scripts/setup.sh: Python 3.11 check, .venv (rebuilt when made by another Python), torch's CPU build on a
# Linux machine without an NVIDIA GPU, the pinned install, the course kernel (tests/test_setup.py tests it).
$(STAMP): pyproject.toml $(if $(filter 3.11.%,$(VENV_PY)),,FORCE)
	@PYTHON="$(PYTHON)" VENV="$(VENV)" bash scripts/setup.sh
	@touch $@

FORCE:

lab: setup
	$(VENV)/bin/jupyter lab $(LAB_ARGS) $(ALLOW_ROOT) --ServerApp.root_dir=$(CURDIR)

# The Chinese edition (中文版): the same, opening notebooks/zh/00_start_here.ipynb.
lab-zh: setup
	$(VENV)/bin/jupyter lab $(subst notebooks/00_start_here,notebooks/zh/00_start_here,$(LAB_ARGS)) $(ALLOW_ROOT) \
	    --ServerApp.root_dir=$(CURDIR)

# Both cores: pytest-xdist runs two files at a time (a notebook's cells stay together in one worker).
test: setup lint browser
	$(PY) -m pytest -q --timeout=900 -n 2 --dist loadfile --durations=25 tests notebooks $(NBVAL)

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

# Both editions: student/ (English) and student/zh/ (中文: headers, hints and check messages in Chinese).
student: setup
	$(PY) -m labkit student notebooks student
	$(PY) -m labkit student notebooks/zh student/zh

grade: setup
	@test -n "$(SUBMISSIONS)" && test -n "$(OUT)" || { echo "usage: make grade SUBMISSIONS=<one folder per learner> OUT=<results folder>"; exit 2; }
	$(PY) -m labkit grade $(SUBMISSIONS) --out $(OUT)

doctor: setup
	$(PY) -m labkit doctor

manifest: setup
	$(PY) -m labkit manifest --write

# Every shipped data file, regenerated in order (about 1.5 CPU-hours; data/README.md gives each command's cost).
# The base model comes before the task and the preference pairs, which are built from it.
data: setup
	$(PY) -m labkit.datasets.shakespeare
	$(PY) -m labkit.experiments.tokenizer
	$(PY) -m labkit.experiments.pretrain
	$(PY) -m labkit.experiments.draft
	$(PY) -m labkit.experiments.serving
	$(PY) -m labkit manifest --write
	$(PY) -m labkit.datasets.task generate
	$(PY) -m labkit.experiments.finetune --jobs 2
	$(PY) -m labkit.experiments.preferences pairs
	$(PY) -m labkit.experiments.preferences frontier
	$(PY) -m labkit.experiments.evaluation
	$(PY) -m labkit.experiments.world --seed 0 --out data/world --embed
	$(PY) -m labkit manifest --write
	$(PY) -m labkit.experiments.reader
	$(PY) -m labkit manifest --write
	$(PY) -m labkit.experiments.hard_negatives
	$(PY) -m labkit.experiments.advanced_rag
	$(PY) -m labkit.experiments.dialogue
	$(PY) -m labkit.experiments.tools --jobs 2
	$(PY) -m labkit manifest --write

# The Chinese edition (中文版, labkit/course/zh.py): notebooks/zh/NN_topic.ipynb = the English notebook with its
# Markdown cells translated from notebooks/zh/translations/NN_topic.yaml; then each chapter's progress.
# `make zh-check` fails on a missing or stale translation or a generated notebook that is not current.
zh: setup
	$(PY) -m labkit zh build
	$(PY) -m labkit zh status

zh-check: setup
	$(PY) -m labkit zh check

# The course website (labkit/course/site.py): Sphinx + MyST-NB from the stored outputs, nothing executed.
site: setup
	$(PY) -m labkit.course.site

# Headless Chromium for the browser tests, from the system's packages when missing (scripts/install_browser.sh).
browser:
	@bash scripts/install_browser.sh

clean:
	rm -rf student .pytest_cache build

distclean: clean
	rm -rf $(VENV)
