#!/usr/bin/env bash
# Creates the venv and installs the project. Idempotent; pip's wheel cache makes reruns quick.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip setuptools wheel
# Pinned first: an unpinned torch (even as another package's dependency) pulls a CUDA build.
"${PIP[@]}" "torch==2.13.0"
# torch-cluster ships only as source and needs torch at build time: no build isolation,
# and a distutils config that compiles two files at once (its setup ignores MAX_JOBS).
if ! "$VENV/bin/python" -c "import torch_cluster" 2>/dev/null; then
  cfg=$(mktemp --suffix=.cfg)
  printf '[build_ext]\nparallel = %s\n' "$(nproc)" > "$cfg"
  echo "building torch-cluster from source (about 5-10 minutes the first time; cached afterwards)"
  DIST_EXTRA_CONFIG="$cfg" "${PIP[@]}" --no-build-isolation "torch-cluster==1.6.3"
  rm -f "$cfg"
fi
"${PIP[@]}" -e ".[dev]"
