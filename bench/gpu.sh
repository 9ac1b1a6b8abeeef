#!/usr/bin/env bash
# GPU figures in a few minutes on any CUDA machine with the project installed:
#   1. the CUDA tests (pytest -m gpu): spconv, the torch sparsifier and the decoding on the
#      device against the CPU, and the shipped default's picks on CUDA against the CPU's;
#   2. end-to-end seconds per full-size tomogram (zarr -> CSV) with the shipped checkpoint
#      (its rescorer and mirrors), per stage (read, sparsify, network, decode, rescore) and
#      streaming, on CUDA in fp32, one pass too, fp16 unless NO_FP16=1, and for comparison
#      on the same machine's CPUs unless NO_CPU=1;
#   3. unless NO_DENSE=1, the dense U-Net baseline on the same GPU and tomograms
#      (bench/gpu_dense.py; on the CPUs too with DENSE_CPU=1).
# Usage: bash bench/gpu.sh [OUT_DIR]   (RUNS=4 tomograms, simulated into PROJECT)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-/tmp/sparse_det_gpu}
PROJECT=${PROJECT:-/tmp/sparse_det_gpu_project}
mkdir -p "$OUT"
"$PY" -c "import torch; from sparse_det.vote_graph import torch_cluster_has_kernels as k; \
assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, \
torch.cuda.get_device_name(0), 'torch-cluster kernels on CUDA:', k(torch.device('cuda')))"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_model.py tests/test_sparsify_torch.py \
  tests/test_device_picks.py
[ -f "$PROJECT/solution.csv" ] || \
  "$PY" -m data_tools.simulate --out "$PROJECT" --runs "${RUNS:-4}" --seed 4242 --quiet
echo "== sparse, CUDA fp32 (the checkpoint's test-time setting)"
"$PY" bench/detector.py --project "$PROJECT" --device cuda --json "$OUT/gpu.json"
echo "== sparse, CUDA fp32, one pass"
"$PY" bench/detector.py --project "$PROJECT" --device cuda --tta none \
  --json "$OUT/gpu_one_pass.json"
if [ -z "${NO_FP16:-}" ]; then
  echo "== sparse, CUDA fp16"
  "$PY" bench/detector.py --project "$PROJECT" --device cuda --precision fp16 \
    --json "$OUT/gpu_fp16.json"
fi
if [ -z "${NO_DENSE:-}" ]; then
  echo "== dense baseline, CUDA"
  "$PY" bench/gpu_dense.py --project "$PROJECT" --device cuda --json "$OUT/dense_gpu.json" \
    ${DENSE_WEIGHTS:+--weights "$DENSE_WEIGHTS"}
fi
if [ -z "${NO_CPU:-}" ]; then
  echo "== sparse, CPU ($(nproc) cores)"
  "$PY" bench/detector.py --project "$PROJECT" --device cpu --threads "$(nproc)" \
    --json "$OUT/cpu.json"
fi
if [ -n "${DENSE_CPU:-}" ]; then
  echo "== dense baseline, CPU ($(nproc) cores)"
  "$PY" bench/gpu_dense.py --project "$PROJECT" --device cpu --threads "$(nproc)" \
    --json "$OUT/dense_cpu.json" ${DENSE_WEIGHTS:+--weights "$DENSE_WEIGHTS"}
fi
