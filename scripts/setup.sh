#!/usr/bin/env bash
# Idempotent set-up of a development/CI environment: a virtual environment in .venv with
# napari-seg-box (editable) and its test dependencies. Re-running it only reinstalls when
# pyproject.toml changed. Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.napari-seg-box-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  echo "[setup] installing napari-seg-box and its dependencies into .venv (first run: several minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch + torchvision builds that work together (smp needs torchvision through timm).
  case "$(uname -m)" in
    x86_64) .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
    aarch64) .venv/bin/python -m pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *) .venv/bin/python -m pip install -q torch torchvision ;;
  esac
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[testing]"
  touch "$stamp"
fi
