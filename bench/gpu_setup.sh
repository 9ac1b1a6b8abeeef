#!/usr/bin/env bash
# Installs what bench/gpu.sh needs on a CUDA machine that cannot reach a package index but has
# python3 with a CUDA torch (the lent H100/H200 image: Python 3.12, torch 2.11+cu130), into
# SITE (default /tmp/site), from WHEELS (default .gpu), made on a networked machine:
#   - spconv.tar.xz, cumm.tar.xz: the unpacked spconv-cu126 2.3.8 / cumm-cu126 0.7.11 cp312
#     wheels, xz-packed (the wheels are 98 MB, over what a lease carries; spconv-cu120 2.3.6
#     has no cp312 wheel; the API is the same);
#   - wheels (pip download --no-deps --python-version 3.12 ...): pccm ccimport fire termcolor
#     lark zarr numcodecs donfig google-crc32c;
#   - with TORCH_CLUSTER=1, the torch-cluster 1.6.3 sdist built here for the CPU only (minutes
#     of the lease). Without it sparse_det/vote_graph.py does torch-cluster's two operations
#     in torch on every device.
# Then:  PYTHONPATH=/tmp/site:$PWD PY=python3 bash bench/gpu.sh $OUT
set -euo pipefail
WHEELS=${WHEELS:-.gpu}
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE"
for t in "$WHEELS"/*.tar.xz; do tar -xJf "$t" -C "$SITE" & done
python3 -m pip install -q --no-deps --no-index --no-compile --target "$SITE" "$WHEELS"/*.whl
if [ -n "${TORCH_CLUSTER:-}" ]; then  # a serial build did not finish in 8 min: in parallel
  printf '[build_ext]\nparallel = %s\n' "$(nproc)" > /tmp/build.cfg
  DIST_EXTRA_CONFIG=/tmp/build.cfg FORCE_ONLY_CPU=1 python3 -m pip install -q --no-deps \
    --no-build-isolation --no-index --no-compile --target "$SITE" \
    "$WHEELS"/torch_cluster-*.tar.gz
fi
wait
PYTHONPATH="$SITE" python3 -c "import spconv, zarr; print('spconv', spconv.__version__, \
'zarr', zarr.__version__)"
