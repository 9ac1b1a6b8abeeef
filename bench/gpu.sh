#!/usr/bin/env bash
# GPU figures in a few minutes on any CUDA machine with the project installed:
#   1. the spconv CUDA path against the CPU path (pytest -m gpu),
#   2. end-to-end seconds per full-size tomogram (zarr -> CSV) with the shipped checkpoint,
#      on CUDA and, for comparison on the same machine, on its CPUs;
#   3. the same for the dense U-Net baseline (bench/gpu_dense.py).
# Usage: bash bench/gpu.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-/tmp/sparse_det_gpu}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name(0))"
"$PY" -m pytest -q -m gpu tests/test_model.py
[ -f "$OUT/project/solution.csv" ] || \
  "$PY" -m data_tools.simulate --out "$OUT/project" --runs 2 --seed 4242 --quiet
echo "== CUDA"
"$PY" bench/detector.py --project "$OUT/project" --device cuda --json "$OUT/gpu.json"
echo "== CPU ($(nproc) cores)"
"$PY" bench/detector.py --project "$OUT/project" --device cpu --threads "$(nproc)" \
  --json "$OUT/cpu.json"
echo "== dense baseline, CUDA"
"$PY" bench/gpu_dense.py --project "$OUT/project" --device cuda --json "$OUT/dense_gpu.json" \
  ${DENSE_WEIGHTS:+--weights "$DENSE_WEIGHTS"}
echo "== dense baseline, CPU ($(nproc) cores)"
"$PY" bench/gpu_dense.py --project "$OUT/project" --device cpu --threads "$(nproc)" \
  --json "$OUT/dense_cpu.json" ${DENSE_WEIGHTS:+--weights "$DENSE_WEIGHTS"}
