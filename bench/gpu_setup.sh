#!/usr/bin/env bash
# Installs what bench/gpu.sh needs on a CUDA machine that cannot reach a package index but has
# python3 with a CUDA torch (the lent H100/H200 image): carried spconv/cumm site folders,
# wheels and the torch-cluster sdist from WHEELS (default .gpu, made on a networked machine
# with `pip download` for the target's Python), into /tmp/site. Then:
#   PYTHONPATH=/tmp/site:$PWD PY=python3 bash bench/gpu.sh $OUT
set -euo pipefail
WHEELS=${WHEELS:-.gpu}
SITE=${SITE:-/tmp/site}
mkdir -p "$SITE"
for t in "$WHEELS"/*.tar.xz; do tar -xJf "$t" -C "$SITE"; done
python3 -m pip install -q --no-deps --no-index --target "$SITE" "$WHEELS"/*.whl
printf '[build_ext]\nparallel = %s\n' "$(nproc)" > /tmp/build.cfg
FORCE_ONLY_CPU=1 DIST_EXTRA_CONFIG=/tmp/build.cfg python3 -m pip install -q --no-deps \
  --no-build-isolation --no-index --target "$SITE" "$WHEELS"/torch_cluster-*.tar.gz
PYTHONPATH="$SITE" python3 -c "import spconv, torch_cluster, zarr; print('spconv', \
spconv.__version__, 'torch_cluster', torch_cluster.__version__, 'zarr', zarr.__version__)"
